//! The data path of `shmplug run`: one batch from the source, through each function, to the
//! sink, moving records rather than objects. Received tuples are copied, as bytes, into a batch
//! the host owns; each function's arguments are read from them where they lie; its answers are
//! kept, in place, in a batch of their own; the sink gets each tuple as "the received tuple plus
//! the answers" (or the received bytes themselves when there is no function). Nothing is
//! allocated per tuple once the batches have grown to their size; latencies go into a
//! fixed-size histogram, so memory stays flat however long a run lasts.
//!
//! (A module with no dependency on the rest of the command, so that a test binary with a
//! counting allocator can run it as it is.)

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shmplug_host::handles::Calls;
use shmplug_host::transport::tuple::{
    Encoder, FieldValue, TupleBatch, TupleFields, TupleWith, ValueView,
};
use shmplug_host::transport::{Tuple, Value};
use shmplug_host::{FunctionClient, SinkWriter, SourceReader};

/// The field under which an answer is kept in its batch.
const ANSWER: &str = "answer";

/// Highest latency the histogram tells apart (larger ones count as this): one minute.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// One function of the pipeline: the fields passed as its arguments and the field that
/// receives its answer.
#[derive(Clone, Debug)]
pub struct Step {
    pub args: Vec<String>,
    pub output: String,
    /// For an aggregate function: how many tuples make a window (it is then the last
    /// function).
    pub window: Option<usize>,
    /// For each argument, the earlier function whose answer it is (the last of that output
    /// name), if any; otherwise it is the tuple's field.
    from: Vec<Option<usize>>,
}

impl Step {
    /// A function after `earlier` ones.
    pub fn new(args: Vec<String>, output: String, earlier: &[Step]) -> Step {
        let from = args
            .iter()
            .map(|name| earlier.iter().rposition(|s| s.output == *name))
            .collect();
        Step {
            args,
            output,
            window: None,
            from,
        }
    }

    /// This step calling an aggregate function once per `size` tuples.
    pub fn with_window(mut self, size: usize) -> Step {
        self.window = Some(size);
        self
    }
}

/// Where the time went and what moved.
#[derive(Debug)]
pub struct Stats {
    pub tuples: u64,
    pub errors: u64,
    /// Per tuple, from its batch's arrival to its batch sent on to the sink, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Per stage (the source, each function, the sink) and per tuple, the time its batch spent
    /// in that stage, in nanoseconds: taking the batch from the source once its first tuple
    /// arrived, each function's pipelined calls, and the writes to the sink that did not
    /// overlap the last function's calls.
    pub stages: Vec<Histogram<u64>>,
    /// Time spent taking tuples from the source (waiting for them included).
    pub source: Duration,
    /// Time spent in each function's batch of calls.
    pub functions: Vec<Duration>,
    /// Time spent writing to the sink (waiting for room included) that did not overlap the
    /// last function's calls (with a function, tuples go on to the sink as they are answered).
    pub sink: Duration,
}

/// What one batch did.
#[derive(Debug)]
pub enum Outcome {
    /// A batch went through.
    Moved,
    /// The source had nothing within the wait.
    Idle,
    SourceEnded,
    Failed(String),
}

/// The loop's state: reusable batches and the statistics.
#[derive(Debug)]
pub struct Pump {
    tuples: TupleBatch,
    /// The answers of each function, one per tuple, in order.
    answers: Vec<TupleBatch>,
    /// Writes the answers into their batches.
    encoder: Encoder,
    /// The functions' output fields, in order.
    outputs: Vec<String>,
    /// Spare room for the fields added to each tuple (recycled across batches).
    extra: Vec<(&'static str, FieldValue<'static>)>,
    /// Failed calls are logged through this: the first at once, then one a second.
    call_errors: Throttle,
    /// Per function, whether a missing argument field has been reported.
    missing_reported: Vec<bool>,
    /// The window of the last function, if it is an aggregate one (made at its first tuple).
    window: Option<Window>,
    pub stats: Stats,
}

