//! Polled sources on the executor, against the test host of [`super`].

use std::sync::Mutex;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use serde_json::json;
use shmplug_transport::control::Message;
use shmplug_transport::{Ring, TupleReceiver, TupleRef, ValueRef};

use super::{Events, Host, WAIT, endpoint, ns};
use crate::{Emitter, Next, PluginConfig, PluginError, PolledSource, Props, SourceContext};

/// The polled symbols of the test plugin, which runs them on one executor thread (so that a
/// test of one instance failing shows that thread serving the others).
pub(super) fn add(config: PluginConfig, events: &Events) -> PluginConfig {
    let full = Mutex::new(events.tx.clone());
    config
        .polled_source("ticks", Ticks::default)
        .polled_source("poll_panics", || Ticks {
            panic_at: Some(3),
            ..Ticks::default()
        })
        .polled_source("open_panics", || OpenPanics)
        .polled_source("sluggish", || Sluggish)
        .polled_source("flood", move || Flood {
            n: 0,
            full: full.lock().unwrap().clone(),
        })
        .with_executor_threads(1)
}

/// Emits `{"n": i}` for `i` in `0..count` (unlimited without `count`), one every `interval`
/// milliseconds (property, default 0: one per poll); panics before `panic_at`.
#[derive(Default)]
struct Ticks {
    count: Option<i64>,
    interval: Duration,
    n: i64,
    panic_at: Option<i64>,
}

impl PolledSource for Ticks {
    fn configure(&mut self, _: &str, props: &Props) -> Result<(), PluginError> {
        self.count = props.get("count").and_then(|c| c.as_i64());
        let ms = props.get("interval").and_then(|c| c.as_u64()).unwrap_or(0);
        self.interval = Duration::from_millis(ms);
        Ok(())
    }

    fn poll(&mut self, _: &SourceContext, emitter: &mut Emitter) -> Result<Next, PluginError> {
        if self.count.is_some_and(|count| self.n >= count) {
            return Ok(Next::Done);
        }
        if self.panic_at == Some(self.n) {
            panic!("tick {} broke the clock", self.n);
        }
        emitter.emit(&TupleRef::new(self.n, &[("n", ValueRef::Int(self.n))]))?;
        self.n += 1;
        Ok(Next::after(self.interval))
    }
}

/// Panics in `open`.
struct OpenPanics;

impl PolledSource for OpenPanics {
    fn configure(&mut self, _: &str, _: &Props) -> Result<(), PluginError> {
        Ok(())
    }

    fn open(&mut self, _: &SourceContext) -> Result<(), PluginError> {
        panic!("no socket today")
    }

    fn poll(&mut self, _: &SourceContext, _: &mut Emitter) -> Result<Next, PluginError> {
        Ok(Next::Done)
    }
}

/// Blocks in its one poll (which a polled source must not do), then ends.
struct Sluggish;

impl PolledSource for Sluggish {
    fn configure(&mut self, _: &str, _: &Props) -> Result<(), PluginError> {
        Ok(())
    }

    fn poll(&mut self, _: &SourceContext, _: &mut Emitter) -> Result<Next, PluginError> {
        std::thread::sleep(Duration::from_millis(150));
        Ok(Next::Done)
    }
}

/// Emits `{"n": i}` as fast as the ring takes them, 16 per poll; says `"full"` each time an
/// emit finds the ring full.
struct Flood {
    n: i64,
    full: Sender<&'static str>,
}

impl PolledSource for Flood {
    fn configure(&mut self, _: &str, _: &Props) -> Result<(), PluginError> {
        Ok(())
    }

    fn poll(&mut self, _: &SourceContext, emitter: &mut Emitter) -> Result<Next, PluginError> {
        for _ in 0..16 {
            let fields = [("n", ValueRef::Int(self.n))];
            match emitter.emit(&TupleRef::new(self.n, &fields)) {
                Err(PluginError::RingFull) => {
                    let _ = self.full.send("full");
                    return Err(PluginError::RingFull);
                }
                other => other?,
            }
            self.n += 1;
        }
        Ok(Next::Now)
    }
}

/// Starts a polled source on a 4 KiB ring.
fn start_small(host: &mut Host, id: u64, symbol: &str) -> (TupleReceiver, Message) {
    let ring = Ring::create(4096).unwrap();
    let receiver = TupleReceiver::new(ring.consumer(endpoint()).unwrap());
    host.send(
        Message::StartSource(Host::start(id, symbol, json!({}))),
        &[&ring],
    );
    (receiver, host.next())
}

#[test]
fn a_polled_source_emits_on_the_executor_and_ends_its_stream() {
    let mut host = Host::new();
    let (mut rx, reply) = host.start_source(1, "ticks", json!({"count": 500}));
    assert_eq!(reply, Message::Started { instance_id: 1 });
    assert_eq!(ns(&mut rx, 500), (0..500).collect::<Vec<_>>());
    assert!(rx.recv_timeout(WAIT).unwrap_err().is_closed());
    host.stop(1);
    host.finish(true).unwrap();
}

