//! The shmplug side of the benches: moving records through a ring between two threads or to a
//! peer process, and round trips for latency.

use std::hint::{black_box, spin_loop};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use shmplug_transport::{Consumer, EndpointConfig, Producer, Ring};

use crate::audit::{Parks, voluntary_switches};
use crate::payload::{RING_BYTES, checksum};
use crate::peer::{KIND_MARK, Peer};

/// How the producer publishes records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// [`Claim::commit_deferred`](shmplug_transport::Claim::commit_deferred): the write position
    /// is published once per batch (an eighth of the ring), when the producer must wait, or on
    /// flush.
    Deferred,
    /// [`Claim::commit`](shmplug_transport::Claim::commit): published after every record.
    EveryRecord,
    /// `commit_deferred`, but both sides busy-poll with `try_claim` / `try_read` instead of the
    /// blocking `claim` / `read`: isolates the cost of the blocking calls' fast path.
    DeferredTryLoop,
}

/// The endpoint configuration of the throughput benches: [`EndpointConfig::default`] (50 µs
/// spin, futex park, publication every eighth of the ring), with the spin budget taken from the
/// environment variable `SHMPLUG_BENCH_SPIN_US` (microseconds) if set, to compare budgets.
///
/// # Panics
/// If the variable is set, not empty, and not a number.
pub fn throughput_config() -> EndpointConfig {
    match std::env::var("SHMPLUG_BENCH_SPIN_US") {
        Ok(us) if !us.is_empty() => EndpointConfig::default().with_spin(Duration::from_micros(
            us.parse().expect("SHMPLUG_BENCH_SPIN_US: microseconds"),
        )),
        _ => EndpointConfig::default(),
    }
}

/// How long a bench waits on a peer before deciding it is stuck.
const STUCK: Duration = Duration::from_secs(20);

/// Writes one record of `payload` through the producer.
#[inline]
fn produce(tx: &mut Producer, payload: &[u8], publish: Publish) {
    match publish {
        Publish::Deferred | Publish::EveryRecord => {
            let mut claim = tx.claim_timeout(payload.len(), STUCK).expect("claim");
            claim.copy_from_slice(payload);
            if publish == Publish::Deferred {
                claim.commit_deferred();
            } else {
                claim.commit();
            }
        }
        Publish::DeferredTryLoop => loop {
            if let Some(mut claim) = tx.try_claim(payload.len()).expect("try_claim") {
                claim.copy_from_slice(payload);
                claim.commit_deferred();
                return;
            }
            // `try_claim` does not publish deferred records when the ring is full (`claim`
            // does): without this the consumer could wait for records that are never published.
            tx.flush();
            spin_loop();
        },
    }
}

/// Both endpoints of one ring of [`RING_BYTES`], for the thread benches.
pub struct ThreadRing {
    tx: Producer,
    rx: Consumer,
    parks: Parks,
}

impl ThreadRing {
    /// A new ring whose endpoints use `config`.
    ///
    /// # Panics
    /// If the ring cannot be created.
    pub fn new(config: EndpointConfig) -> ThreadRing {
        let ring = Ring::create(RING_BYTES).expect("creating a ring");
        ThreadRing {
            tx: ring.producer(config).expect("producer"),
            rx: ring.consumer(config).expect("consumer"),
            parks: Parks::default(),
        }
    }

    /// The parks counted since the last call (by every [`run`](Self::run)), and a fresh count.
    pub fn take_parks(&mut self) -> Parks {
        std::mem::take(&mut self.parks)
    }

    /// Moves `records` copies of `payload` to a consumer thread that checksums each in place
    /// (see [`crate::checksum`]); returns the time from the first claim until the consumer has
    /// released the last record.
    ///
    /// # Panics
    /// On a ring error or if the consumer's checksums do not add up.
    pub fn run(&mut self, payload: &[u8], records: u64, publish: Publish) -> Duration {
        let payload = black_box(payload);
        let ready = AtomicBool::new(false);
        let (tx, rx) = (&mut self.tx, &mut self.rx);
        let (start, end, sum, producer_parks, consumer_parks) = thread::scope(|s| {
            let consumer = s.spawn(|| {
                let switches = voluntary_switches("thread-self");
                ready.store(true, Ordering::Release);
                let mut sum = 0u64;
                let mut left = records;
                if publish == Publish::DeferredTryLoop {
                    while left > 0 {
                        match rx.try_read().expect("try_read") {
                            Some(record) => {
                                sum = sum.wrapping_add(checksum(&record));
                                left -= 1;
                            }
                            None => spin_loop(),
                        }
                    }
                } else {
                    while left > 0 {
                        let record = rx.read().expect("read");
                        sum = sum.wrapping_add(checksum(&record));
                        left -= 1;
                    }
                }
                // Hand all space back, so the next call starts from an empty ring.
                rx.flush();
                let end = Instant::now();
                let parks = switches_since(switches, "thread-self");
                (end, sum, parks)
            });
            while !ready.load(Ordering::Acquire) {
                spin_loop();
            }
            let switches = voluntary_switches("thread-self");
            let start = Instant::now();
            for _ in 0..records {
                produce(tx, payload, publish);
            }
            tx.flush();
            let producer_parks = switches_since(switches, "thread-self");
            let (end, sum, consumer_parks) = consumer.join().expect("consumer thread panicked");
            (start, end, sum, producer_parks, consumer_parks)
        });
        assert_eq!(sum, records.wrapping_mul(checksum(payload)));
        self.parks.add(records, producer_parks, consumer_parks);
        end - start
    }
}

