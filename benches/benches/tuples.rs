//! Tuple throughput: shmplug between two processes beside an in-process rtrb of owned tuples
//! and length-prefixed JSON over a Unix socket, all measured in the same run, for a small tuple
//! (5 fields: 2 ints, 2 floats, a 12-byte string) and a tuple with a 1 KiB string (plus an int
//! and a float); then what each step costs on one thread.
//!
//! | Case | Writer | Reader |
//! |---|---|---|
//! | `shmplug_borrowed` | helper process: `TupleSender::send_deferred` of a `TupleRef` over borrowed data, `flush` after each command | this process: `TupleReceiver::recv_timeout`, validated in place (the default), reads every field |
//! | `shmplug_owned` | the same with an owned `Tuple` built (allocated) and dropped per tuple | the same |
//! | `shmplug_borrowed_copy_then_validate` | as `shmplug_borrowed` | `Validation::COPY_THEN_VALIDATE` |
//! | `rtrb_owned_threads` | a thread builds an owned `Tuple` per tuple and pushes it into an `rtrb::RingBuffer<Tuple>` | another thread pops it, reads every field, drops it |
//! | `json_uds` | helper process: the fields as a JSON object (`serde_json::to_writer` into a reused `Vec`), `u32` length prefix, through a 64 KiB `BufWriter` on a `UnixStream` | this process: 64 KiB `BufReader`, `serde_json::from_slice::<serde_json::Value>`, reads every field |
//! | `cost_*` | single-thread steps: rkyv encoding, building owned tuples, validating, reading, JSON encoding and decoding | |
//!
//! "Reads every field" means: iterate the fields, add each name's length, add ints to one sum
//! and floats to another, add each string's length. The sums are checked against what the
//! writer sent, so a case that lost or garbled a tuple fails instead of reporting a number.
//! Trusted mode (`Validation::trusted`) is `unsafe` to choose and this crate forbids `unsafe`;
//! `cost_read_view` (reading an already validated view) is what trusted mode leaves of a read.
//!
//! # Method
//! On this 2-vCPU virtual machine the speed of the same single-thread code drifts by up to 2x
//! within seconds (presumably the host's other tenants), so cases measured one after the other,
//! as criterion does, compare different machines. Here every case runs once per *round*, rounds
//! repeat (15; 5 in quick mode), the order rotates each round, and each run lasts about 250 ms
//! (a cost step 40 ms). Reported: the median over rounds of each case's time per tuple (with the
//! range), and each ratio as the median over rounds of the ratio *within* the round. A first
//! run per case calibrates the tuple count and warms up. Helper processes stay up for the whole
//! run, idle (blocked on their socket) while other cases run.
//!
//! A transfer also needs both vCPUs to itself: when anything else runs (other builds share this
//! machine), the writer and the reader take turns on one CPU instead of overlapping. So before
//! and after every transfer run, a *probe* bounces one cache line between two threads up to 256
//! times (median of batches of 8): about 0.1-0.5 µs per round trip when both threads have a CPU,
//! milliseconds (a scheduler time slice) when one waits for the other's CPU. A run whose two
//! probes both stay under 2 µs counts as a *two-CPU run*; the summary gives every figure over
//! all rounds and over two-CPU runs only, and how many runs that was. Check `uptime` first all
//! the same.
//!
//! ```text
//! cargo bench -p shmplug-benches --bench tuples                 # about a minute
//! cargo bench -p shmplug-benches --bench tuples -- --quick      # smoke pass, a few seconds
//! SHMPLUG_BENCH_QUICK=1 cargo bench -p shmplug-benches --bench tuples   # the same
//! cargo bench -p shmplug-benches --bench tuples -- small/shmplug   # cases named like a filter
//! cargo test -p shmplug-benches --bench tuples                  # each case once, nothing measured
//! ```
//! `SHMPLUG_BENCH_SPIN_US` sets the ring endpoints' spin budget (see `rings::throughput_config`),
//! `SHMPLUG_BENCH_RTRB_SLOTS` the rtrb baseline's capacity (default 4096),
//! `SHMPLUG_BENCH_ROUNDS` the number of rounds.

#![forbid(unsafe_code)]

