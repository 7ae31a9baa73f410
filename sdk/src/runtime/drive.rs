//! The loops that serve one instance over its rings, shared by the runtime's instance threads
//! and by [`testing`](crate::testing), so that tests run the same code as a real plugin.

use std::time::{Duration, Instant};

use shmplug_transport::tuple::call::ReplyBatch;
use shmplug_transport::tuple::{FieldValue, ListView, call};
use shmplug_transport::{
    Consumer, Error, Producer, TupleReceiver, TupleSender, Validation, Value, ValueRef, ValueView,
};

use crate::api::{Answer, Function, Sink, Source};
use crate::context::{FunctionContext, StreamContext};
use crate::emitter::{Emitter, wait_for_space};
use crate::error::{PluginError, catch};

/// `"source `random`: open"`, for panic reports.
pub(crate) fn method(kind: &str, symbol: &str, name: &str) -> String {
    format!("{kind} `{symbol}`: {name}")
}

/// Runs the source's `open` with an emitter over `producer` (writing each tuple's offset if
/// `offsets`), then closes the ring (the host sees the end of the stream). A stop ([`PluginError::is_stop`]) is a normal end.
///
/// # Errors
/// What `open` returned otherwise, or its panic.
pub(crate) fn run_source(
    source: &mut dyn Source,
    ctx: &StreamContext,
    producer: Producer,
    offsets: bool,
) -> Result<(), PluginError> {
    let mut emitter =
        Emitter::new(TupleSender::new(producer), ctx.cancel().clone()).with_offsets(offsets);
    let result = catch(
        || method("source", ctx.symbol(), "open"),
        || source.open(ctx, &mut emitter),
    );
    // Dropping the emitter publishes what is left and closes the ring.
    drop(emitter);
    match result {
        Err(e) if e.is_stop() => Ok(()),
        other => other,
    }
}

/// Feeds every tuple from `consumer` to the sink's `collect`, until the host closes the ring or
/// the instance is stopped (then the tuples already committed are still collected). `collect`
/// errors (and panics) go to `on_error`, and the sink goes on with the next tuple. A sink that
/// [`buffers`](Sink::buffers) is flushed as [`Flushes`] says, and its tuples are acknowledged
/// only after a flush.
///
/// # Errors
/// A ring failure: an invalid tuple record or a corrupt ring.
pub(crate) fn run_sink(
    sink: &mut dyn Sink,
    ctx: &StreamContext,
    consumer: Consumer,
    on_error: &mut dyn FnMut(PluginError),
) -> Result<(), PluginError> {
    // The host is trusted by its plugins: its records are validated and read in place. Each
    // record is acknowledged when it is released, after `collect` returned (or, for a sink
    // that buffers, after the next flush), so that a host delivering at least once replays
    // only what this process never finished.
    // A stop ends the wait for the next record at once (no periodic wake-up while idle).
    ctx.cancel().interrupts(consumer.interrupter());
    let buffers = sink.buffers();
    let consumer = if buffers {
        consumer.acknowledge_held()
    } else {
        consumer.acknowledge()
    };
    let mut flushes = Flushes::new(consumer.capacity());
    let mut receiver = TupleReceiver::with_validation(consumer, Validation::VALIDATED);
    let mut collect = |sink: &mut dyn Sink, view: &shmplug_transport::TupleView<'_>| {
        let result = catch(
            || method("sink", ctx.symbol(), "collect"),
            || sink.collect(ctx, view),
        );
        if let Err(e) = result {
            on_error(e);
        }
    };
    let flush = |sink: &mut dyn Sink, receiver: &mut TupleReceiver, flushes: &mut Flushes| {
        if !buffers || flushes.held == 0 {
            return;
        }
        match catch(|| method("sink", ctx.symbol(), "flush"), || sink.flush(ctx)) {
            Ok(()) => {
                receiver.consumer().acknowledge_read();
                flushes.done();
            }
            Err(e) => {
                tracing::error!("flush failed (its tuples stay unacknowledged): {e}");
                flushes.failed();
            }
        }
    };
    loop {
        if ctx.is_cancelled() {
            // Stopped: collect what the host had already committed (a host ends a stream by
            // closing the ring, then stopping the instance), but wait for nothing more.
            loop {
                match receiver.try_recv() {
                    Ok(Some(view)) => collect(sink, &view),
                    Ok(None) => break,
                    Err(e) if e.is_closed() => break,
                    Err(e) => return Err(e.into()),
                }
            }
            flush(sink, &mut receiver, &mut flushes);
            return Ok(());
        }
        if buffers && flushes.due() {
            flush(sink, &mut receiver, &mut flushes);
        }
        // A sink that holds tuples waits for the next one briefly, then flushes; one that
        // holds none waits until a tuple comes or the instance is stopped.
        let ended = match if flushes.held > 0 {
            receiver.recv_timeout(IDLE_FLUSH)
        } else {
            receiver.recv()
        } {
            Ok(view) => {
                collect(sink, &view);
                None
            }
            // Stopped: the loop's first check collects what is left.
            Err(Error::TimedOut(_) | Error::Interrupted) => Some(false),
            Err(e) if e.is_closed() => Some(true),
            Err(e) => return Err(e.into()),
        };
        match ended {
            None if buffers => flushes.collected(receiver.consumer().unacknowledged_len()),
            None => {}
            Some(end) => {
                flush(sink, &mut receiver, &mut flushes);
                if end {
                    return Ok(());
                }
            }
        }
    }
}

