//! What `large_1mib` can reach on this machine, one thread, everything cache-warm: the bench's
//! `memcpy` line (one copy of the 1 MiB field), a zero-fill (what a zero-filling loan costs),
//! the reader's checksum alone, and a copy followed by the checksum, which is the host's least
//! work per large tuple under copy-then-validate (it copies the record out of the ring, then
//! the bench's reader sums every byte of the copy). Best of 7 rounds of 200 for each. Run it
//! with `cargo run --release -p shmplug-bench --example large_ceiling`.

use std::hint::black_box;
use std::time::Instant;

use shmplug_bench::workload::{LARGE_BYTES, Workload, checksum};

/// Bytes per second of `f`, which moves [`LARGE_BYTES`] once, at its best.
fn rate(mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..200 {
            f();
        }
        best = best.min(start.elapsed().as_secs_f64() / 200.0);
    }
    LARGE_BYTES as f64 / best
}

fn main() {
    let workload = Workload::new();
    let src = workload.data();
    let mut dst = vec![0u8; LARGE_BYTES];
    dst.copy_from_slice(src);
    let memcpy = rate(|| black_box(&mut dst).copy_from_slice(black_box(src)));
    let fill = rate(|| black_box(&mut dst).fill(0));
    dst.copy_from_slice(src);
    let sum = rate(|| {
        black_box(checksum(black_box(&dst)));
    });
    let both = rate(|| {
        black_box(&mut dst).copy_from_slice(black_box(src));
        black_box(checksum(black_box(&dst)));
    });
    let gb = |r: f64| r / 1e9;
    println!(
        "GB/s: memcpy {:.1}, zero-fill {:.1}, checksum {:.1}, copy then checksum {:.1} \
         ({:.2}x memcpy)",
        gb(memcpy),
        gb(fill),
        gb(sum),
        gb(both),
        both / memcpy
    );
}