use std::hint::{black_box, spin_loop};
use std::io::{BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use shmplug_benches::{AlignedBuf, RING_BYTES, report, rings};
use shmplug_transport::tuple::{
    Encoder, Tuple, TupleReceiver, TupleRef, TupleView, Validation, Value, ValueRef, ValueView,
};
use shmplug_transport::{EndpointConfig, Ring, fdpass};

#[path = "../src/tuples/source.rs"]
mod source;

use source::{DEVICE_LEN, PAYLOAD_LEN, Shape, Source, Writer};

const PEER: &str = env!("CARGO_BIN_EXE_tuple_peer");

/// How long any wait on the other side may last before the bench decides it is stuck.
const STUCK: Duration = Duration::from_secs(20);

/// Default slots of the rtrb baseline's `RingBuffer<Tuple>`: about as many tuples as the 1 MiB
/// shmplug ring holds small records (~5 700), rounded down to a power of two.
const RTRB_SLOTS: usize = 4096;

/// The shmplug cases: id, writer, validation, description.
const SHMPLUG: [(&str, Writer, Validation, &str); 3] = [
    (
        "shmplug_borrowed",
        Writer::Borrowed,
        Validation::VALIDATED,
        "shmplug, TupleRef -> validated TupleView",
    ),
    (
        "shmplug_owned",
        Writer::Owned,
        Validation::VALIDATED,
        "shmplug, owned Tuple built per tuple -> validated TupleView",
    ),
    (
        "shmplug_borrowed_copy_then_validate",
        Writer::Borrowed,
        Validation::COPY_THEN_VALIDATE,
        "shmplug, TupleRef -> TupleView, COPY_THEN_VALIDATE",
    ),
];

/// Id of the rtrb baseline.
const RTRB: &str = "rtrb_owned_threads";
/// Id of the JSON baseline.
const JSON: &str = "json_uds";
/// Most cache-line round trips per probe.
const PROBE_TRIPS: u64 = 256;
/// Longest a probe's thread may take to start (an idle vCPU of a virtual machine can take
/// milliseconds to wake up; that is not what the probe is after).
const PROBE_START: Duration = Duration::from_millis(100);
/// Round trips per timed batch of a probe.
const PROBE_BATCH: u64 = 8;
/// Longest a probe's timed round trips last.
const PROBE_LIMIT: Duration = Duration::from_millis(10);
/// A probe's round trip under this many nanoseconds means both vCPUs were running.
const TWO_CPUS_NS: f64 = 2000.0;

fn main() {
    let settings = Settings::from_env();
    let load_before = load_average();
    let source = Source::new();
    let config = rings::throughput_config();
    let rtrb_slots = rtrb_slots();
    let fixtures: Vec<Fixtures> = Shape::ALL
        .into_iter()
        .map(|shape| Fixtures::new(&source, shape))
        .collect();
    let views: Vec<Vec<TupleView<'_>>> = fixtures.iter().map(Fixtures::views).collect();

    let mut cases: Vec<Case<'_>> = Vec::new();
    for (k, shape) in Shape::ALL.into_iter().enumerate() {
        let source = &source;
        for (id, writer, validation, label) in SHMPLUG {
            if settings.wants(shape, id) {
                let mut peer = RingPeer::spawn(shape, writer, validation, config);
                cases.push(Case::new(shape, id, label, Kind::Transfer, move |n| {
                    peer.run(source, n)
                }));
            }
        }
        if settings.wants(shape, RTRB) {
            let mut rtrb = RtrbTuples::new(rtrb_slots);
            let label = "rtrb, owned Tuple, 2 threads";
            cases.push(Case::new(shape, RTRB, label, Kind::Transfer, move |n| {
                rtrb.run(source, shape, n)
            }));
        }
        if settings.wants(shape, JSON) {
            let mut peer = JsonPeer::spawn(shape);
            let label = "JSON over a Unix socket";
            cases.push(Case::new(shape, JSON, label, Kind::Transfer, move |n| {
                peer.run(source, n)
            }));
        }
        cost_cases(
            &mut cases,
            &settings,
            source,
            shape,
            &fixtures[k],
            &views[k],
        );
    }
    if cases.is_empty() {
        println!("tuples: no case matches the filter {:?}", settings.filter);
        return;
    }
    measure(&mut cases, &settings);
    if settings.mode == Mode::Test {
        println!("tuples: each of {} cases ran once", cases.len());
        return;
    }
    summary(&cases, &settings, &source, config, rtrb_slots);
    println!(
        "\nload average (1, 5, 15 min): {load_before} at the start, {} at the end; {} CPUs",
        load_average(),
        thread::available_parallelism().map_or(0, |n| n.get())
    );
}

// ---------------------------------------------------------------------------------------------
// Settings and the measurement loop

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `cargo test --benches`: each case once, nothing printed but a line.
    Test,
    /// `--quick` or `SHMPLUG_BENCH_QUICK=1`.
    Quick,
    Full,
}

struct Settings {
    mode: Mode,
    /// Rounds of measurement after the calibration run.
    rounds: usize,
    /// Length of one run of a transfer case.
    transfer: Duration,
    /// Length of one run of a cost step.
    step: Duration,
    /// Run only cases whose `shape/id` contains one of these (all if empty).
    filter: Vec<String>,
}

impl Settings {
    fn from_env() -> Settings {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick")
            || std::env::var_os("SHMPLUG_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0");
        let mode = if !report::benchmarking() {
            Mode::Test
        } else if quick {
            Mode::Quick
        } else {
            Mode::Full
        };
        let (mut rounds, transfer, step) = match mode {
            Mode::Test => (0, Duration::ZERO, Duration::ZERO),
            Mode::Quick => (5, Duration::from_millis(40), Duration::from_millis(10)),
            Mode::Full => (15, Duration::from_millis(250), Duration::from_millis(40)),
        };
        if mode != Mode::Test
            && let Ok(r) = std::env::var("SHMPLUG_BENCH_ROUNDS")
            && !r.is_empty()
        {
            rounds = r.parse().expect("SHMPLUG_BENCH_ROUNDS: a number of rounds");
        }
        Settings {
            mode,
            rounds,
            transfer,
            step,
            filter: args.into_iter().filter(|a| !a.starts_with('-')).collect(),
        }
    }