#[test]
fn many_polled_instances_share_one_thread_and_each_delivers() {
    let mut host = Host::new();
    let mut receivers = Vec::new();
    for id in 0..100 {
        let (rx, reply) = host.start_source(id, "ticks", json!({"count": 5, "interval": 1}));
        assert_eq!(reply, Message::Started { instance_id: id });
        receivers.push(rx);
    }
    for rx in &mut receivers {
        assert_eq!(ns(rx, 5), [0, 1, 2, 3, 4]);
        assert!(rx.recv_timeout(WAIT).unwrap_err().is_closed());
    }
    host.finish(true).unwrap();
}

#[test]
fn a_panic_in_poll_fails_that_instance_with_its_text_and_the_thread_serves_the_others() {
    let mut host = Host::new();
    let (mut ticks, reply) = host.start_source(1, "ticks", json!({"interval": 1}));
    assert_eq!(reply, Message::Started { instance_id: 1 });
    let (mut broken, reply) = host.start_source(2, "poll_panics", json!({}));
    assert_eq!(reply, Message::Started { instance_id: 2 });
    assert_eq!(ns(&mut broken, 3), [0, 1, 2]);
    let Message::Failed { instance_id, error } = host.next() else {
        panic!("expected the panicking instance to fail")
    };
    assert_eq!(instance_id, 2);
    assert!(
        error.contains("source `poll_panics`: poll panicked: tick 3 broke the clock"),
        "{error}"
    );
    assert!(broken.recv_timeout(WAIT).unwrap_err().is_closed());
    // The same (only) executor thread goes on serving the other instance.
    let first = ns(&mut ticks, 1)[0];
    assert_eq!(ns(&mut ticks, 3), [first + 1, first + 2, first + 3]);
    host.stop(1);
    host.finish(true).unwrap();
}

#[test]
fn panics_while_starting_a_polled_source_fail_its_start_with_the_text() {
    let mut host = Host::new();
    let (_rx, reply) = host.start_source(1, "open_panics", json!({}));
    let Message::Failed { instance_id, error } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(instance_id, 1);
    assert!(error.contains("open failed"), "{error}");
    assert!(error.contains("panicked: no socket today"), "{error}");
    // The executor still starts instances.
    let (mut rx, reply) = host.start_source(2, "ticks", json!({"count": 2}));
    assert_eq!(reply, Message::Started { instance_id: 2 });
    assert_eq!(ns(&mut rx, 2), [0, 1]);
    host.finish(true).unwrap();
}

#[test]
fn a_stop_ends_a_polled_source_waiting_for_its_next_instant_at_once() {
    let mut host = Host::new();
    let (mut rx, reply) = host.start_source(1, "ticks", json!({"interval": 3_600_000}));
    assert_eq!(reply, Message::Started { instance_id: 1 });
    assert_eq!(ns(&mut rx, 1), [0]);
    let stopping = Instant::now();
    host.stop(1);
    assert!(rx.recv_timeout(WAIT).unwrap_err().is_closed());
    assert!(
        stopping.elapsed() < WAIT,
        "the stop waited for the next tick"
    );
    host.finish(true).unwrap();
}

#[test]
fn a_full_ring_parks_the_source_until_the_host_reads() {
    let mut host = Host::new();
    let (mut rx, reply) = start_small(&mut host, 1, "flood");
    assert_eq!(reply, Message::Started { instance_id: 1 });
    assert_eq!(host.event(), "full");
    // Parked: polling again while nobody reads would say "full" again.
    let again = host.events.rx.recv_timeout(Duration::from_millis(50));
    assert!(
        again.is_err(),
        "the source was polled while its ring was full"
    );
    // Reading makes room: the source is woken and fills the ring again.
    let mut read = 0;
    while rx.try_recv().unwrap().is_some() {
        read += 1;
    }
    assert!(read > 10, "only {read} tuples fitted");
    assert_eq!(host.event(), "full");
    assert_eq!(ns(&mut rx, 3), [read, read + 1, read + 2]);
    host.stop(1);
    host.finish(true).unwrap();
}

#[test]
fn a_poll_that_blocks_is_logged_against_its_instance() {
    let mut host = Host::new();
    let (mut rx, reply) = host.start_source(4, "sluggish", json!({}));
    assert_eq!(reply, Message::Started { instance_id: 4 });
    assert!(rx.recv_timeout(WAIT).unwrap_err().is_closed());
    let log = host.log_containing("a polled source must not block");
    assert_eq!(log.instance_id, Some(4));
    assert!(log.message.contains("poll took"), "{}", log.message);
    host.finish(true).unwrap();
}