impl Pump {
    pub fn new(functions: usize) -> Pump {
        let histogram =
            || Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds");
        Pump {
            tuples: TupleBatch::new(),
            encoder: Encoder::new(),
            outputs: Vec::new(),
            answers: (0..functions).map(|_| TupleBatch::new()).collect(),
            extra: Vec::with_capacity(functions),
            call_errors: Throttle::new(),
            missing_reported: vec![false; functions],
            window: None,
            stats: Stats {
                tuples: 0,
                errors: 0,
                latency: histogram(),
                stages: (0..functions + 2).map(|_| histogram()).collect(),
                source: Duration::ZERO,
                functions: vec![Duration::ZERO; functions],
                sink: Duration::ZERO,
            },
        }
    }

    /// Moves one batch of up to `limit` tuples: waits up to `wait` for the first, takes what
    /// else is ready, calls each function on all of them as one pipelined batch, and writes
    /// them to the sink.
    pub fn step(
        &mut self,
        source: &mut SourceReader,
        functions: &mut [(FunctionClient, Step)],
        sink: &mut SinkWriter,
        limit: usize,
        wait: Duration,
    ) -> Outcome {
        let started = Instant::now();
        self.tuples.clear();
        let first = match source.recv_timeout(wait) {
            Ok(Some(view)) => self.tuples.push(&view),
            Ok(None) => {
                self.stats.source += started.elapsed();
                return Outcome::Idle;
            }
            Err(e) if e.is_end_of_stream() => return Outcome::SourceEnded,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if let Err(e) = first {
            self.stats.errors += 1;
            tracing::warn!("{e}");
        }
        let received = Instant::now();
        let mut source_end = None;
        while self.tuples.len() < limit {
            match source.try_recv() {
                Ok(Some(view)) => {
                    if let Err(e) = self.tuples.push(&view) {
                        self.stats.errors += 1;
                        tracing::warn!("{e}");
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_end_of_stream() => break,
                Err(e) => {
                    source_end = Some(Outcome::Failed(e.to_string()));
                    break;
                }
            }
        }
        let mut mark = Instant::now();
        self.stats.source += mark - started;
        let batch = self.tuples.len() as u64;
        record(&mut self.stats.stages[0], mark - received, batch);

        if self.outputs.len() != functions.len() {
            self.outputs = functions.iter().map(|(_, s)| s.output.clone()).collect();
        }
        let mut sink_end = None;
        let mut sent = 0;
        let mut errors = 0;
        let mut note =
            |written: shmplug_host::Result<()>, sink_end: &mut Option<Outcome>| match written {
                Ok(()) => sent += 1,
                Err(e) if e.is_end_of_stream() => {
                    if sink_end.is_none() {
                        *sink_end = Some(Outcome::Failed(e.to_string()));
                    }
                }
                Err(e) => {
                    errors += 1;
                    tracing::warn!("{e}");
                }
            };
        let functions_count = functions.len();
        for (k, (client, step)) in functions.iter_mut().enumerate() {
            let (done, rest) = self.answers.split_at_mut(k);
            let calls = Args::new(&self.tuples, done, step);
            let throttle = &mut self.call_errors;
            if k + 1 < functions_count {
                self.stats.errors +=
                    call(client, &calls, &mut rest[0], &mut self.encoder, throttle);
            } else if let Some(size) = step.window {
                // The last function is an aggregate one: each tuple's arguments join the
                // window; a full window is one call, and its last tuple goes on to the sink
                // with the answer.
                let window = self
                    .window
                    .get_or_insert_with(|| Window::new(step.args.len()));
                for i in 0..calls.count() {
                    window.add(&calls, i);
                    if window.filled < size {
                        continue;
                    }
                    let tuples = &self.tuples;
                    let outputs = &self.outputs[..];
                    let spare = &mut self.extra;
                    let mut answered = false;
                    let result = window.call(client, &mut self.encoder, |answer| {
                        answered = true;
                        let value = answer.unwrap_or_else(|e| {
                            self.stats.errors += 1;
                            throttle.warn(&e);
                            ValueView::Null
                        });
                        if sink_end.is_none() {
                            let written = write(sink, tuples, done, outputs, Some(value), i, spare);
                            note(written, &mut sink_end);
                        }
                    });
                    if let Err(e) = result {
                        throttle.warn(&e);
                        if !answered {
                            self.stats.errors += 1;
                            if sink_end.is_none() {
                                let null = Some(ValueView::Null);
                                let written = write(sink, tuples, done, outputs, null, i, spare);
                                note(written, &mut sink_end);
                            }
                        }
                    }
                }
            } else {
                // The last function: each tuple goes on to the sink as soon as its answer
                // is in, so the sink works while the function answers the rest.
                let tuples = &self.tuples;
                let outputs = &self.outputs[..];
                let spare = &mut self.extra;
                let mut answered = 0;
                let mut failed = 0;
                let result = client.call_each(&calls, None, |i, answer| {
                    let value = answer.unwrap_or_else(|e| {
                        failed += 1;
                        throttle.warn(&e);
                        ValueView::Null
                    });
                    answered = i + 1;
                    if sink_end.is_none() {
                        let written = write(sink, tuples, done, outputs, Some(value), i, spare);
                        note(written, &mut sink_end);
                    }
                });
                if let Err(e) = result {
                    tracing::warn!("{e}");
                    failed += (calls.count() - answered) as u64;
                    for i in answered..calls.count() {
                        if sink_end.is_none() {
                            let null = Some(ValueView::Null);
                            let written = write(sink, tuples, done, outputs, null, i, spare);
                            note(written, &mut sink_end);
                        }
                    }
                }
                self.stats.errors += failed;
            }
            self.stats.errors += calls.report_missing(&mut self.missing_reported[k]);
            let now = Instant::now();
            self.stats.functions[k] += now - mark;
            record(&mut self.stats.stages[k + 1], now - mark, batch);
            mark = now;
        }
        if functions_count == 0 {
            // No function: each received record is relayed as it is.
            for i in 0..self.tuples.len() {
                if sink_end.is_none() {
                    let written = write(sink, &self.tuples, &[], &[], None, i, &mut self.extra);
                    note(written, &mut sink_end);
                }
            }
        }
        sink.flush();
        self.stats.errors += errors;
        let done = Instant::now();
        self.stats.sink += done - mark;
        record(
            &mut self.stats.stages[functions_count + 1],
            done - mark,
            batch,
        );
        self.stats.tuples += sent;
        record(&mut self.stats.latency, done - received, batch);
        match sink_end.or(source_end) {
            Some(end) => end,
            None => Outcome::Moved,
        }
    }
}

/// Records `time` for each of `tuples` tuples (clamped to the histogram's range).
fn record(histogram: &mut Histogram<u64>, time: Duration, tuples: u64) {
    let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
    let _ = histogram.record_n(nanos.clamp(1, MAX_LATENCY_NS), tuples);
}

/// Writes tuple `i` of `tuples` to the sink, with the answers of the functions named
/// `outputs` (kept in `answers`) and, if given, the last function's answer (named
/// `outputs.last()`), or as it was received when there is no function.
fn write(
    sink: &mut SinkWriter,
    tuples: &TupleBatch,
    answers: &[TupleBatch],
    outputs: &[String],
    last: Option<ValueView<'_>>,
    i: usize,
    spare: &mut Vec<(&'static str, FieldValue<'static>)>,
) -> shmplug_host::Result<()> {
    let Some(tuple) = tuples.get(i) else {
        return Ok(());
    };
    let mut extra = recycle(std::mem::take(spare));
    for (kept, name) in answers.iter().zip(outputs) {
        let answer = kept.fields(i).and_then(|f| f.get(ANSWER));
        extra.push((
            name.as_str(),
            FieldValue::View(answer.unwrap_or(ValueView::Null)),
        ));
    }
    if let (Some(value), Some(name)) = (last, outputs.last()) {
        extra.push((name.as_str(), FieldValue::View(value)));
    }
    let written = if extra.is_empty() {
        sink.send_deferred(&tuple)
    } else {
        sink.send_deferred(&TupleWith::new(&tuple, &extra))
    };
    *spare = recycle(extra);
    written
}

/// Calls `client` once per tuple, pipelined, and keeps each answer (null for a failed call) in
/// `answers`. Returns the number of failed calls.
fn call(
    client: &mut FunctionClient,
    calls: &Args<'_>,
    answers: &mut TupleBatch,
    encoder: &mut Encoder,
    throttle: &mut Throttle,
) -> u64 {
    answers.clear();
    let mut errors = 0;
    let result = client.call_each(calls, None, |_, answer| {
        let value = match answer {
            Ok(value) => value,
            Err(e) => {
                errors += 1;
                throttle.warn(&e);
                ValueView::Null
            }
        };
        keep(answers, encoder, value);
    });
    if let Err(e) = result {
        tracing::warn!("{e}");
        errors += (calls.count() - answers.len()) as u64;
    }
    while answers.len() < calls.count() {
        keep(answers, encoder, ValueView::Null);
    }
    errors
}

/// Adds `value` to `answers` (null if it cannot be kept).
fn keep(answers: &mut TupleBatch, encoder: &mut Encoder, value: ValueView<'_>) {
    let fields = [(ANSWER, FieldValue::View(value))];
    if let Err(e) = answers.push_encoded(
        encoder,
        &TupleFields {
            timestamp: 0,
            fields: &fields,
        },
    ) {
        tracing::warn!("{e}");
        let fields = [(ANSWER, FieldValue::View(ValueView::Null))];
        let _ = answers.push_encoded(
            encoder,
            &TupleFields {
                timestamp: 0,
                fields: &fields,
            },
        );
    }
}

/// The arguments of one function's calls: each named field of each tuple, or the answer of an
/// earlier function of that name, read where it lies. A field the tuple lacks is passed as
/// null and counted.
struct Args<'b> {
    tuples: &'b TupleBatch,
    /// The answers of the functions before this one.
    earlier: &'b [TupleBatch],
    step: &'b Step,
    /// Arguments whose field was missing, each (call, argument) counted once. (Atomics because
    /// `Calls` is `Sync`; one thread reads the arguments, so relaxed is enough.)
    missing: AtomicU64,
    /// The first argument whose field was missing; `usize::MAX` for none.
    first_missing: AtomicUsize,
    /// 1 + the position (`call * arity + argument`) of the latest argument read; 0 before the
    /// first. The handle reads arguments in order, and reads some again (to size a record, or
    /// to send again after a restart), which must not count twice.
    read: AtomicU64,
}

impl<'b> Args<'b> {
    fn new(tuples: &'b TupleBatch, earlier: &'b [TupleBatch], step: &'b Step) -> Args<'b> {
        Args {
            tuples,
            earlier,
            step,
            missing: AtomicU64::new(0),
            first_missing: AtomicUsize::new(usize::MAX),
            read: AtomicU64::new(0),
        }
    }

    /// The number of missing argument fields; warns once per function (`reported`) naming the
    /// first.
    fn report_missing(&self, reported: &mut bool) -> u64 {
        let missing = self.missing.load(Relaxed);
        let index = self.first_missing.load(Relaxed);
        if index != usize::MAX && !*reported {
            *reported = true;
            tracing::warn!(
                "the call that fills `{}` has no field `{}` to pass as argument {} in {missing} \
                 tuple(s) of this batch: passed as null and counted as errors (said once; \
                 check the name in the pipeline file's `args`)",
                self.step.output,
                self.step.args[index],
                index + 1,
            );
        }
        missing
    }
}

impl Calls for Args<'_> {
    fn count(&self) -> usize {
        self.tuples.len()
    }

    fn arity(&self, _call: usize) -> usize {
        self.step.args.len()
    }

    fn arg(&self, call: usize, index: usize) -> FieldValue<'_> {
        FieldValue::View(self.value(call, index))
    }
}

impl Args<'_> {
    /// Argument `index` of call `call` (null if missing, counted).
    fn value(&self, call: usize, index: usize) -> ValueView<'_> {
        let value = match self.step.from[index] {
            Some(k) => self.earlier[k].fields(call).and_then(|f| f.get(ANSWER)),
            None => {
                let field = self
                    .tuples
                    .fields(call)
                    .and_then(|f| f.get(&self.step.args[index]));
                let position = (call * self.step.args.len() + index) as u64 + 1;
                if position > self.read.load(Relaxed) {
                    self.read.store(position, Relaxed);
                    if field.is_none() {
                        self.missing.fetch_add(1, Relaxed);
                        let _ = self.first_missing.compare_exchange(
                            usize::MAX,
                            index,
                            Relaxed,
                            Relaxed,
                        );
                    }
                }
                field
            }
        };
        value.unwrap_or(ValueView::Null)
    }
}

