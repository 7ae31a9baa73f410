//! Running a plugin's [`Source`], [`Sink`] or [`Function`] in a test, without a host (what
//! eKuiper's Go SDK offers as `mock`).
//!
//! Each helper plays the host's side of real in-process rings and drives the plugin with the
//! runtime's own loops, so a test exercises the code a running plugin uses: emitting into a
//! ring, collecting views of ring records, answering call records. Logs go to standard error
//! unless the test installed a `tracing` subscriber.
//!
//! # Examples
//! ```
//! use std::time::Duration;
//! use serde_json::json;
//! use shmplug_sdk::testing;
//! use shmplug_sdk::{
//!     Emitter, Function, FunctionContext, PluginError, Props, Sink, SinkContext, Source,
//!     SourceContext, Tuple, TupleRef, TupleView, Value, ValueRef, ValueView,
//! };
//!
//! /// Emits `{"n": 0}`, `{"n": 1}`, ... up to `count`.
//! #[derive(Default)]
//! struct Counter { count: i64 }
//!
//! impl Source for Counter {
//!     fn configure(&mut self, _: &str, props: &Props) -> Result<(), PluginError> {
//!         self.count = props.get("count").and_then(|c| c.as_i64()).unwrap_or(3);
//!         Ok(())
//!     }
//!     fn open(&mut self, _: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
//!         for n in 0..self.count {
//!             emitter.emit(&TupleRef::new(n, &[("n", ValueRef::Int(n))]))?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let tuples = testing::run_source(Counter::default(), "", json!({"count": 2}), 10, Duration::from_secs(5))?;
//! assert_eq!(tuples, [Tuple::new(0).with_field("n", 0i64), Tuple::new(1).with_field("n", 1i64)]);
//!
//! /// Adds up `n`.
//! #[derive(Default)]
//! struct Sum { total: i64 }
//!
//! impl Sink for Sum {
//!     fn configure(&mut self, _: &Props) -> Result<(), PluginError> { Ok(()) }
//!     fn collect(&mut self, _: &SinkContext, tuple: &TupleView<'_>) -> Result<(), PluginError> {
//!         self.total += tuple.get("n").and_then(|n| n.as_i64()).ok_or("no integer `n`")?;
//!         Ok(())
//!     }
//! }
//!
//! let mut sum = Sum::default();
//! testing::feed_sink(&mut sum, json!({}), &tuples)?;
//! assert_eq!(sum.total, 1);
//!
//! /// Doubles an integer.
//! struct Double;
//!
//! impl Function for Double {
//!     fn validate(&self, args: &[ValueView<'_>]) -> Result<(), PluginError> {
//!         match args {
//!             [ValueView::Int(_)] => Ok(()),
//!             _ => Err(PluginError::new("double takes one integer")),
//!         }
//!     }
//!     fn exec(&mut self, _: &FunctionContext, args: &[ValueView<'_>]) -> Result<Value, PluginError> {
//!         Ok(Value::Int(2 * args[0].as_i64().unwrap_or(0)))
//!     }
//! }
//!
//! assert_eq!(testing::call_function(&mut Double, &[Value::Int(21)])?, Value::Int(42));
//! let error = testing::call_function(&mut Double, &[Value::from("x")]).unwrap_err();
//! assert_eq!(error.to_string(), "double takes one integer");
//! # Ok::<(), PluginError>(())
//! ```

use std::time::{Duration, Instant};

use shmplug_transport::tuple::call;
use shmplug_transport::{
    Consumer, EndpointConfig, Error, Ring, Tuple, TupleReceiver, TupleSender, Value, ValueRef,
    ValueView,
};

use crate::api::{Function, Props, Sink, Source};
use crate::config::DEFAULT_SPIN;
use crate::context::{Cancel, FunctionContext, Meta, StreamContext};
use crate::error::{PluginError, catch};
use crate::runtime::drive::{self, method};
use crate::runtime::log;

/// Capacity of the rings the helpers create (1 MiB: the largest tuple is about half of it).
pub const RING_CAPACITY: usize = 1 << 20;

