//! The `counter` source: a rewindable sequence.

use std::time::{Duration, Instant};

use shmplug_sdk::transport::tuple::Offset;
use shmplug_sdk::{
    Emitter, PluginError, Props, PropsExt, Rewindable, Source, SourceContext, TupleRef, ValueRef,
};

/// The `counter` source: emits `{"n": n}` for `n` = `start`, `start + 1`, ..., each with its
/// offset `n`, so that it is [`Rewindable`]: after a plugin restart the host rewinds it to the
/// last `n` it handed on and the sequence goes on with the next one, nothing lost or repeated.
///
/// | property | default | meaning |
/// | --- | --- | --- |
/// | `start` | `0` | the first `n` |
/// | `count` | unlimited | the stream ends before `start + count` |
/// | `interval` | `1000` | milliseconds, or a duration string (`"250ms"`, `"1.5s"`); `0` emits as fast as the host reads |
#[derive(Debug, Default)]
pub struct CounterSource {
    start: u64,
    end: Option<u64>,
    interval: Duration,
    /// Where a rewind put the source: the next `n`.
    next: Option<u64>,
}

impl Source for CounterSource {
    fn configure(&mut self, _data_source: &str, props: &Props) -> Result<(), PluginError> {
        self.start = props.integer_in("start", 0..=i64::MAX)?.unwrap_or(0) as u64;
        self.end = props
            .integer_in("count", 0..=i64::MAX)?
            .map(|count| self.start.saturating_add(count as u64));
        self.interval = props
            .duration("interval")?
            .unwrap_or(Duration::from_secs(1));
        Ok(())
    }

    fn open(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
        let mut n = self.next.unwrap_or(self.start);
        let mut next_tick = Instant::now();
        while self.end.is_none_or(|end| n < end) {
            if !self.interval.is_zero() {
                let now = Instant::now();
                if next_tick > now {
                    ctx.sleep(next_tick - now)?;
                }
                next_tick = (next_tick + self.interval).max(Instant::now());
            }
            let fields = [("n", ValueRef::Int(n as i64))];
            let tuple = TupleRef::new(shmplug_sdk::now_nanos(), &fields);
            emitter.emit_at(&Offset::from_u64(n), &tuple)?;
            n += 1;
        }
        Ok(())
    }
}

impl Rewindable for CounterSource {
    fn rewind(&mut self, offset: &Offset) -> Result<(), PluginError> {
        let last = offset.as_u64().ok_or_else(|| {
            PluginError::new(format!("{offset:?} is not an offset of the counter source"))
        })?;
        self.next = Some(last + 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use shmplug_sdk::{Value, testing};

    use super::*;

    #[test]
    fn counts_from_start_and_from_one_past_a_rewind() {
        let props = json!({"interval": 0, "start": 5, "count": 3});
        let wait = Duration::from_secs(10);
        let tuples =
            testing::run_source(CounterSource::default(), "", props.clone(), 10, wait).unwrap();
        let ns: Vec<Value> = tuples.iter().map(|t| t.fields["n"].clone()).collect();
        assert_eq!(ns, [Value::Int(5), Value::Int(6), Value::Int(7)]);
        let mut rewound = CounterSource::default();
        rewound.rewind(&Offset::from_u64(5)).unwrap();
        let tuples = testing::run_source(rewound, "", props, 10, wait).unwrap();
        let ns: Vec<Value> = tuples.iter().map(|t| t.fields["n"].clone()).collect();
        assert_eq!(ns, [Value::Int(6), Value::Int(7)]);
        let e = CounterSource::default()
            .rewind(&Offset::new(b"x").unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("not an offset"), "{e}");
    }
}