/// The window of an aggregate function: per argument, the values of the tuples so far.
#[derive(Debug)]
struct Window {
    values: Vec<Vec<Value>>,
    /// Tuples in the window so far.
    filled: usize,
    /// The call's record: one tuple whose field `names[a]` is argument `a`'s list.
    record: TupleBatch,
    names: Vec<String>,
}

impl Window {
    fn new(arity: usize) -> Window {
        Window {
            values: vec![Vec::new(); arity],
            filled: 0,
            record: TupleBatch::new(),
            names: (0..arity).map(|a| a.to_string()).collect(),
        }
    }

    /// Adds call `i`'s arguments.
    fn add(&mut self, args: &Args<'_>, i: usize) {
        for (a, values) in self.values.iter_mut().enumerate() {
            values.push(args.value(i, a).to_owned());
        }
        self.filled += 1;
    }

    /// Calls `client` once with each argument the list of the window's values, hands the
    /// answer to `answer`, and empties the window.
    fn call(
        &mut self,
        client: &mut FunctionClient,
        encoder: &mut Encoder,
        answer: impl FnMut(shmplug_host::Result<ValueView<'_>>) + Send,
    ) -> Result<(), String> {
        self.filled = 0;
        let mut tuple = Tuple::new(0);
        for (name, values) in self.names.iter().zip(&mut self.values) {
            let list = Value::List(std::mem::take(values));
            tuple.fields.insert(name.clone(), list);
        }
        self.record.clear();
        if let Err(e) = self.record.push_encoded(encoder, &tuple) {
            return Err(format!(
                "function `{}` (instance {}): a window's arguments cannot be sent ({e}); use a \
                 smaller `window`",
                client.symbol(),
                client.instance_id()
            ));
        }
        let call = WindowCall { window: self };
        let mut answer = answer;
        client
            .call_each(&call, None, |_, result| answer(result))
            .map_err(|e| e.to_string())
    }
}

/// The one call of a full [`Window`].
struct WindowCall<'w> {
    window: &'w Window,
}

