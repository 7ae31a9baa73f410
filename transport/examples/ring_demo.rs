//! Two processes, shmplug rings between them, and what they measure.
//!
//! ```text
//! cargo run --release -p shmplug-transport --example ring_demo
//! ```
//!
//! The demo starts itself again as a child process and hands it three rings over a Unix socket
//! (the child's standard input). Then:
//! 1. **Throughput**: the child writes 20 million 64-byte records with batched publication
//!    (`commit_deferred`), the parent reads every byte of them and compares checksums.
//! 2. **Latency**: 100 000 ping-pongs of one small record over two rings, both sides spinning
//!    instead of sleeping (at most five seconds of them); one-way latency is half the round
//!    trip.

#![forbid(unsafe_code)]

use std::error::Error;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmplug_transport::{Consumer, EndpointConfig, Producer, Ring, fdpass};

/// Set in the child's environment: run the child's half.
const CHILD_ENV: &str = "SHMPLUG_RING_DEMO_CHILD";
const RECORDS: u64 = 20_000_000;
const RECORD_LEN: usize = 64;
const BULK_CAPACITY: usize = 1 << 20;
const ROUND_TRIPS: usize = 100_000;
/// Round trips before measuring starts (page faults, caches, branch predictors).
const WARM_UP: usize = 10_000;
/// The latency phase stops early after this long (a machine busy with other work can make
/// spinning round trips take milliseconds each).
const LATENCY_BUDGET: Duration = Duration::from_secs(5);
/// Generous bound on every wait, so a broken peer ends the demo instead of hanging it.
const WAIT: Duration = Duration::from_secs(10);

type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

fn main() -> Result {
    if std::env::var_os(CHILD_ENV).is_some() {
        child()
    } else {
        parent()
    }
}

/// Bulk transfer: the default short spin, so a side that runs out of work parks and leaves the
/// CPU to its peer when the machine is busy with something else.
fn bulk_config() -> EndpointConfig {
    EndpointConfig::default()
}

/// Ping-pong: spin for a long time when each process has a core of its own, park after a short
/// spin otherwise (two spinning processes on one core would take turns by the scheduler's time
/// slice).
fn latency_config(cpus: usize) -> EndpointConfig {
    let spin = if cpus >= 2 {
        Duration::from_millis(100)
    } else {
        Duration::from_micros(20)
    };
    EndpointConfig::default().with_spin(spin)
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Record `i`'s bytes: eight words derived from `i`.
fn record(i: u64) -> [u8; RECORD_LEN] {
    let base = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut out = [0u8; RECORD_LEN];
    for (j, chunk) in out.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&(base ^ j as u64).to_le_bytes());
    }
    out
}

/// Folds one record's words into an order-sensitive checksum.
fn fold(sum: u64, record: &[u8]) -> u64 {
    let mut s = sum;
    for word in record.chunks_exact(8) {
        s = s.wrapping_add(u64::from_le_bytes(word.try_into().expect("8 bytes")));
    }
    s.rotate_left(7)
}

fn parent() -> Result {
    let cpus = cpus();
    let (socket, theirs) = UnixStream::pair()?;
    let mut child = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, "1")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()?;
    let outcome = run_parent(&socket, cpus, child.id());
    if outcome.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    outcome?;
    if !status.success() {
        return Err(format!("the child process failed: {status}").into());
    }
    Ok(())
}

