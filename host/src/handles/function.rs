//! [`FunctionClient`]: calls to a function instance.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shmplug_transport::tuple::call::{CallBatch, CallRecord, Replies, parse_replies};
use shmplug_transport::tuple::{Encode, FieldValue, Value, ValueRef, ValueView};
use shmplug_transport::wait::{self, Room};
use shmplug_transport::{EndpointConfig, Ring, TupleReceiver, TupleSender, Validation};

use super::Binding;
use super::core::{Core, Endpoints, io_error, spurious};
use super::reactor::{self, DATA_READY, SPACE_READY};
use crate::error::{Error, Result};
use crate::supervisor::slot::{Slot, Traffic};
use crate::supervisor::state::Supervision;

/// Calls a function instance: each call is a record on the request ring, answered in order by
/// a record on the reply ring, matched by sequence number.
///
/// [`call_batch`](Self::call_batch) pipelines many calls: it keeps writing calls while there is
/// room and reads answers as they come, so the plugin works on one call while the next ones
/// wait in the ring (eKuiper's portable functions make one locked round trip per call). After a
/// plugin restart, calls without an answer are sent again to the new process (at-least-once),
/// unless the function is not safe to repeat ([`set_retry`](Self::set_retry)).
///
/// # Examples
/// ```no_run
/// # fn demo(plugin: &shmplug_host::Plugin) -> shmplug_host::Result<()> {
/// use shmplug_host::InstanceSpec;
/// use shmplug_host::transport::ValueRef;
///
/// let mut echo = plugin.function(InstanceSpec::new("echo"))?;
/// let answer = echo.call(&[ValueRef::String("hello")])?;
/// let answers = echo.call_batch(&[&[ValueRef::Int(1)], &[ValueRef::Int(2)]])?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FunctionClient {
    core: Core<CallEnds>,
    /// The next call's sequence number.
    next_seq: u64,
    /// Run calls in flight at a crash again on the restarted process.
    retry: bool,
    /// The plugin's process reads batches of calls (as its hello said; read per batch).
    batches: bool,
}

/// A function client's endpoints: calls go out on the request ring (ring 0), answers come back
/// on the reply ring (ring 1).
#[derive(Debug)]
struct CallEnds {
    tx: TupleSender,
    rx: TupleReceiver,
}

impl Endpoints for CallEnds {
    /// Room on the request ring, then answers on the reply ring.
    const ASYNC_FDS: &'static [(usize, usize)] = &[(0, SPACE_READY), (1, DATA_READY)];

    fn open(rings: &[Ring], config: EndpointConfig) -> shmplug_transport::Result<Self> {
        let (Some(request), Some(reply)) = (rings.first(), rings.get(1)) else {
            return Err(shmplug_transport::Error::BadSegment(
                "a function instance needs a request and a reply ring".into(),
            ));
        };
        Ok(CallEnds {
            tx: TupleSender::new(request.producer(config)?),
            // The plugin may rewrite its replies at any moment: copy each one into private memory
            // before validating and reading it.
            rx: TupleReceiver::with_validation(
                reply.consumer(config)?,
                Validation::COPY_THEN_VALIDATE,
            ),
        })
    }
}

/// The arguments of a batch of calls, read where they lie: borrowed values, or fields of
/// received tuples ([`FieldValue::View`]), so a caller passes a tuple's fields to a function
/// without copying them out.
///
/// # Examples
/// ```
/// use shmplug_host::handles::Calls;
/// use shmplug_host::transport::tuple::{FieldValue, TupleBatch, ValueView};
///
/// /// Calls `f(tuple.x, tuple.y)` once per tuple of a batch.
/// struct XY<'b>(&'b TupleBatch);
///
/// impl Calls for XY<'_> {
///     fn count(&self) -> usize {
///         self.0.len()
///     }
///     fn arity(&self, _call: usize) -> usize {
///         2
///     }
///     fn arg(&self, call: usize, index: usize) -> FieldValue<'_> {
///         let fields = self.0.fields(call).expect("call < count");
///         FieldValue::View(fields.get(["x", "y"][index]).unwrap_or(ValueView::Null))
///     }
/// }
/// ```
pub trait Calls {
    /// Number of calls.
    fn count(&self) -> usize;
    /// Number of arguments of call `call`.
    fn arity(&self, call: usize) -> usize;
    /// Argument `index` of call `call`.
    fn arg(&self, call: usize, index: usize) -> FieldValue<'_>;
}