/// Voluntary switches of `task` since a count of `before` (0 if `/proc` could not be read).
fn switches_since(before: Option<u64>, task: &str) -> u64 {
    before
        .zip(voluntary_switches(task))
        .map_or(0, |(before, now)| now.saturating_sub(before))
}

/// Moves `records` copies of `payload` to a `sink` peer, then a mark, and waits for the peer's
/// ack; returns the time from the first claim until the ack arrived.
///
/// # Panics
/// On a ring error, a stuck peer, or if the peer's count or checksum sum is wrong.
pub fn run_to_peer(peer: &mut Peer, payload: &[u8], records: u64, publish: Publish) -> Duration {
    let payload = black_box(payload);
    let pid = peer.pid().to_string();
    let (ours, theirs) = (voluntary_switches("thread-self"), voluntary_switches(&pid));
    let start = Instant::now();
    for _ in 0..records {
        produce(&mut peer.tx, payload, publish);
    }
    let mut mark = peer.tx.claim_timeout(0, STUCK).expect("claim");
    mark.set_kind(KIND_MARK);
    mark.commit();
    let ack = peer
        .rx
        .read_timeout(STUCK)
        .expect("the peer did not acknowledge");
    let elapsed = start.elapsed();
    // Our parks include the wait for the ack; the peer's, its wait for the next call.
    let (ours, theirs) = (
        switches_since(ours, "thread-self"),
        switches_since(theirs, &pid),
    );
    peer.parks.add(records, ours, theirs);
    let count = u64::from_le_bytes(ack[..8].try_into().expect("ack"));
    let sum = u64::from_le_bytes(ack[8..16].try_into().expect("ack"));
    assert_eq!(
        count, records,
        "the peer read a different number of records"
    );
    assert_eq!(
        sum,
        records.wrapping_mul(checksum(payload)),
        "checksum mismatch"
    );
    elapsed
}

/// Sends `record` (its first 8 bytes a sequence number) through `tx`, committed at once, and
/// waits for it to come back on `rx`.
///
/// # Panics
/// On a ring error, a stuck peer, or if what comes back is not what was sent.
#[inline]
pub fn round_trip(tx: &mut Producer, rx: &mut Consumer, record: &[u8]) {
    let mut claim = tx.claim_timeout(record.len(), STUCK).expect("claim");
    claim.copy_from_slice(record);
    claim.commit();
    let echo = rx.read_timeout(STUCK).expect("no echo");
    assert_eq!(echo[..8], record[..8], "echo out of sequence");
}

/// Copies every record from `rx` to `tx`, committing each at once, until `rx` closes.
///
/// # Errors
/// Any ring error but the end of the stream.
pub fn echo(rx: &mut Consumer, tx: &mut Producer) -> shmplug_transport::Result<()> {
    loop {
        let record = match rx.read() {
            Ok(record) => record,
            Err(e) if e.is_closed() => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut claim = tx.claim(record.len())?;
        claim.copy_from_slice(&record);
        claim.commit();
    }
}

/// A ring ping-pong between this thread and an echo thread, both spinning per `config`.
pub struct ThreadEcho<'scope> {
    /// Producer towards the echo thread.
    pub tx: Producer,
    /// Consumer of what the echo thread sends back.
    pub rx: Consumer,
    _echo: thread::ScopedJoinHandle<'scope, ()>,
}

impl<'scope> ThreadEcho<'scope> {
    /// Starts the echo thread in `scope`; it ends when this value is dropped.
    ///
    /// # Panics
    /// If the rings cannot be created.
    pub fn start<'env>(
        scope: &'scope thread::Scope<'scope, 'env>,
        config: EndpointConfig,
    ) -> ThreadEcho<'scope> {
        let there = Ring::create(RING_BYTES).expect("creating a ring");
        let back = Ring::create(crate::peer::BACK_RING_BYTES).expect("creating a ring");
        let mut peer_rx = there.consumer(config).expect("consumer");
        let mut peer_tx = back.producer(config).expect("producer");
        let echo = scope.spawn(move || echo(&mut peer_rx, &mut peer_tx).expect("echo thread"));
        ThreadEcho {
            tx: there.producer(config).expect("producer"),
            rx: back.consumer(config).expect("consumer"),
            _echo: echo,
        }
    }
}