fn run_parent(socket: &UnixStream, cpus: usize, child_pid: u32) -> Result {
    let bulk = Ring::create(BULK_CAPACITY)?;
    let ping = Ring::create(1 << 16)?;
    let pong = Ring::create(1 << 16)?;
    for ring in [&bulk, &ping, &pong] {
        fdpass::send_ring(socket, ring)?;
    }
    println!(
        "shmplug ring demo: parent {}, child {child_pid}, {cpus} CPU{}",
        std::process::id(),
        if cpus == 1 { "" } else { "s" }
    );

    // Throughput: count from the first record to the end of the stream.
    let mut rx = bulk.consumer(bulk_config())?;
    let (mut count, mut sum) = (0u64, 0u64);
    let mut started = None;
    loop {
        match rx.read_timeout(WAIT) {
            Ok(record) => {
                started.get_or_insert_with(Instant::now);
                sum = fold(sum, &record);
                count += 1;
            }
            Err(e) if e.is_closed() => break,
            Err(e) => return Err(e.into()),
        }
    }
    let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let expected = (0..RECORDS).fold(0, |s, i| fold(s, &record(i)));
    let child_sum = read_u64(socket)?;
    if count != RECORDS || sum != expected || child_sum != expected {
        return Err(format!(
            "throughput check failed: {count} records, checksum {sum:#x}, child's {child_sum:#x}, \
             expected {expected:#x}"
        )
        .into());
    }
    let bytes = (RECORDS * RECORD_LEN as u64) as f64;
    println!(
        "throughput  {} records x {RECORD_LEN} B, child -> parent, in {secs:.2} s",
        thousands(RECORDS)
    );
    println!(
        "            {:.1} M records/s, {:.2} GB/s, checksums match",
        RECORDS as f64 / secs / 1e6,
        bytes / secs / 1e9
    );

    // Latency: one record out, the same record back.
    let config = latency_config(cpus);
    let mut tx = ping.producer(config)?;
    let mut rx = pong.consumer(config)?;
    let mut rtts = Vec::with_capacity(ROUND_TRIPS);
    let deadline = Instant::now() + LATENCY_BUDGET;
    for i in 0..(WARM_UP + ROUND_TRIPS) as u64 {
        let sent = Instant::now();
        let mut claim = tx.claim_timeout(8, WAIT)?;
        claim.copy_from_slice(&i.to_le_bytes());
        claim.commit();
        let echo = rx.read_timeout(WAIT)?;
        let received = Instant::now();
        if *echo != i.to_le_bytes() {
            return Err(format!("round trip {i} came back as {:?}", &*echo).into());
        }
        if i >= WARM_UP as u64 {
            rtts.push(received - sent);
        }
        if received > deadline {
            break;
        }
    }
    drop(tx);
    if rtts.is_empty() {
        return Err("no round trip finished within the latency budget".into());
    }
    rtts.sort_unstable();
    let one_way = |q: f64| rtts[((rtts.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6 / 2.0;
    println!(
        "latency     {} round trips over two rings, {}{}",
        thousands(rtts.len() as u64),
        if cpus >= 2 {
            "both sides spinning"
        } else {
            "parking (1 CPU)"
        },
        if rtts.len() < ROUND_TRIPS {
            format!(" (stopped after {LATENCY_BUDGET:?}: is the machine busy?)")
        } else {
            String::new()
        }
    );
    println!(
        "            one-way (RTT/2): p50 {:.2} µs, p99 {:.2} µs",
        one_way(0.5),
        one_way(0.99)
    );
    Ok(())
}

fn child() -> Result {
    let socket = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let bulk = fdpass::recv_ring(&socket)?;
    let ping = fdpass::recv_ring(&socket)?;
    let pong = fdpass::recv_ring(&socket)?;

    let mut tx = bulk.producer(bulk_config())?;
    let mut sum = 0;
    for i in 0..RECORDS {
        let mut claim = tx.claim_timeout(RECORD_LEN, WAIT)?;
        claim.copy_from_slice(&record(i));
        sum = fold(sum, &claim);
        claim.commit_deferred();
    }
    // Publishes the last batch and ends the stream.
    drop(tx);
    write_u64(&socket, sum)?;

    let config = latency_config(cpus());
    echo(ping.consumer(config)?, pong.producer(config)?)
}

/// Sends every record back until the parent closes its ring.
fn echo(mut rx: Consumer, mut tx: Producer) -> Result {
    loop {
        let record = match rx.read_timeout(WAIT) {
            Ok(record) => record,
            Err(e) if e.is_closed() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut claim = tx.claim_timeout(record.len(), WAIT)?;
        claim.copy_from_slice(&record);
        claim.commit();
    }
}

fn write_u64(mut socket: &UnixStream, value: u64) -> Result {
    use std::io::Write;
    socket.write_all(&value.to_le_bytes())?;
    Ok(())
}

fn read_u64(mut socket: &UnixStream) -> Result<u64> {
    use std::io::Read;
    socket.set_read_timeout(Some(WAIT))?;
    let mut b = [0u8; 8];
    socket.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// `20000000` as `20,000,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