    fn wants(&self, shape: Shape, id: &str) -> bool {
        let name = format!("{}/{id}", shape.as_str());
        self.filter.is_empty() || self.filter.iter().any(|f| name.contains(f.as_str()))
    }
}

/// What a case measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Tuples moved from a writer to a reader.
    Transfer,
    /// One step on one thread.
    Cost,
}

/// One thing measured: `run(n)` handles `n` tuples and returns the time they took.
struct Case<'a> {
    shape: Shape,
    id: &'static str,
    label: &'static str,
    kind: Kind,
    run: Box<dyn FnMut(u64) -> Duration + 'a>,
    /// Tuples per run, from the calibration.
    n: u64,
    /// Nanoseconds per tuple, one per round.
    ns: Vec<f64>,
    /// Transfers: the slower of the probes before and after each round's run, ns per round trip.
    probes: Vec<f64>,
}

impl<'a> Case<'a> {
    fn new(
        shape: Shape,
        id: &'static str,
        label: &'static str,
        kind: Kind,
        run: impl FnMut(u64) -> Duration + 'a,
    ) -> Case<'a> {
        Case {
            shape,
            id,
            label,
            kind,
            run: Box::new(run),
            n: 0,
            ns: Vec::new(),
            probes: Vec::new(),
        }
    }

    /// Runs until one run of `n` tuples takes at least a quarter of `target`, then sets `n` to
    /// last about `target`.
    fn calibrate(&mut self, target: Duration) {
        let mut n = 64;
        let mut t = (self.run)(n);
        while t < target / 4 && n < 1 << 32 {
            n *= 4;
            t = (self.run)(n);
        }
        self.n = ((n as f64 * target.as_secs_f64() / t.as_secs_f64().max(1e-9)) as u64).max(1);
    }

    /// True if round `r`'s run of this transfer had both vCPUs running.
    fn two_cpus(&self, r: usize) -> bool {
        self.probes.get(r).is_some_and(|&p| p < TWO_CPUS_NS)
    }

    /// Nanoseconds per tuple of the rounds `which` selects.
    fn rounds(&self, which: Rounds) -> Vec<f64> {
        (0..self.ns.len())
            .filter(|&r| which == Rounds::All || self.two_cpus(r))
            .map(|r| self.ns[r])
            .collect()
    }

    /// Median nanoseconds per tuple over the rounds `which` selects (NaN if none).
    fn median_ns(&self, which: Rounds) -> f64 {
        report::median(&mut self.rounds(which)).unwrap_or(f64::NAN)
    }

    /// `"median M/s (min-max) [k/n]"` over the rounds `which` selects, in millions of tuples
    /// per second.
    fn rate(&self, which: Rounds) -> String {
        let ns = self.rounds(which);
        if ns.is_empty() {
            return format!("{:>25}", "no such round");
        }
        let (lo, hi) = spread(&ns);
        format!(
            "{:6.2} M/s ({:.2}-{:.2}) [{}/{}]",
            mega(self.median_ns(which)),
            mega(hi),
            mega(lo),
            ns.len(),
            self.ns.len()
        )
    }
}

/// Which rounds of a transfer a figure uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rounds {
    All,
    /// Those whose probes saw both vCPUs running.
    TwoCpus,
}

