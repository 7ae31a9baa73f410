//! Benchmarks of shmplug's rings, each printed beside a baseline measured in the same run.
//!
//! | Bench | What | Baselines |
//! |---|---|---|
//! | `ring_threads` | records of 64 B, 1 KiB, 64 KiB through a ring between two threads | rtrb between threads, memcpy |
//! | `ring_processes` | the same sizes to a peer process; 64 B one-way latency (mean, and p50/p99/p99.9) | rtrb between threads, memcpy; for latency, shmplug and rtrb between threads |
//! | `idle` | CPU a parked reader burns on an empty ring, and at 100 records/s | — |
//!
//! Each criterion bench ends with a summary of medians from the same process, for example
//! `ring 64 B threads, commit_deferred: 24.10 M rec/s (1.54 GB/s); rtrb u8 chunks: 27.90 M rec/s
//! (1.79 GB/s); ratio 0.86` (ratio = shmplug / baseline throughput; for latency, shmplug /
//! baseline time). GB are 10^9 bytes.
//!
//! # What is measured, and the choices behind it
//! - **Producer** writes every record: `claim(len)`, `copy_from_slice` from a 64-byte aligned
//!   source buffer, then `commit_deferred` (batched publication; the default) or `commit` (per
//!   record, 64 B only). A `try_claim` / `try_read` busy-poll variant at 64 B isolates the cost
//!   of the blocking calls' fast path.
//! - **Consumer** reads every byte of every record in place: [`checksum`] adds the length and
//!   every little-endian `u64` word. The sums are checked against the producer's, so a bench
//!   that lost or corrupted a record fails instead of reporting a number.
//! - **rtrb baseline**: a `RingBuffer<u8>` of the same 1 MiB ([`RING_BYTES`]), the producer
//!   copying each record in with `push_entire_slice`, the consumer reading it in place with
//!   `read_chunk(len)` and the same checksum. That is the same bytes, the same copy in, the
//!   same in-place read, for every size, which rtrb's item API cannot do (a `[u8; 65536]` item
//!   would be copied on pop). rtrb publishes its index on every operation; it has no batching,
//!   and no framing: shmplug additionally writes a 16-byte header per record (a 64 B record
//!   takes 80 bytes of ring) and checks every header it reads. At 64 B the
//!   `RingBuffer<[u8; 64]>` push/pop form is measured too, as the "64-byte items" figure.
//! - **memcpy**, single thread, `copy_from_slice` of record-sized pieces, two forms:
//!   *large buffers* copies between two 64-byte aligned 4 MiB buffers ([`MEMCPY_BUFFER_BYTES`],
//!   4× this machine's 1 MiB L2), walking through both, so the copy streams through L3 rather
//!   than repeating in L1 — the "how fast can one core move bytes" ceiling; *producer copy*
//!   copies from the producers' cache-hot source into a walked 1 MiB region, which is the
//!   producer's share of a ring transfer alone. A ring between two cores can beat the first
//!   (the source is hot and two cores work at once) but not the second.
//! - **Processes**: `ring_peer` (a `[[bin]]` of this crate) is started per benchmark with a
//!   socket as its standard input; see [`peer`]. Each measurement moves N records then a mark
//!   record and stops the clock when the peer's ack (count and checksum sum) comes back on a
//!   second ring.
//! - **Latency**: a 64 B record carrying a sequence number goes out, the peer echoes it on a
//!   second ring, one-way = RTT / 2; both sides spin for up to 1 s before parking. Criterion
//!   gives the mean; [`latency::one_way_percentiles`] then times 200 000 single round trips for
//!   p50 / p99 / p99.9, each including one `Instant::now()` pair (printed as well).
//! - **Idle**: a consumer with the default 50 µs spin budget waits on an empty ring; its CPU time
//!   (`CLOCK_THREAD_CPUTIME_ID`, the clock behind `getrusage(RUSAGE_THREAD)` at nanosecond
//!   resolution) over one second of waiting.
//!
//! # Running
//! ```text
//! cargo bench -p shmplug-benches                      # everything, a few minutes
//! cargo bench -p shmplug-benches --bench ring_threads # one file
//! cargo bench -p shmplug-benches -- 64B               # a criterion name filter
//! cargo bench -p shmplug-benches -- --quick           # smoke pass: criterion's quick mode
//! cargo bench -p shmplug-benches --no-run             # CI: compile only
//! cargo test -p shmplug-benches --benches             # run each routine once, measure nothing
//! SHMPLUG_BENCH_SPIN_US=1000 cargo bench -p shmplug-benches --bench ring_processes
//!                                                     # throughput with another spin budget
//! ```
//! `--quick` is criterion's quick mode (it doubles the iterations until two runs agree, at most
//! `--measurement-time`); `--warm-up-time 0.5 --measurement-time 1` is the other way to shorten
//! a run.
//! The machine has 2 vCPUs: close other work first (check `uptime`), since every bench keeps
//! both busy.

#![forbid(unsafe_code)]

pub mod audit;
pub mod baseline;
pub mod latency;
mod payload;
pub mod peer;
pub mod report;
pub mod rings;

pub use baseline::MEMCPY_BUFFER_BYTES;
pub use payload::{AlignedBuf, RING_BYTES, SIZES, checksum, size_id, size_label};