impl Calls for WindowCall<'_> {
    fn count(&self) -> usize {
        1
    }

    fn arity(&self, _call: usize) -> usize {
        self.window.names.len()
    }

    fn arg(&self, _call: usize, index: usize) -> FieldValue<'_> {
        let list = self
            .window
            .record
            .fields(0)
            .and_then(|f| f.get(&self.window.names[index]));
        FieldValue::View(list.unwrap_or(ValueView::Null))
    }
}

/// An empty vector with `v`'s allocation, for borrows of another lifetime. (Collecting an
/// empty iterator of the same layout in place keeps the allocation.)
fn recycle<'b>(mut v: Vec<(&str, FieldValue<'_>)>) -> Vec<(&'b str, FieldValue<'b>)> {
    v.clear();
    v.into_iter()
        .map(|_| ("", FieldValue::View(ValueView::Null)))
        .collect()
}

/// Logs warnings of one kind without flooding the log: the first at once, then at most one a
/// second, saying how many were not logged since the last.
#[derive(Debug)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    const EVERY: Duration = Duration::from_secs(1);

    fn new() -> Throttle {
        Throttle {
            last: None,
            suppressed: 0,
        }
    }

    /// Logs `e` unless one was logged less than a second ago; true if it did.
    fn warn(&mut self, e: &dyn Display) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < Self::EVERY) {
            self.suppressed += 1;
            return false;
        }
        if self.suppressed > 0 {
            tracing::warn!(
                "{e} (and {} more failed calls since the last such line)",
                self.suppressed
            );
        } else {
            tracing::warn!("{e}");
        }
        self.last = Some(now);
        self.suppressed = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_logs_the_first_then_once_a_second() {
        let mut throttle = Throttle::new();
        assert!(throttle.warn(&"first"));
        for _ in 0..1999 {
            assert!(!throttle.warn(&"again"));
        }
        assert_eq!(throttle.suppressed, 1999);
        // A second later (moved back rather than waited for), the next one is logged.
        throttle.last = Instant::now().checked_sub(Throttle::EVERY);
        assert!(throttle.warn(&"later"));
        assert_eq!(throttle.suppressed, 0);
    }
}