/// How long [`call_function`] waits for its reply (it comes at once unless the ring broke).
const REPLY_WAIT: Duration = Duration::from_secs(10);

/// The rule, operator and symbol the helpers' contexts carry.
pub const TEST_RULE: &str = "test-rule";

/// Configures `source` with `data_source` and `props` (a JSON object, or `null` for none),
/// opens it, and collects the tuples it emits until there are `max_tuples`, `timeout` has
/// passed, or the source ends, whichever comes first; then stops (cancels) and closes it.
///
/// The source runs on the calling thread and the collector on another, as the host would
/// read the ring. A source that never returns from `open` after it is cancelled makes this
/// wait forever.
///
/// # Errors
/// The first of: `props` not an object; `configure`, `open` or `close` failing (or
/// panicking); a ring error.
pub fn run_source<S: Source>(
    mut source: S,
    data_source: &str,
    props: serde_json::Value,
    max_tuples: usize,
    timeout: Duration,
) -> Result<Vec<Tuple>, PluginError> {
    let props = props_of(props)?;
    with_logging(|| {
        let ctx = context("source");
        let what = |name| method("source", "test", name);
        catch(
            || what("configure"),
            || source.configure(data_source, &props),
        )?;
        let ring = Ring::create(RING_CAPACITY)?;
        let producer = ring.producer(endpoint())?;
        let consumer = ring.consumer(endpoint())?;
        let cancel = ctx.cancel().clone();
        let (opened, collected) = std::thread::scope(|s| {
            let collector = s.spawn(|| collect(consumer, max_tuples, timeout, &cancel));
            let opened = drive::run_source(&mut source, &ctx, producer, false);
            let collected = collector
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (opened, collected)
        });
        let closed = catch(|| what("close"), || source.close(&ctx));
        opened?;
        closed?;
        collected
    })
}