/// Smallest and largest value.
fn spread(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// Calibrates every case, then runs the rounds, rotating the order each round.
fn measure(cases: &mut [Case<'_>], settings: &Settings) {
    if settings.mode == Mode::Test {
        for case in cases.iter_mut() {
            (case.run)(100);
        }
        return;
    }
    for case in cases.iter_mut() {
        let target = match case.kind {
            Kind::Transfer => settings.transfer,
            Kind::Cost => settings.step,
        };
        case.calibrate(target);
    }
    let len = cases.len();
    eprint!("tuples: {} rounds:", settings.rounds);
    for round in 0..settings.rounds {
        eprint!(" {}", round + 1);
        for k in 0..len {
            let case = &mut cases[(k + round) % len];
            let before = if case.kind == Kind::Transfer {
                probe()
            } else {
                0.0
            };
            let elapsed = (case.run)(case.n);
            case.ns.push(elapsed.as_nanos() as f64 / case.n as f64);
            if case.kind == Kind::Transfer {
                case.probes.push(before.max(probe()));
            }
        }
    }
    eprintln!();
}

/// The capacity of the rtrb baseline: `SHMPLUG_BENCH_RTRB_SLOTS` or [`RTRB_SLOTS`].
///
/// # Panics
/// If the variable is set, not empty, and not a number.
fn rtrb_slots() -> usize {
    match std::env::var("SHMPLUG_BENCH_RTRB_SLOTS") {
        Ok(s) if !s.is_empty() => s.parse().expect("SHMPLUG_BENCH_RTRB_SLOTS: a slot count"),
        _ => RTRB_SLOTS,
    }
}

/// The first three numbers of `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Bytes of the rkyv record of tuple 0 of `shape`.
fn record_len(source: &Source, shape: Shape) -> usize {
    let mut buf = AlignedBuf::zeroed(4096);
    source.with_ref(shape, 0, |t| {
        Encoder::new()
            .encode_into(t, buf.as_mut_slice())
            .expect("encoding a tuple")
    })
}

/// Bytes of the JSON message of tuple 0 of `shape` (without its length prefix).
fn json_len(source: &Source, shape: Shape) -> usize {
    let mut frame = Vec::new();
    source.json_frame(shape, 0, &mut frame);
    frame.len() - 4
}

// ---------------------------------------------------------------------------------------------
// Reading every field

/// What a reader adds up from every field of every tuple.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sums {
    fields: u64,
    name_bytes: u64,
    ints: i64,
    floats: f64,
    string_bytes: u64,
}

impl Sums {
    #[inline]
    fn name(&mut self, name: &str) {
        self.fields += 1;
        self.name_bytes += name.len() as u64;
    }

    #[inline]
    fn int(&mut self, v: i64) {
        self.ints = self.ints.wrapping_add(v);
    }

    #[inline]
    fn float(&mut self, v: f64) {
        self.floats += v;
    }

    #[inline]
    fn string(&mut self, s: &str) {
        self.string_bytes += s.len() as u64;
    }

    /// Every field of a received tuple, read in place.
    #[inline]
    fn view(&mut self, view: &TupleView<'_>) {
        for (name, value) in view {
            self.name(name);
            match value {
                ValueView::Int(v) => self.int(v),
                ValueView::Float(v) => self.float(v),
                ValueView::String(s) => self.string(s),
                other => unexpected(other.type_name()),
            }
        }
    }

    /// Every field of an owned tuple.
    #[inline]
    fn owned(&mut self, tuple: &Tuple) {
        for (name, value) in &tuple.fields {
            self.name(name);
            match value {
                Value::Int(v) => self.int(*v),
                Value::Float(v) => self.float(*v),
                Value::String(s) => self.string(s),
                other => unexpected(other.type_name()),
            }
        }
    }

    /// Every field of a decoded JSON message.
    #[inline]
    fn json(&mut self, message: &Json) {
        let Some(fields) = message.as_object() else {
            unexpected("JSON message that is not an object")
        };
        for (name, value) in fields {
            self.name(name);
            match value {
                Json::Number(n) => match n.as_i64() {
                    Some(v) => self.int(v),
                    None => self.float(n.as_f64().unwrap_or(f64::NAN)),
                },
                Json::String(s) => self.string(s),
                other => unexpected(&other.to_string()),
            }
        }
    }

    /// Every field of the tuple as the writer holds it: what the reader must find.
    fn reference(&mut self, tuple: &TupleRef<'_>) {
        for (name, value) in tuple.fields {
            self.name(name);
            match *value {
                ValueRef::Int(v) => self.int(v),
                ValueRef::Float(v) => self.float(v),
                ValueRef::String(s) => self.string(s),
                _ => unexpected("value kind"),
            }
        }
    }
}

#[cold]
fn unexpected(what: &str) -> ! {
    panic!("unexpected {what} in a bench tuple")
}

/// Checks what a reader summed over tuples `0..n` of `shape`.
///
/// # Panics
/// If the sums differ from those of the tuples the writer sends.
fn check(what: &str, source: &Source, shape: Shape, n: u64, sums: Sums) {
    let mut expected = Sums::default();
    for i in 0..n {
        source.with_ref(shape, i, |t| expected.reference(t));
    }
    assert_eq!(
        sums,
        expected,
        "{what}, {} tuples: the reader summed something else than was sent",
        shape.as_str()
    );
}

// ---------------------------------------------------------------------------------------------
// Helper processes

/// Kills and reaps a helper process when dropped: waits up to a second for it to exit on its
/// own (its endpoints, dropped first, make it), then kills it and waits up to five more.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if wait_for(&mut self.0, Duration::from_secs(1)).is_some() {
            return;
        }
        let _ = self.0.kill();
        if wait_for(&mut self.0, Duration::from_secs(5)).is_none() {
            eprintln!("tuples: tuple_peer (pid {}) outlived SIGKILL", self.0.id());
        }
    }
}

/// The child's exit status, if it exits within `timeout`.
fn wait_for(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
            _ => return None,
        }
    }
}

/// Starts `tuple_peer <shape> <writer> <spin>` with one end of a socket pair as its standard
/// input; returns it and the other end (reads and writes on it time out after [`STUCK`]).
fn spawn_peer(shape: Shape, writer: Writer, spin: Duration) -> (Reaper, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    let child = Command::new(PEER)
        .arg(shape.as_str())
        .arg(writer.as_str())
        .arg(spin.as_micros().to_string())
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {PEER}: {e}"));
    let child = Reaper(child);
    ours.set_read_timeout(Some(STUCK)).expect("socket timeout");
    ours.set_write_timeout(Some(STUCK)).expect("socket timeout");
    (child, ours)
}