/// A buffering sink is flushed when no tuple came for this long.
const IDLE_FLUSH: Duration = Duration::from_millis(1);
/// ... or after this many tuples ...
const FLUSH_TUPLES: u64 = 1024;
/// ... or once this much time passed since its first unflushed tuple.
const FLUSH_AFTER: Duration = Duration::from_millis(100);

/// When a buffering sink is flushed: see [`Sink::buffers`].
#[derive(Debug)]
struct Flushes {
    /// Tuples collected since the last flush.
    held: u64,
    /// Bytes of the ring those hold.
    held_bytes: usize,
    /// A quarter of the ring.
    bytes_bound: usize,
    /// When the first of them was collected.
    since: Option<Instant>,
}

impl Flushes {
    fn new(capacity: usize) -> Flushes {
        Flushes {
            held: 0,
            held_bytes: 0,
            bytes_bound: capacity / 4,
            since: None,
        }
    }

    fn collected(&mut self, held_bytes: usize) {
        self.held += 1;
        self.held_bytes = held_bytes;
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// True if the held tuples should be flushed before the next is taken. The clock is read
    /// every 64 tuples.
    fn due(&self) -> bool {
        self.held >= FLUSH_TUPLES
            || self.held_bytes >= self.bytes_bound
            || (self.held > 0
                && self.held.is_multiple_of(64)
                && self.since.is_some_and(|t| t.elapsed() >= FLUSH_AFTER))
    }

    fn done(&mut self) {
        self.held = 0;
        self.held_bytes = 0;
        self.since = None;
    }

    /// A failed flush: try again after another bound's worth.
    fn failed(&mut self) {
        self.since = Some(Instant::now());
    }
}

/// Answers every call from `requests` on `replies`, in order: validate, then exec, each
/// result or error as the call's reply. With `batched` (the host reads batches of replies),
/// consecutive successful answers go as one record, written when 64 are in, when the record
/// grows large, or before waiting for the next call. Panics are answered as errors and also go
/// to `on_panic`. Ends when the instance is stopped or the host closes either ring.
///
/// # Errors
/// A ring failure: an invalid tuple record or a corrupt ring.
pub(crate) fn run_function(
    function: &mut dyn Function,
    ctx: &FunctionContext,
    requests: Consumer,
    replies: Producer,
    batched: bool,
    on_panic: &mut dyn FnMut(&PluginError),
) -> Result<(), PluginError> {
    // The host is trusted by its plugins: its records are validated and read in place.
    // A stop ends a wait for a call, or for room for a reply, at once.
    ctx.cancel().interrupts(requests.interrupter());
    ctx.cancel().interrupts(replies.interrupter());
    let mut receiver = TupleReceiver::with_validation(requests, Validation::VALIDATED);
    let mut out = Replies {
        sender: TupleSender::new(replies),
        batch: batched.then(ReplyBatch::new),
    };
    // Reused for every call's argument views (their lifetime is the call's record).
    let mut spare: Vec<ValueView<'static>> = Vec::new();
    loop {
        if ctx.is_cancelled() {
            return Ok(());
        }
        // Replies are published in batches: while calls are waiting, the next one is answered
        // first; before waiting for more, every reply is written and published.
        if !matches!(receiver.consumer().is_ready(), Ok(true)) {
            if !out.write_batch(ctx)? {
                return Ok(());
            }
            out.sender.flush();
        }
        let view = match receiver.recv() {
            Ok(view) => view,
            Err(Error::Interrupted) => continue,
            Err(e) if e.is_closed() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // A record holds one call or a batch of them (a host sends batches when the hello
        // says this runtime reads them); each call gets an answer of its own.
        let answered = match call::parse_call(&view) {
            Ok(parsed) => {
                let mut answered = Ok(true);
                for (seq, args) in parsed.calls() {
                    answered = answer(function, ctx, &mut out, seq, Ok(args), &mut spare, on_panic);
                    if !matches!(answered, Ok(true)) {
                        break;
                    }
                }
                answered
            }
            // Not a call (a host bug): answer it with the reason rather than leave it unanswered.
            Err(e) => {
                let seq = view.timestamp() as u64;
                answer(
                    function,
                    ctx,
                    &mut out,
                    seq,
                    Err(e.into()),
                    &mut spare,
                    on_panic,
                )
            }
        };
        drop(view);
        match answered {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Where a function's answers go: the reply ring, through a batch of replies if the host reads
/// them.
struct Replies {
    sender: TupleSender,
    batch: Option<ReplyBatch>,
}

/// Most answers one batch of replies carries (as many as the host's batches of calls).
const MAX_REPLIES: usize = 64;

impl Replies {
    /// Writes the batch of replies, if any, waiting for room; `Ok(false)` when the instance was
    /// stopped or the host closed the ring.
    fn write_batch(&mut self, ctx: &FunctionContext) -> Result<bool, PluginError> {
        let Some(batch) = self.batch.as_mut() else {
            return Ok(true);
        };
        loop {
            match batch.try_write(&mut self.sender) {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) if e.is_closed() => return Ok(false),
                Err(e) => return Err(e.into()),
            }
            match wait_for_space(self.sender.producer(), batch.record_len(), ctx.cancel()) {
                Ok(()) => {}
                Err(e) if e.is_stop() => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Adds `answer` to the batch of replies if it goes there (a value the batch carries, small
    /// enough), writing the batch once it is full; `None` if it must go on its own.
    fn batched(
        &mut self,
        ctx: &FunctionContext,
        seq: u64,
        answer: &Answer<'_>,
    ) -> Option<Result<bool, PluginError>> {
        let batch = self.batch.as_mut()?;
        let field = match answer {
            Answer::Value(value) => FieldValue::Ref(value.as_ref()?),
            answer => answer.as_field()?,
        };
        let limit = self.sender.max_tuple_len() / 4;
        if reply_bound(&Ok(answer)) > limit / 2 || !batch.push(seq, field) {
            return None;
        }
        if batch.len() < MAX_REPLIES && batch.record_len() < limit {
            return Some(Ok(true));
        }
        Some(self.write_batch(ctx))
    }
}

/// Runs one call (validate, then exec) on `args` and writes its reply; `Ok(false)` when the
/// instance was stopped or the host closed the ring.
fn answer(
    function: &mut dyn Function,
    ctx: &FunctionContext,
    out: &mut Replies,
    seq: u64,
    args: Result<ListView<'_>, PluginError>,
    spare: &mut Vec<ValueView<'static>>,
    on_panic: &mut dyn FnMut(&PluginError),
) -> Result<bool, PluginError> {
    let mut views = recycle(std::mem::take(spare));
    let result = args.and_then(|args| {
        views.extend(args.iter());
        let what = |name| method("function", ctx.symbol(), name);
        catch(|| what("validate"), || function.validate(&views))
            .and_then(|()| catch(|| what("exec"), || function.exec_ref(ctx, &views)))
    });
    if let Err(e @ PluginError::Panicked { .. }) = &result {
        on_panic(e);
    }
    // A successful answer joins the batch of replies (copied: the next call may overwrite
    // what it borrows); anything else goes on its own, after the batch before it.
    if let Ok(answer) = &result
        && let Some(written) = out.batched(ctx, seq, answer)
    {
        drop(result);
        *spare = recycle(views);
        return written;
    }
    if !out.write_batch(ctx)? {
        return Ok(false);
    }
    let text = match &result {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    // The answer may borrow the call's record: it is released once the reply is written.
    let sender = &mut out.sender;
    let bound = match &result {
        Ok(answer) => reply_bound(&Ok(answer)),
        Err(_) => reply_bound(&Err(text.as_str())),
    };
    let room = bound.min(sender.max_tuple_len());
    match wait_for_space(sender.producer(), room, ctx.cancel()) {
        Ok(()) => {}
        Err(e) if e.is_stop() => return Ok(false),
        Err(e) => return Err(e),
    }
    let sent = match result {
        // An owned answer is moved into its reply, not copied.
        Ok(Answer::Value(value)) => call::send_reply(sender, seq, Ok(value)),
        Ok(answer) => match answer.as_field() {
            Some(field) => call::send_reply_deferred(sender, seq, Ok(field)),
            None => call::send_reply(sender, seq, Ok(answer.to_owned())),
        },
        Err(_) => call::send_reply_deferred(sender, seq, Err(text.as_str())),
    };
    *spare = recycle(views);
    match sent {
        Ok(()) => Ok(true),
        Err(e) if e.is_closed() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// An empty vector with `v`'s allocation, for views of another lifetime. (Collecting an
/// empty iterator of the same layout in place keeps the allocation.)
fn recycle<'b>(mut v: Vec<ValueView<'_>>) -> Vec<ValueView<'b>> {
    v.clear();
    v.into_iter().map(|_| ValueView::Null).collect()
}

/// A generous estimate of a reply record's size, so that the wait for room before it is
/// (almost always) enough for the write not to wait.
fn reply_bound(reply: &Result<&Answer<'_>, &str>) -> usize {
    const RECORD: usize = 128;
    match reply {
        Ok(Answer::Value(value)) => RECORD + value_bound(value),
        Ok(Answer::View(value)) => RECORD + view_bound(value),
        Ok(Answer::Ref(value)) => RECORD + ref_bound(value),
        Err(text) => RECORD + text.len(),
    }
}

const SLOT: usize = 32;

fn value_bound(value: &Value) -> usize {
    match value {
        Value::String(s) => SLOT + s.len(),
        Value::Bytes(b) => SLOT + b.len(),
        Value::List(items) => SLOT + items.iter().map(value_bound).sum::<usize>(),
        Value::Map(map) => {
            SLOT + map
                .iter()
                .map(|(k, v)| SLOT + k.len() + value_bound(v))
                .sum::<usize>()
        }
        _ => SLOT,
    }
}

fn view_bound(value: &ValueView<'_>) -> usize {
    match value {
        ValueView::String(s) => SLOT + s.len(),
        ValueView::Bytes(b) => SLOT + b.len(),
        ValueView::List(items) => SLOT + items.iter().map(|v| view_bound(&v)).sum::<usize>(),
        ValueView::Map(map) => {
            SLOT + map
                .iter()
                .map(|(k, v)| SLOT + k.len() + view_bound(&v))
                .sum::<usize>()
        }
        _ => SLOT,
    }
}

fn ref_bound(value: &ValueRef<'_>) -> usize {
    match value {
        ValueRef::String(s) => SLOT + s.len(),
        ValueRef::Bytes(b) => SLOT + b.len(),
        ValueRef::List(items) => SLOT + items.iter().map(ref_bound).sum::<usize>(),
        ValueRef::Map(map) => {
            SLOT + map
                .iter()
                .map(|(k, v)| SLOT + k.len() + ref_bound(v))
                .sum::<usize>()
        }
        _ => SLOT,
    }
}

/// Logs a recurring error at most about once a second, with how many were left out.
#[derive(Debug)]
pub(crate) struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub(crate) fn new() -> Throttle {
        Throttle {
            last: None,
            suppressed: 0,
        }
    }

    /// Calls `log` with the number of errors left out since the last call, or counts this one.
    pub(crate) fn event(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => {
                self.suppressed += 1;
            }
            _ => {
                log(self.suppressed);
                self.suppressed = 0;
                self.last = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycle_keeps_the_allocation() {
        let mut v: Vec<ValueView<'static>> = Vec::with_capacity(8);
        v.push(ValueView::Int(1));
        let capacity = v.capacity();
        let w: Vec<ValueView<'_>> = recycle(v);
        assert!(w.is_empty());
        assert_eq!(w.capacity(), capacity);
    }

    #[test]
    fn throttle_reports_the_first_then_counts() {
        let mut throttle = Throttle::new();
        let mut logged = Vec::new();
        for _ in 0..5 {
            throttle.event(|n| logged.push(n));
        }
        assert_eq!(logged, [0]);
        assert_eq!(throttle.suppressed, 4);
    }
}