/// A list of argument lists.
impl Calls for &[&[ValueRef<'_>]] {
    fn count(&self) -> usize {
        self.len()
    }

    fn arity(&self, call: usize) -> usize {
        self[call].len()
    }

    fn arg(&self, call: usize, index: usize) -> FieldValue<'_> {
        FieldValue::Ref(self[call][index])
    }
}

/// A function client's counters, since it was opened ([`FunctionClient::stats`]). Counted
/// once per batch, at its end: `calls == answers + errors` between batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FunctionStats {
    /// Calls sent (each counted once, also if it was sent again after a restart).
    pub calls: u64,
    /// Calls answered with a value.
    pub answers: u64,
    /// Calls without a value: failed by the function ([`Error::FunctionFailed`]),
    /// interrupted by a crash, or left unanswered when their batch failed or timed out.
    pub errors: u64,
}

/// What a batch does with each answer, in order: the value read in place from the reply ring,
/// or the error.
type Answer<'f> = &'f mut (dyn FnMut(Result<ValueView<'_>>) + Send);

/// A batch in progress.
struct Batch<'c, 'f> {
    calls: &'c (dyn Calls + Sync),
    answer: Answer<'f>,
    /// Calls answered, in order.
    answered: usize,
    /// Calls written to the current rings: `answered .. sent` are in flight.
    sent: usize,
    /// Calls written at least once (the most `sent` reached).
    written: usize,
    /// Calls answered with a value.
    succeeded: usize,
    /// Sequence number of call `answered` on the current rings.
    base: u64,
    /// The rings these calls went to.
    generation: Option<u64>,
}

/// One record from the reply ring.
enum Reply {
    /// Answers to this many calls in flight (one reply, or a batch of them).
    Answers(u64),
    /// The answer to a call that timed out earlier.
    Stale,
    Closed,
    /// A valid record that breaks the protocol: answers to calls never made, or out of order.
    Broken(String),
}

/// What one round of a batch did.
enum Round {
    Done,
    Progress,
    /// Nothing moved: wait for room for this many bytes (if calls remain) or for answers.
    Stalled(Option<usize>),
    Switch,
}

impl FunctionClient {
    pub(crate) fn new(supervision: Arc<Supervision>, slot: Arc<Slot>) -> FunctionClient {
        FunctionClient {
            core: Core::new(supervision, slot),
            next_seq: 1,
            retry: true,
            batches: false,
        }
    }

    /// Whether calls in flight when the plugin's process dies run again on the restarted
    /// process (on by default). A function its plugin declared not safe to repeat is never
    /// retried; with retries off, or for such a function, each interrupted call fails with
    /// [`Error::CallInterrupted`] naming the crash.
    pub fn set_retry(&mut self, retry: bool) {
        self.retry = retry;
    }

    /// The instance id.
    pub fn instance_id(&self) -> u64 {
        self.core.instance_id()
    }

    /// The function symbol.
    pub fn symbol(&self) -> &str {
        self.core.symbol()
    }

    /// The name of the plugin that runs the instance.
    pub fn plugin(&self) -> &str {
        self.core.plugin()
    }

    /// Calls made, answered and failed so far: three relaxed loads. The same figures are in
    /// [`Plugin::status`](crate::Plugin::status) (as `tuples_in`, `tuples_out` and `errors`).
    pub fn stats(&self) -> FunctionStats {
        let traffic = &self.core.binding.slot().traffic;
        FunctionStats {
            calls: traffic.tuples_in.load(Ordering::Relaxed),
            answers: traffic.tuples_out.load(Ordering::Relaxed),
            errors: traffic.errors.load(Ordering::Relaxed),
        }
    }

    /// Adds a finished batch's calls to the counters: one store each, per batch.
    fn count(&self, batch: &Batch<'_, '_>) {
        let traffic = &self.core.binding.slot().traffic;
        let (written, succeeded) = (batch.written as u64, batch.succeeded as u64);
        if written > 0 {
            Traffic::add(&traffic.tuples_in, written);
            Traffic::add(&traffic.tuples_out, succeeded);
        }
        if written > succeeded {
            Traffic::add(&traffic.errors, written - succeeded);
        }
    }

    /// Calls the function with `args` and waits for its result.
    ///
    /// # Errors
    /// [`Error::FunctionFailed`] with the plugin's message if the function failed;
    /// [`Error::InstanceGone`], [`Error::EndOfStream`] (the plugin closed the instance's
    /// rings), [`Error::Data`].
    pub fn call(&mut self, args: &[ValueRef<'_>]) -> Result<Value> {
        let results = self.collect_until(&[args], None)?;
        self.only(results)
    }

    /// As [`call`](Self::call), giving up after `timeout`.
    ///
    /// # Errors
    /// As [`call`](Self::call), and [`Error::TimedOut`]. A late answer to a timed-out call is
    /// discarded.
    pub fn call_timeout(&mut self, args: &[ValueRef<'_>], timeout: Duration) -> Result<Value> {
        let results = self.collect_until(&[args], Some(timeout))?;
        self.only(results)
    }

    /// As [`call_timeout`](Self::call_timeout), but hands the answer to `read` where it lies,
    /// in the reply ring, instead of copying it out: no allocation for the answer, and `read`
    /// keeps only what it needs.
    ///
    /// # Errors
    /// As [`call_timeout`](Self::call_timeout); `read` is not called then.
    ///
    /// # Examples
    /// ```no_run
    /// # fn demo(echo: &mut shmplug_host::FunctionClient) -> shmplug_host::Result<()> {
    /// use std::time::Duration;
    /// use shmplug_host::transport::ValueRef;
    ///
    /// let len = echo.call_with(&[ValueRef::String("hello")], Duration::from_secs(1), |answer| {
    ///     answer.as_str().map(str::len)
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn call_with<R: Send>(
        &mut self,
        args: &[ValueRef<'_>],
        timeout: Duration,
        read: impl FnOnce(ValueView<'_>) -> R + Send,
    ) -> Result<R> {
        let mut read = Some(read);
        let mut result = None;
        let mut answered = 0;
        let mut answer = |answer: Result<ValueView<'_>>| {
            answered += 1;
            result = Some(answer.map(|view| read.take().map(|read| read(view))));
        };
        self.batch_until(&&[args][..], Some(timeout), &mut answer)?;
        // One call has one answer: anything else is a broken plugin or ring.
        match (result, answered) {
            (Some(Ok(Some(value))), 1) => Ok(value),
            (Some(Err(e)), 1) => Err(e),
            _ => Err(self.core.binding.ids().data_error(spurious())),
        }
    }

    /// Calls the function once per entry of `calls`, pipelined, and returns the results in
    /// order; each is the value or [`Error::FunctionFailed`].
    ///
    /// # Errors
    /// As [`call`](Self::call), for the batch as a whole.
    pub fn call_batch(&mut self, calls: &[&[ValueRef<'_>]]) -> Result<Vec<Result<Value>>> {
        self.collect_until(calls, None)
    }

    /// Calls the function once per call of `calls`, pipelined, with arguments read where they
    /// lie, and hands each answer to `answer` with the call's index, in order, where it lies in
    /// the reply ring: no copy and no allocation, for arguments and answers alike. `timeout`
    /// bounds the whole batch (`None`: wait as long as it takes).
    ///
    /// # Errors
    /// As [`call_batch_timeout`](Self::call_batch_timeout), for the batch as a whole; a call
    /// the function failed is answered with [`Error::FunctionFailed`].
    ///
    /// # Examples
    /// ```no_run
    /// # fn demo(echo: &mut shmplug_host::FunctionClient) -> shmplug_host::Result<()> {
    /// use shmplug_host::transport::ValueRef;
    ///
    /// let calls: &[&[ValueRef]] = &[&[ValueRef::Int(1)], &[ValueRef::Int(2)]];
    /// let mut sum = 0;
    /// echo.call_each(&calls, None, |_, answer| {
    ///     sum += answer.ok().and_then(|v| v.as_i64()).unwrap_or(0);
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn call_each(
        &mut self,
        calls: &(dyn Calls + Sync),
        timeout: Option<Duration>,
        mut answer: impl FnMut(usize, Result<ValueView<'_>>) + Send,
    ) -> Result<()> {
        let mut index = 0;
        let mut each = |result: Result<ValueView<'_>>| {
            answer(index, result);
            index += 1;
        };
        self.batch_until(calls, timeout, &mut each)
    }

    /// As [`call_batch`](Self::call_batch), giving up after `timeout` for the whole batch.
    ///
    /// # Errors
    /// As [`call_timeout`](Self::call_timeout).
    pub fn call_batch_timeout(
        &mut self,
        calls: &[&[ValueRef<'_>]],
        timeout: Duration,
    ) -> Result<Vec<Result<Value>>> {
        self.collect_until(calls, Some(timeout))
    }

    /// As [`call`](Self::call), awaiting in the tokio reactor instead of blocking a thread.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn call_async(&mut self, args: &[ValueRef<'_>]) -> Result<Value> {
        let results = self.call_batch_async(&[args]).await?;
        self.only(results)
    }

    /// As [`call_batch`](Self::call_batch), awaiting in the tokio reactor.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn call_batch_async(
        &mut self,
        calls: &[&[ValueRef<'_>]],
    ) -> Result<Vec<Result<Value>>> {
        let mut results = Vec::with_capacity(calls.len());
        let mut copy = |result: Result<ValueView<'_>>| results.push(result.map(copy_out));
        let mut batch = Batch::new(&calls, &mut copy);
        let done = self.run_async(&mut batch).await;
        self.count(&batch);
        done.map(|()| results)
    }

    /// Runs `batch` to its answers, awaiting in the tokio reactor.
    async fn run_async(&mut self, batch: &mut Batch<'_, '_>) -> Result<()> {
        loop {
            self.core.attach_async().await?;
            let need = match self.round(batch)? {
                Round::Done => return Ok(()),
                Round::Progress | Round::Switch => continue,
                Round::Stalled(need) => need,
            };
            let Some((ends, fds)) = self.core.async_fds()? else {
                continue;
            };
            let (space_fd, data_fd) = (&fds[0], &fds[1]);
            let waited = match need {
                Some(len) => {
                    reactor::ready_either(
                        ends.rx.consumer(),
                        data_fd,
                        &mut Room(ends.tx.producer(), len),
                        space_fd,
                    )
                    .await
                }
                None => reactor::ready(ends.rx.consumer(), data_fd).await,
            };
            waited.map_err(|e| io_error(&self.core.binding, e))?;
        }
    }

    /// Stops the instance, waiting up to the stop time-out for the plugin to confirm.
    ///
    /// # Errors
    /// [`Error::TimedOut`] if the plugin did not confirm in time.
    pub fn stop(mut self) -> Result<()> {
        self.core.current = None;
        self.core.binding.stop()
    }

    /// The one result of a one-call batch.
    fn only<T>(&self, mut results: Vec<Result<T>>) -> Result<T> {
        match (results.pop(), results.is_empty()) {
            (Some(result), true) => result,
            _ => Err(self.core.binding.ids().data_error(spurious())),
        }
    }

    /// The answers of a batch, copied out.
    fn collect_until(
        &mut self,
        calls: &[&[ValueRef<'_>]],
        timeout: Option<Duration>,
    ) -> Result<Vec<Result<Value>>> {
        let mut results = Vec::with_capacity(calls.len());
        let mut copy = |result: Result<ValueView<'_>>| results.push(result.map(copy_out));
        self.batch_until(&calls, timeout, &mut copy)?;
        Ok(results)
    }

    /// Runs `calls` to their answers, giving up after `timeout` for the whole batch (`None`:
    /// never). Reads the clock only when there is a time-out: a call's round trip is short
    /// enough for a clock read to show.
    fn batch_until(
        &mut self,
        calls: &(dyn Calls + Sync),
        timeout: Option<Duration>,
        answer: Answer<'_>,
    ) -> Result<()> {
        let mut batch = Batch::new(calls, answer);
        let done = self.run_until(&mut batch, timeout);
        self.count(&batch);
        done
    }

    /// Runs `batch` to its answers, giving up after `timeout` (see
    /// [`batch_until`](Self::batch_until)).
    fn run_until(&mut self, batch: &mut Batch<'_, '_>, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let timed_out = |binding: &Binding| {
            binding
                .ids()
                .timed_out("call", timeout.unwrap_or(Duration::ZERO))
        };
        loop {
            if !self.core.attach(deadline)? {
                return Err(timed_out(&self.core.binding));
            }
            let need = match self.round(batch)? {
                Round::Done => return Ok(()),
                Round::Progress | Round::Switch => continue,
                Round::Stalled(need) => need,
            };
            let spin = self.core.binding.spin();
            let Some(cur) = self.core.current.as_mut() else {
                continue;
            };
            let own = |ring, index| {
                reactor::own_fd(ring, index).map_err(|e| self.core.binding.ids().data_error(e))
            };
            let data_fd = own(&cur.rings[1], DATA_READY)?;
            let space_fd = own(&cur.rings[0], SPACE_READY)?;
            let ends = &mut cur.ends;
            let ready = match need {
                Some(len) => wait::block(
                    &mut [
                        (ends.rx.consumer(), data_fd),
                        (&mut Room(ends.tx.producer(), len), space_fd),
                    ],
                    spin,
                    deadline,
                ),
                None => wait::block(&mut [(ends.rx.consumer(), data_fd)], spin, deadline),
            };
            if !ready {
                return Err(timed_out(&self.core.binding));
            }
        }
    }

    /// Writes what fits, reads what has been answered.
    fn round(&mut self, batch: &mut Batch<'_, '_>) -> Result<Round> {
        let Some(cur) = self.core.current.as_mut() else {
            return Ok(Round::Switch);
        };
        let generation = cur.generation;
        if self.core.binding.moved_on(generation) {
            self.core.current = None;
            return Ok(Round::Switch);
        }
        if let Some(e) = cur.ends.rx.poisoned() {
            // An invalid reply poisoned these rings for good: every later call fails with it,
            // not with the end of stream the plugin's reaction to the closed ring would show.
            return Err(self.core.binding.ids().data_error(e));
        }
        if batch.generation != Some(generation) {
            if batch.generation.is_some()
                && batch.sent > batch.answered
                && (!self.retry || self.core.binding.not_repeatable())
            {
                // Calls in flight on the dead process, for a function not safe to repeat:
                // each fails, naming the crash; the calls not sent yet go to the new one.
                let reason = self.core.binding.last_failure();
                let ids = self.core.binding.ids();
                while batch.answered < batch.sent {
                    (batch.answer)(Err(Error::CallInterrupted {
                        plugin: ids.plugin.clone(),
                        symbol: ids.symbol.clone(),
                        instance: ids.instance,
                        reason: reason.clone(),
                    }));
                    batch.answered += 1;
                }
            }
            // New rings: (re)send every call without an answer.
            batch.generation = Some(generation);
            self.batches = self.core.binding.call_batches();
            batch.sent = batch.answered;
            batch.base = self.next_seq;
            self.next_seq += (batch.calls.count() - batch.answered) as u64;
        }
        let ids = self.core.binding.ids();
        let mut progress = false;
        let mut need = None;
        while batch.sent < batch.calls.count() {
            let seq = batch.base + (batch.sent - batch.answered) as u64;
            if self.batches {
                match send_batch(&mut cur.ends.tx, batch.calls, batch.sent, seq) {
                    Ok(0) => {}
                    Ok(sent) => {
                        batch.sent += sent;
                        batch.written = batch.written.max(batch.sent);
                        progress = true;
                        continue;
                    }
                    Err(e) if e.is_closed() => return self.closed(generation),
                    Err(e) => return Err(ids.data_error(e)),
                }
            }
            let (calls, call) = (batch.calls, batch.sent);
            let arg = move |index: usize| -> FieldValue<'_> { calls.arg(call, index) };
            let record = CallRecord {
                seq,
                len: calls.arity(call),
                arg: &arg,
            };
            match cur.ends.tx.try_send_deferred(&record) {
                Ok(true) => {
                    batch.sent += 1;
                    batch.written = batch.written.max(batch.sent);
                    progress = true;
                }
                Ok(false) => {
                    let bound = record.size_bound().map_err(|e| ids.data_error(e))?;
                    need = Some(bound.min(cur.ends.tx.max_tuple_len()));
                    break;
                }
                Err(e) if e.is_closed() => return self.closed(generation),
                Err(e) => return Err(ids.data_error(e)),
            }
        }
        // Publish the calls written above at once (one wake-up for the plugin, if it sleeps).
        cur.ends.tx.flush();
        let mut closed = false;
        while batch.answered < batch.sent {
            let expected = batch.base;
            let in_flight = (batch.sent - batch.answered) as u64;
            let outcome = match cur.ends.rx.try_recv() {
                Ok(Some(view)) => {
                    let failed = |message: &str| Error::FunctionFailed {
                        plugin: ids.plugin.clone(),
                        symbol: ids.symbol.clone(),
                        instance: ids.instance,
                        message: message.to_owned(),
                    };
                    match parse_replies(&view) {
                        Ok(Replies::One(seq, _)) if seq < expected => Reply::Stale,
                        Ok(Replies::One(seq, result)) if seq == expected => {
                            batch.succeeded += usize::from(result.is_ok());
                            (batch.answer)(result.map_err(failed));
                            Reply::Answers(1)
                        }
                        Ok(Replies::Batch { results, .. }) if results.is_empty() => {
                            Reply::Broken("a batch of replies holds no result".into())
                        }
                        Ok(Replies::Batch { first_seq, results }) if first_seq <= expected => {
                            // Answers to calls `first_seq ..`: those before `expected` are
                            // late answers to calls that timed out.
                            let stale = expected - first_seq;
                            let fresh = (results.len() as u64).saturating_sub(stale);
                            if fresh > in_flight {
                                Reply::Broken(unasked(expected, in_flight, fresh))
                            } else {
                                for value in results.iter().skip(stale as usize) {
                                    (batch.answer)(Ok(value));
                                }
                                batch.succeeded += fresh as usize;
                                if fresh == 0 {
                                    Reply::Stale
                                } else {
                                    Reply::Answers(fresh)
                                }
                            }
                        }
                        Ok(Replies::One(seq, _) | Replies::Batch { first_seq: seq, .. }) => {
                            Reply::Broken(out_of_order(seq, expected))
                        }
                        Err(e) => return Err(ids.data_error(e)),
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_closed() => Reply::Closed,
                Err(e) => return Err(ids.data_error(e)),
            };
            match outcome {
                Reply::Answers(n) => {
                    batch.answered += n as usize;
                    batch.base += n;
                }
                Reply::Stale => {}
                Reply::Closed => {
                    closed = true;
                    break;
                }
                Reply::Broken(e) => {
                    // Valid records that break the protocol: the plugin is not answering the
                    // calls it was given, so nothing more is read from this ring.
                    cur.ends.rx.poison(e.clone());
                    return Err(ids.data_error(shmplug_transport::Error::InvalidTuple(e)));
                }
            }
            progress = true;
        }
        if closed {
            return self.closed(generation);
        }
        if batch.answered == batch.calls.count() {
            return Ok(Round::Done);
        }
        if progress {
            Ok(Round::Progress)
        } else {
            Ok(Round::Stalled(need))
        }
    }

    /// A ring closed: the supervisor retired it (switch), or the plugin ended the instance.
    fn closed(&mut self, generation: u64) -> Result<Round> {
        if self.core.binding.moved_on(generation) {
            self.core.current = None;
            Ok(Round::Switch)
        } else {
            Err(self.core.binding.ids().end_of_stream())
        }
    }
}

/// Most calls one batch record carries: enough to spread a record's fixed costs thin, few
/// enough that the plugin starts answering soon.
const MAX_BATCH: usize = 64;

/// Writes calls `first ..` of `calls` (those of `first`'s arity, at most [`MAX_BATCH`]) as one
/// batch record numbered from `seq`, halving the batch while it does not fit the ring's free
/// room or its largest record. Returns how many calls it wrote: 0 when fewer than two would go
/// (a single call record is then the way). Each argument is read twice at most (the record is
/// written in one pass, into an estimate of its size).
fn send_batch(
    tx: &mut TupleSender,
    calls: &(dyn Calls + Sync),
    first: usize,
    seq: u64,
) -> shmplug_transport::Result<usize> {
    let arity = calls.arity(first);
    let mut n = 1;
    while n < MAX_BATCH && first + n < calls.count() && calls.arity(first + n) == arity {
        n += 1;
    }
    let arg = move |i: usize| -> FieldValue<'_> { calls.arg(first + i / arity, i % arity) };
    while n > 1 {
        let record = CallBatch {
            first_seq: seq,
            calls: n,
            arity,
            arg: &arg,
        };
        match tx.try_send_deferred(&record) {
            Ok(true) => return Ok(n),
            // No room for it now, or never: fewer calls.
            Ok(false) | Err(shmplug_transport::Error::TooLarge { .. }) => n /= 2,
            Err(e) => return Err(e),
        }
    }
    Ok(0)
}

/// A batch of replies answering more calls than are in flight.
fn unasked(expected: u64, in_flight: u64, answers: u64) -> String {
    format!(
        "a batch of replies answers {answers} calls from call {expected} on, but only \
         {in_flight} were made; the plugin must answer each call once"
    )
}

/// A reply (or the first of a batch, or an empty batch) for a call other than the next.
fn out_of_order(seq: u64, expected: u64) -> String {
    format!(
        "reply for call {seq} while call {expected} was unanswered; the plugin must answer \
         calls in order, each once"
    )
}

/// The answer copied out of the ring: what `call` and `call_batch` return.
fn copy_out(view: ValueView<'_>) -> Value {
    view.to_owned()
}

impl<'c, 'f> Batch<'c, 'f> {
    fn new(calls: &'c (dyn Calls + Sync), answer: Answer<'f>) -> Batch<'c, 'f> {
        Batch {
            calls,
            answer,
            answered: 0,
            sent: 0,
            written: 0,
            succeeded: 0,
            base: 0,
            generation: None,
        }
    }
}