/// Asks the helper for tuples `0..n`.
fn command(mut socket: &UnixStream, n: u64) {
    socket
        .write_all(&n.to_le_bytes())
        .expect("commanding tuple_peer");
}

/// A helper process writing tuples into a ring this process reads.
struct RingPeer {
    rx: TupleReceiver,
    socket: UnixStream,
    shape: Shape,
    // Dropped last: the ring and the socket close first, so the helper exits on its own.
    _child: Reaper,
}

impl RingPeer {
    /// Starts a helper writing `shape` tuples as `writer` says into a new ring of
    /// [`RING_BYTES`]; both endpoints use `config`, the receiver checks records per `validation`.
    fn spawn(
        shape: Shape,
        writer: Writer,
        validation: Validation,
        config: EndpointConfig,
    ) -> RingPeer {
        let ring = Ring::create(RING_BYTES).expect("creating a ring");
        let (child, socket) = spawn_peer(shape, writer, config.spin);
        fdpass::send_ring(&socket, &ring).expect("sending the ring");
        let consumer = ring.consumer(config).expect("consumer");
        RingPeer {
            rx: TupleReceiver::with_validation(consumer, validation),
            socket,
            shape,
            _child: child,
        }
    }

    /// Has the helper write `n` tuples and reads every field of each; returns the time from the
    /// command until the last tuple was read.
    fn run(&mut self, source: &Source, n: u64) -> Duration {
        let mut sums = Sums::default();
        let start = Instant::now();
        command(&self.socket, n);
        for _ in 0..n {
            let view = self.rx.recv_timeout(STUCK).expect("receiving a tuple");
            sums.view(&view);
        }
        let elapsed = start.elapsed();
        check("shmplug", source, self.shape, n, sums);
        elapsed
    }
}

/// A helper process writing tuples as length-prefixed JSON on the socket.
struct JsonPeer {
    reader: BufReader<UnixStream>,
    frame: Vec<u8>,
    shape: Shape,
    _child: Reaper,
}

impl JsonPeer {
    fn spawn(shape: Shape) -> JsonPeer {
        let (child, socket) = spawn_peer(shape, Writer::Json, Duration::ZERO);
        JsonPeer {
            reader: BufReader::with_capacity(64 * 1024, socket),
            frame: Vec::with_capacity(2048),
            shape,
            _child: child,
        }
    }

    /// Has the helper write `n` frames; decodes each and reads every field. Returns the time
    /// from the command until the last frame was read.
    fn run(&mut self, source: &Source, n: u64) -> Duration {
        let mut sums = Sums::default();
        let start = Instant::now();
        command(self.reader.get_ref(), n);
        for _ in 0..n {
            let mut len = [0; 4];
            self.reader.read_exact(&mut len).expect("reading a frame");
            self.frame.resize(u32::from_le_bytes(len) as usize, 0);
            self.reader
                .read_exact(&mut self.frame)
                .expect("reading a frame");
            let message: Json = serde_json::from_slice(&self.frame).expect("decoding JSON");
            sums.json(&message);
        }
        let elapsed = start.elapsed();
        check("JSON", source, self.shape, n, sums);
        elapsed
    }
}

// ---------------------------------------------------------------------------------------------
// rtrb baseline

/// Spins while the other thread catches up, panicking after [`STUCK`] without progress.
#[derive(Default)]
struct Patience {
    spins: u32,
    since: Option<Instant>,
}

impl Patience {
    #[inline]
    fn progress(&mut self) {
        if self.spins != 0 {
            self.spins = 0;
            self.since = None;
        }
    }

    #[inline]
    fn wait(&mut self, what: &str) {
        self.spins += 1;
        if self.spins.is_multiple_of(4096) {
            let since = *self.since.get_or_insert_with(Instant::now);
            assert!(
                since.elapsed() < STUCK,
                "{what} made no progress for {STUCK:?}"
            );
        }
        spin_loop();
    }
}

/// Both ends of an rtrb ring of owned tuples.
struct RtrbTuples {
    tx: rtrb::Producer<Tuple>,
    rx: rtrb::Consumer<Tuple>,
}

impl RtrbTuples {
    /// A ring of `slots` tuples.
    fn new(slots: usize) -> RtrbTuples {
        let (tx, rx) = rtrb::RingBuffer::new(slots);
        RtrbTuples { tx, rx }
    }