/// Reads up to `max` tuples until `timeout`, then stops the source.
fn collect(
    consumer: Consumer,
    max: usize,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<Vec<Tuple>, PluginError> {
    let deadline = Instant::now() + timeout;
    let mut receiver = TupleReceiver::new(consumer);
    let mut tuples = Vec::new();
    let mut result = Ok(());
    while tuples.len() < max {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match receiver.recv_timeout(left) {
            Ok(view) => tuples.push(view.to_owned()),
            Err(Error::TimedOut(_)) => break,
            Err(e) if e.is_closed() => break,
            Err(e) => {
                result = Err(e.into());
                break;
            }
        }
    }
    cancel.cancel();
    // Dropping the receiver closes the ring: a source blocked on a full ring sees `Closed`.
    drop(receiver);
    result.map(|()| tuples)
}

/// Configures `sink` with `props` (a JSON object, or `null`), opens it, feeds it `tuples` in
/// order through a ring, ends the stream and closes it.
///
/// `collect` errors do not stop the feeding (as in a running plugin, where they are logged);
/// the first one is returned at the end.
///
/// # Errors
/// The first of: `props` not an object; `configure` or `open` failing; a tuple that cannot be
/// written (too large for [`RING_CAPACITY`]); a `collect` failing; `close` failing. Panics in
/// any of them count as failures.
pub fn feed_sink<S: Sink>(
    mut sink: S,
    props: serde_json::Value,
    tuples: &[Tuple],
) -> Result<(), PluginError> {
    let props = props_of(props)?;
    with_logging(|| {
        let ctx = context("sink");
        let what = |name| method("sink", "test", name);
        catch(|| what("configure"), || sink.configure(&props))?;
        let ring = Ring::create(RING_CAPACITY)?;
        let mut sender = TupleSender::new(ring.producer(endpoint())?);
        let consumer = ring.consumer(endpoint())?;
        catch(|| what("open"), || sink.open(&ctx))?;
        let mut first_error = None;
        let (fed, served) = std::thread::scope(|s| {
            let feeder = s.spawn(move || -> Result<(), PluginError> {
                for tuple in tuples {
                    sender.send(tuple)?;
                }
                // Dropping the sender ends the stream.
                Ok(())
            });
            let mut on_error = |e: PluginError| {
                first_error.get_or_insert(e);
            };
            let served = drive::run_sink(&mut sink, &ctx, consumer, &mut on_error);
            let fed = feeder
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (fed, served)
        });
        let closed = catch(|| what("close"), || sink.close(&ctx));
        fed?;
        served?;
        if let Some(e) = first_error {
            return Err(e);
        }
        closed
    })
}

/// Calls `function` once with `args`, through a request ring and a reply ring as the host
/// would: the runtime validates, then executes, and the reply carries the result.
///
/// # Errors
/// The call's error as the host would see it: a [`PluginError::Message`] with the text of
/// `validate`'s or `exec`'s error (or panic); or a ring error.
pub fn call_function<F: Function>(function: &mut F, args: &[Value]) -> Result<Value, PluginError> {
    with_logging(|| {
        let ctx = FunctionContext::new(context("function"), 0);
        let requests = Ring::create(RING_CAPACITY)?;
        let replies = Ring::create(RING_CAPACITY)?;
        let mut caller = TupleSender::new(requests.producer(endpoint())?);
        let seq = 1;
        send_call(&mut caller, seq, args)?;
        // Ending the request stream makes the function's loop return after this call.
        drop(caller);
        drive::run_function(
            function,
            &ctx,
            requests.consumer(endpoint())?,
            replies.producer(endpoint())?,
            // As a host of this version asks: successful answers in batches of replies.
            true,
            &mut |_| {},
        )?;
        let mut receiver = TupleReceiver::new(replies.consumer(endpoint())?);
        let view = receiver.recv_timeout(REPLY_WAIT)?;
        let (got, result) = match call::parse_replies(&view)? {
            call::Replies::One(got, result) => (got, result),
            call::Replies::Batch { first_seq, results } if results.len() == 1 => {
                (first_seq, Ok(results.get(0).unwrap_or(ValueView::Null)))
            }
            call::Replies::Batch { results, .. } => {
                return Err(PluginError::new(format!(
                    "{} answers to one call",
                    results.len()
                )));
            }
        };
        if got != seq {
            return Err(PluginError::new(format!(
                "reply to call {got}, expected call {seq}"
            )));
        }
        result
            .map(|value| value.to_owned())
            .map_err(PluginError::new)
    })
}

/// Writes a call record, borrowing scalar arguments; nested ones go through an owned tuple of
/// the same form.
fn send_call(sender: &mut TupleSender, seq: u64, args: &[Value]) -> Result<(), PluginError> {
    let refs: Option<Vec<ValueRef<'_>>> = args.iter().map(Value::as_ref).collect();
    match refs {
        Some(refs) => call::send_call(sender, seq, &refs)?,
        None => sender.send(&Tuple::new(seq as i64).with_field("args", args.to_vec()))?,
    }
    Ok(())
}

fn props_of(props: serde_json::Value) -> Result<Props, PluginError> {
    match props {
        serde_json::Value::Object(map) => Ok(map),
        serde_json::Value::Null => Ok(Props::new()),
        other => Err(PluginError::new(format!(
            "test properties must be a JSON object, not {other}"
        ))),
    }
}

fn endpoint() -> EndpointConfig {
    EndpointConfig::default().with_spin(DEFAULT_SPIN)
}

fn context(kind: &str) -> StreamContext {
    StreamContext::new(
        Meta {
            plugin: "test".to_owned(),
            symbol: kind.to_owned(),
            rule_id: TEST_RULE.to_owned(),
            op_id: "test-op".to_owned(),
            instance_id: 1,
        },
        Cancel::new(),
    )
}

/// Runs `f` with plugin logs on standard error, unless a `tracing` subscriber is in force.
fn with_logging<T>(f: impl FnOnce() -> T) -> T {
    let unset = tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>());
    if unset {
        let dispatch = log::dispatch("test", None, log::level_from_env());
        tracing::dispatcher::with_default(&dispatch, f)
    } else {
        f()
    }
}
