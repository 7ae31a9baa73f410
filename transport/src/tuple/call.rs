//! Function calls as tuples: the records on a function instance's request and reply rings.
//!
//! The host writes one call record per call on the request ring; the plugin answers each, in
//! order, with one reply record on the reply ring. Both are ordinary tuple records, so they are
//! written in place and read through validated [`TupleView`]s:
//!
//! | record | `timestamp` | `meta` | `fields` |
//! | --- | --- | --- | --- |
//! | call | the call's sequence number | empty | `args`: a list of the arguments |
//! | reply, success | the call's sequence number | empty | `result`: the value returned |
//! | reply, failure | the call's sequence number | `error`: the message | empty |
//!
//! Sequence numbers let the caller pipeline calls and check that each reply answers the call
//! it expects.

use super::{MapView, TupleRef, TupleSender, TupleView, Value, ValueRef, ValueView};
use crate::error::{Error, Result};

/// Writes a call record with sequence number `seq` and `args`.
///
/// # Errors
/// As [`TupleSender::send`].
pub fn send_call(sender: &mut TupleSender, seq: u64, args: &[ValueRef<'_>]) -> Result<()> {
    let fields = [("args", ValueRef::List(args))];
    sender.send(&TupleRef {
        timestamp: seq as i64,
        meta: &[],
        fields: &fields,
    })
}

/// Writes a reply record answering call `seq` with `result`.
///
/// Scalars, strings and bytes are written straight from `result`; a list or map result is
/// moved into an owned [`Tuple`](super::Tuple) first.
///
/// # Errors
/// As [`TupleSender::send`].
pub fn send_reply(sender: &mut TupleSender, seq: u64, result: Result<Value, &str>) -> Result<()> {
    let timestamp = seq as i64;
    let value = match result {
        Err(message) => {
            let meta = [("error", ValueRef::String(message))];
            return sender.send(&TupleRef {
                timestamp,
                meta: &meta,
                fields: &[],
            });
        }
        Ok(value) => value,
    };
    let Some(scalar) = value.as_ref() else {
        return sender.send(&super::Tuple::new(timestamp).with_field("result", value));
    };
    let fields = [("result", scalar)];
    sender.send(&TupleRef {
        timestamp,
        meta: &[],
        fields: &fields,
    })
}

/// The parts of a call record.
#[derive(Debug)]
pub struct CallView<'v> {
    /// The call's sequence number.
    pub seq: u64,
    /// The arguments.
    pub args: super::ListView<'v>,
}

/// Reads a call record.
///
/// # Errors
/// [`Error::InvalidTuple`] if the record is not a call (no `args` list).
pub fn parse_call<'v>(view: &'v TupleView<'_>) -> Result<CallView<'v>> {
    let args = view
        .get("args")
        .and_then(|v| v.as_list())
        .ok_or_else(|| Error::InvalidTuple("a function call record has no `args` list".into()))?;
    Ok(CallView {
        seq: view.timestamp() as u64,
        args,
    })
}

/// Reads a reply record: its sequence number and the result or the error message.
///
/// # Errors
/// [`Error::InvalidTuple`] if the record is neither a result nor an error.
pub fn parse_reply<'v>(view: &'v TupleView<'_>) -> Result<(u64, Result<ValueView<'v>, &'v str>)> {
    let seq = view.timestamp() as u64;
    if let Some(result) = view.get("result") {
        return Ok((seq, Ok(result)));
    }
    let meta: MapView<'v> = view.meta();
    match meta.get("error").and_then(|e| e.as_str()) {
        Some(message) => Ok((seq, Err(message))),
        None => Err(Error::InvalidTuple(
            "a function reply record has neither `result` nor an `error`".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tuple::{Tuple, TupleReceiver};
    use crate::{EndpointConfig, Ring};

    const WAIT: Duration = Duration::from_secs(10);

    fn channel() -> (TupleSender, TupleReceiver) {
        let ring = Ring::create(1 << 16).unwrap();
        let config = EndpointConfig::default().with_spin(Duration::from_micros(5));
        (
            TupleSender::new(ring.producer(config).unwrap()),
            TupleReceiver::new(ring.consumer(config).unwrap()),
        )
    }

    #[test]
    fn calls_and_replies_round_trip() {
        let (mut tx, mut rx) = channel();
        send_call(&mut tx, 7, &[ValueRef::Int(1), ValueRef::String("two")]).unwrap();
        let view = rx.recv_timeout(WAIT).unwrap();
        let call = parse_call(&view).unwrap();
        assert_eq!(call.seq, 7);
        assert_eq!(
            call.args.to_owned(),
            vec![Value::Int(1), Value::from("two")]
        );
        drop(view);

        let list = Value::List(vec![Value::Int(3)]);
        for (seq, result) in [
            (1, Ok(Value::from("x"))),
            (2, Ok(list.clone())),
            (3, Err("bad arg")),
        ] {
            send_reply(&mut tx, seq, result.clone()).unwrap();
            let view = rx.recv_timeout(WAIT).unwrap();
            let (got_seq, got) = parse_reply(&view).unwrap();
            assert_eq!(got_seq, seq);
            match (got, result) {
                (Ok(v), Ok(expected)) => assert_eq!(v.to_owned(), expected),
                (Err(m), Err(expected)) => assert_eq!(m, expected),
                (got, expected) => panic!("{got:?} != {expected:?}"),
            }
        }
    }

    #[test]
    fn other_tuples_are_not_calls_or_replies() {
        let (mut tx, mut rx) = channel();
        tx.send(&Tuple::new(1).with_field("x", 1i64)).unwrap();
        let view = rx.recv_timeout(WAIT).unwrap();
        assert!(matches!(parse_call(&view), Err(Error::InvalidTuple(_))));
        assert!(matches!(parse_reply(&view), Err(Error::InvalidTuple(_))));
    }
}