    /// This thread builds tuples `0..n` as owned [`Tuple`]s and pushes them; a consumer thread
    /// pops each, reads every field and drops it. Returns the time from the first build until
    /// the consumer dropped the last.
    fn run(&mut self, source: &Source, shape: Shape, n: u64) -> Duration {
        let ready = AtomicBool::new(false);
        let (tx, rx) = (&mut self.tx, &mut self.rx);
        let (start, end, sums) = thread::scope(|s| {
            let consumer = s.spawn(|| {
                ready.store(true, Ordering::Release);
                let mut sums = Sums::default();
                let mut patience = Patience::default();
                let mut left = n;
                while left > 0 {
                    match rx.pop() {
                        Ok(tuple) => {
                            sums.owned(&tuple);
                            drop(tuple);
                            patience.progress();
                            left -= 1;
                        }
                        Err(_) => patience.wait("the rtrb producer"),
                    }
                }
                (Instant::now(), sums)
            });
            while !ready.load(Ordering::Acquire) {
                spin_loop();
            }
            let start = Instant::now();
            let mut patience = Patience::default();
            for i in 0..n {
                let mut tuple = source.owned(shape, i);
                loop {
                    match tx.push(tuple) {
                        Ok(()) => break,
                        Err(rtrb::PushError::Full(back)) => {
                            tuple = back;
                            patience.wait("the rtrb consumer");
                        }
                    }
                }
                patience.progress();
            }
            let (end, sums) = consumer.join().expect("rtrb consumer thread panicked");
            (start, end, sums)
        });
        check("rtrb", source, shape, n, sums);
        end - start
    }
}

// ---------------------------------------------------------------------------------------------
// Single-thread costs

/// Tuples whose records, JSON messages and owned forms the cost steps read, round robin.
const KEEP: usize = 16;

/// What the reading cost steps read: tuples `0..KEEP` of one shape, encoded every way.
struct Fixtures {
    records: Vec<(AlignedBuf, usize)>,
    frames: Vec<Vec<u8>>,
    owned: Vec<Tuple>,
}

impl Fixtures {
    fn new(source: &Source, shape: Shape) -> Fixtures {
        let mut encoder = Encoder::new();
        let records = (0..KEEP as u64)
            .map(|i| {
                let mut record = AlignedBuf::zeroed(4096);
                let len = source.with_ref(shape, i, |t| {
                    encoder
                        .encode_into(t, record.as_mut_slice())
                        .expect("encoding")
                });
                (record, len)
            })
            .collect();
        let frames = (0..KEEP as u64)
            .map(|i| {
                let mut frame = Vec::new();
                source.json_frame(shape, i, &mut frame);
                frame.drain(..4);
                frame
            })
            .collect();
        let owned = (0..KEEP as u64).map(|i| source.owned(shape, i)).collect();
        Fixtures {
            records,
            frames,
            owned,
        }
    }

    /// The records, validated.
    fn views(&self) -> Vec<TupleView<'_>> {
        self.records
            .iter()
            .map(|(r, len)| TupleView::from_bytes(&r.as_slice()[..*len]).expect("valid record"))
            .collect()
    }
}

/// Which of the `KEEP` fixtures tuple `i` reads.
fn pick(i: u64) -> usize {
    (i % KEEP as u64) as usize
}

/// Times `body(i)` for `i` in `0..n`.
#[inline]
fn timed(n: u64, mut body: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        body(i);
    }
    start.elapsed()
}

/// Adds the single-thread cost steps of `shape` that the filter selects.
fn cost_cases<'a>(
    cases: &mut Vec<Case<'a>>,
    settings: &Settings,
    source: &'a Source,
    shape: Shape,
    fixtures: &'a Fixtures,
    views: &'a [TupleView<'a>],
) {
    let mut add =
        |id: &'static str, label: &'static str, run: Box<dyn FnMut(u64) -> Duration + 'a>| {
            if settings.wants(shape, id) {
                cases.push(Case::new(shape, id, label, Kind::Cost, run));
            }
        };
    let mut encoder = Encoder::new();
    let mut buf = AlignedBuf::zeroed(4096);
    add(
        "cost_encode_ref",
        "rkyv: encode a TupleRef (Encoder::encode_into)",
        Box::new(move |n| {
            timed(n, |i| {
                let len = source.with_ref(shape, i, |t| {
                    encoder
                        .encode_into(t, buf.as_mut_slice())
                        .expect("encoding")
                });
                black_box(len);
            })
        }),
    );
    let mut encoder = Encoder::new();
    let mut buf = AlignedBuf::zeroed(4096);
    add(
        "cost_build_encode_owned",
        "rkyv: build an owned Tuple, encode it, drop it",
        Box::new(move |n| {
            timed(n, |i| {
                let tuple = source.owned(shape, i);
                black_box(
                    encoder
                        .encode_into(&tuple, buf.as_mut_slice())
                        .expect("encoding"),
                );
            })
        }),
    );
    add(
        "cost_build_owned",
        "build an owned Tuple and drop it, one thread",
        Box::new(move |n| timed(n, |i| drop(black_box(source.owned(shape, i))))),
    );
    let mut sums = Sums::default();
    add(
        "cost_validate_read",
        "validate a record (TupleView::from_bytes), read every field",
        Box::new(move |n| {
            let t = timed(n, |i| {
                let (record, len) = &fixtures.records[pick(i)];
                let bytes = black_box(&record.as_slice()[..*len]);
                sums.view(&TupleView::from_bytes(bytes).expect("valid record"));
            });
            black_box(&sums);
            t
        }),
    );
    let mut sums = Sums::default();
    add(
        "cost_read_view",
        "read every field of a validated view (what trusted mode leaves)",
        Box::new(move |n| {
            let t = timed(n, |i| sums.view(black_box(&views[pick(i)])));
            black_box(&sums);
            t
        }),
    );
    let mut sums = Sums::default();
    add(
        "cost_read_owned",
        "read every field of an owned Tuple",
        Box::new(move |n| {
            let t = timed(n, |i| sums.owned(black_box(&fixtures.owned[pick(i)])));
            black_box(&sums);
            t
        }),
    );
    let mut frame = Vec::with_capacity(2048);
    add(
        "cost_json_encode",
        "serde_json: encode the fields into a reused Vec",
        Box::new(move |n| {
            timed(n, |i| {
                source.json_frame(shape, i, &mut frame);
                black_box(frame.len());
            })
        }),
    );
    let mut sums = Sums::default();
    add(
        "cost_json_decode",
        "serde_json: decode to serde_json::Value, read every field, drop",
        Box::new(move |n| {
            let t = timed(n, |i| {
                let bytes = black_box(&fixtures.frames[pick(i)]);
                let message: Json = serde_json::from_slice(bytes).expect("decoding JSON");
                sums.json(&message);
            });
            black_box(&sums);
            t
        }),
    );
}

