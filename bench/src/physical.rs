//! The physical references: `memcpy` of the 1 MiB field in one thread, and `pingpong`, a
//! cache-line round trip between two processes.

use std::hint::black_box;
use std::os::fd::AsFd;
use std::time::Instant;

use shmplug_transport::fdpass;
use shmplug_transport::pingpong::PingPong;

use super::peer::{self, Peer, Rendezvous};
use super::workload::{LARGE_BYTES, Workload};
use super::{BenchError, Launcher, Measurement, STUCK};

/// Round trips before timing starts (page faults, caches, frequency).
const WARM_UP: u64 = 2_000;

/// Copies the 1 MiB field `copies` times between two buffers, one thread: the rate at which
/// this machine moves the bytes once.
///
/// Both buffers stay in this core's caches and nothing reads the copy, so this is one pass
/// over 1 MiB. A `large_1mib` reader does more: shmplug's host copies each record out of the
/// ring (it never reads plugin-writable memory twice), then the check sums every byte of the
/// copy; a copy followed by that sum runs at 0.53-0.54x this rate in one thread (`cargo run
/// --release -p shmplug-bench --example large_ceiling`).
pub(super) fn memcpy(copies: u64) -> Measurement {
    let workload = Workload::new();
    let src = workload.data();
    let mut dst = vec![0u8; LARGE_BYTES];
    // Fault the destination in, as a ring's pages are.
    dst.copy_from_slice(src);
    let start = Instant::now();
    for _ in 0..copies {
        black_box(&mut dst).copy_from_slice(black_box(src));
    }
    let elapsed = start.elapsed();
    black_box(&dst);
    Measurement::throughput(copies, elapsed, LARGE_BYTES as u64)
}

/// Bounces a counter `rounds` times between this process and a peer through one shared
/// cache line each way, both spinning; times each round trip.
pub(super) fn pingpong(rounds: u64, launcher: &Launcher) -> Result<Measurement, BenchError> {
    let words = PingPong::create()?;
    let rendezvous = Rendezvous::new()?;
    // A short run (a test) warms up as long as it measures.
    let warm_up = WARM_UP.min(rounds);
    let total = warm_up + rounds;
    let mut child = Peer::spawn(
        launcher,
        "pingpong",
        &[
            "function_rtt".into(),
            rendezvous.path(),
            total.to_string().into(),
        ],
    )?;
    let socket = rendezvous.accept(&mut child)?;
    fdpass::send_with_fds(&socket, b"pingpong", &[words.fd().as_fd()])?;
    for seq in 1..=warm_up {
        words.round_trip(seq, STUCK)?;
    }
    let mut samples = Vec::with_capacity(rounds as usize);
    for seq in warm_up + 1..=total {
        let start = Instant::now();
        words.round_trip(seq, STUCK)?;
        samples.push(start.elapsed().as_nanos() as u64);
    }
    child.wait()?;
    Ok(Measurement::round_trips(&mut samples))
}

/// The answering side of [`pingpong`].
pub(super) fn pingpong_peer(args: &[String]) -> Result<(), BenchError> {
    let (_, path, total) = peer::case_args(args)?;
    let socket = peer::connect(path)?;
    let mut buf = [0u8; 16];
    let (_, mut fds) = fdpass::recv_with_fds(&socket, &mut buf)?;
    let fd = fds
        .pop()
        .ok_or_else(|| BenchError::Protocol("no segment came with the pingpong message".into()))?;
    let words = PingPong::from_fd(fd)?;
    for seq in 1..=total {
        words.answer(seq, STUCK)?;
    }
    Ok(())
}