/// A cache line of its own.
#[repr(align(64))]
struct Line(AtomicU64);

/// Nanoseconds per round trip of one cache line between this thread and another (on this
/// machine, the other vCPU): each side waits for the other's store, then stores. After a first,
/// untimed round trip (the thread's start, up to [`PROBE_START`]), up to [`PROBE_TRIPS`] round
/// trips in batches of [`PROBE_BATCH`], for at most [`PROBE_LIMIT`]; the result is the median
/// batch's time per round trip, so that one stall (a new thread placed on the busy CPU until the
/// next scheduler tick moves it) does not count, and the time spent if no batch completes. A
/// round trip is two transfers of the line between the CPUs, which every line of a ring record
/// pays too (written on one side, read on the other, written again a lap later); when one
/// thread has to wait for the other's CPU (other work runs) it takes milliseconds.
fn probe() -> f64 {
    let line = Line(AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            let mut next = 1;
            while !stop.load(Ordering::Relaxed) {
                if line.0.load(Ordering::Acquire) == next {
                    line.0.store(next + 1, Ordering::Release);
                    next += 2;
                } else {
                    spin_loop();
                }
            }
        });
        let begin = Instant::now();
        let mut from = begin;
        let mut limit = PROBE_START;
        let mut batches = Vec::new();
        // Round trip 0 waits for the thread to start; it is not timed.
        'trips: for k in 0..=PROBE_TRIPS {
            line.0.store(2 * k + 1, Ordering::Release);
            let mut spins = 0u32;
            while line.0.load(Ordering::Acquire) != 2 * k + 2 {
                spin_loop();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) && begin.elapsed() > limit {
                    break 'trips;
                }
            }
            if k == 0 {
                limit = begin.elapsed() + PROBE_LIMIT;
                from = Instant::now();
            } else if k % PROBE_BATCH == 0 {
                let now = Instant::now();
                batches.push((now - from).as_nanos() as f64 / PROBE_BATCH as f64);
                from = now;
            }
        }
        stop.store(true, Ordering::Relaxed);
        report::median(&mut batches).unwrap_or_else(|| begin.elapsed().as_nanos() as f64)
    })
}

// ---------------------------------------------------------------------------------------------
// Summary

/// Millions of tuples per second from nanoseconds per tuple.
fn mega(ns: f64) -> f64 {
    1e3 / ns
}

/// How many times faster `case` is than `base`: the median, over the rounds `which` selects
/// (for [`Rounds::TwoCpus`], both runs of the round must be two-CPU runs), of the ratio of their
/// times in the same round. NaN if no round qualifies.
fn ratio(case: &Case<'_>, base: &Case<'_>, which: Rounds) -> f64 {
    let mut ratios: Vec<f64> = (0..case.ns.len().min(base.ns.len()))
        .filter(|&r| which == Rounds::All || (case.two_cpus(r) && base.two_cpus(r)))
        .map(|r| base.ns[r] / case.ns[r])
        .collect();
    report::median(&mut ratios).unwrap_or(f64::NAN)
}

/// `"x1.23"`, or `"x-"` for NaN.
fn times(x: f64, precision: usize) -> String {
    if x.is_nan() {
        "x-".to_owned()
    } else {
        format!("x{x:.precision$}")
    }
}

fn summary(
    cases: &[Case<'_>],
    settings: &Settings,
    source: &Source,
    config: EndpointConfig,
    rtrb_slots: usize,
) {
    let find = |shape: Shape, id: &str| cases.iter().find(|c| c.shape == shape && c.id == id);
    println!(
        "\n== tuples: {} interleaved rounds, ~{} ms per transfer run; throughput = median over \
         rounds (min-max) [rounds used/all]; (xR) = median over rounds of shmplug / baseline \
         throughput in the same round ==",
        settings.rounds,
        settings.transfer.as_millis()
    );
    println!(
        "(shmplug: {} KiB ring, both endpoints {config:?}; rtrb: {rtrb_slots} slots; shmplug and \
         JSON cross two processes, rtrb two threads of one)",
        RING_BYTES / 1024
    );
    let probes: Vec<f64> = cases
        .iter()
        .flat_map(|c| c.probes.iter().copied())
        .collect();
    if !probes.is_empty() {
        let mut two: Vec<f64> = probes
            .iter()
            .copied()
            .filter(|&p| p < TWO_CPUS_NS)
            .collect();
        let (_, slowest) = spread(&probes);
        println!(
            "(cache-line round trip between two threads, probed around every transfer run: both \
             vCPUs ran at once around {} of {} runs, round trip median {:.0} ns; the slowest \
             probe took {:.2} ms)",
            two.len(),
            probes.len(),
            report::median(&mut two).unwrap_or(f64::NAN),
            slowest / 1e6
        );
    }
    let mut small = Vec::new();
    for shape in Shape::ALL {
        let transfers: Vec<&Case<'_>> = cases
            .iter()
            .filter(|c| c.shape == shape && c.kind == Kind::Transfer)
            .collect();
        if transfers.is_empty() {
            continue;
        }
        let (name, what) = match shape {
            Shape::Small => (
                "small tuple",
                format!("2 ints, 2 floats, a {DEVICE_LEN} B string"),
            ),
            Shape::Large => (
                "1 KiB-string tuple",
                format!("an int, a float, a {PAYLOAD_LEN} B string"),
            ),
        };
        println!(
            "\n{name} ({what}): {} B rkyv record, {} B JSON message",
            record_len(source, shape),
            json_len(source, shape)
        );
        println!("  {:<58} {:<38} two-CPU runs only", "", "all rounds");
        for c in &transfers {
            println!(
                "  {:<58} {:<38} {}",
                c.label,
                c.rate(Rounds::All),
                c.rate(Rounds::TwoCpus)
            );
        }
        let (rtrb, json) = (find(shape, RTRB), find(shape, JSON));
        for (id, ..) in SHMPLUG {
            let Some(c) = find(shape, id) else { continue };
            let vs = |base: Option<&Case<'_>>, name: &str, precision: usize| {
                base.map(|b| {
                    format!(
                        "{} {name} ({} in two-CPU rounds)",
                        times(ratio(c, b, Rounds::All), precision),
                        times(ratio(c, b, Rounds::TwoCpus), precision)
                    )
                })
            };
            let parts: Vec<String> = [vs(rtrb, "rtrb owned", 2), vs(json, "json uds", 1)]
                .into_iter()
                .flatten()
                .collect();
            if !parts.is_empty() {
                println!("  {id}: {}", parts.join(", "));
            }
        }
        let (Some(c), Some(rtrb), Some(json)) = (find(shape, "shmplug_borrowed"), rtrb, json)
        else {
            continue;
        };
        for (which, rounds) in [
            (Rounds::All, "all rounds"),
            (Rounds::TwoCpus, "two-CPU runs"),
        ] {
            let figures = (
                mega(c.median_ns(which)),
                ratio(c, rtrb, which),
                ratio(c, json, which),
            );
            println!(
                "  => {name}, {rounds}: shmplug {:.2} M/s | rtrb owned {:.2} M/s ({}) | json uds \
                 {:.2} M/s ({})",
                figures.0,
                mega(rtrb.median_ns(which)),
                times(figures.1, 2),
                mega(json.median_ns(which)),
                times(figures.2, 1)
            );
            if shape == Shape::Small {
                small.push((rounds, figures));
            }
        }
    }

    if !small.is_empty() {
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!("\ntargets (small tuple, shmplug_borrowed):");
        for (rounds, (rate, vs_rtrb, vs_json)) in small {
            println!(
                "  {rounds}: >= 10 M/s across processes: {rate:.2} M/s, {} ({:.0}% of it); \
                 >= 1.0x rtrb owned: {}, {}; >= 10x json uds: {}, {}",
                verdict(rate >= 10.0),
                rate * 10.0,
                times(vs_rtrb, 2),
                verdict(vs_rtrb >= 1.0),
                times(vs_json, 1),
                verdict(vs_json >= 10.0)
            );
        }
    }

    let steps: Vec<&Case<'_>> = cases.iter().filter(|c| c.kind == Kind::Cost).collect();
    if steps.is_empty() {
        return;
    }
    println!(
        "\n== single-thread cost per tuple, ns: median over rounds (min-max), interleaved with the \
         transfers =="
    );
    println!("{:<66} {:>16} {:>16}", "step", "small", "1 KiB string");
    let mut ids: Vec<(&str, &str)> = Vec::new();
    for c in &steps {
        if !ids.iter().any(|(id, _)| *id == c.id) {
            ids.push((c.id, c.label));
        }
    }
    for (id, label) in ids {
        let cell = |shape: Shape| match find(shape, id) {
            Some(c) => {
                let (lo, hi) = spread(&c.ns);
                format!("{:.0} ({lo:.0}-{hi:.0})", c.median_ns(Rounds::All))
            }
            None => "-".to_owned(),
        };
        println!(
            "{label:<66} {:>16} {:>16}",
            cell(Shape::Small),
            cell(Shape::Large)
        );
    }
}
