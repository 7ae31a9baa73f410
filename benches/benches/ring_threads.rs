//! Ring throughput between two threads for 64 B, 1 KiB and 64 KiB records, beside rtrb carrying
//! the same bytes between two threads and a single-thread memcpy of the same sizes; see the
//! crate docs (`benches/src/lib.rs`) for what each side does and why.
//!
//! `cargo bench -p shmplug-benches --bench ring_threads` (add `-- --quick` for a smoke pass).

#![forbid(unsafe_code)]

use shmplug_benches::audit::CpuAudit;
use shmplug_benches::baseline::{Memcpy, RtrbArrays, RtrbBytes};
use shmplug_benches::report::{self, Group, Results};
use shmplug_benches::rings::{self, Publish, ThreadRing};
use shmplug_benches::{AlignedBuf, SIZES, size_id, size_label};

fn main() {
    let audit = CpuAudit::start();
    let mut c = report::criterion();
    let mut results = Results::default();
    for size in SIZES {
        let payload = AlignedBuf::pattern(size);
        let payload = payload.as_slice();
        let mut g = Group::new(
            &mut c,
            &mut results,
            &format!("threads/{}", size_id(size)),
            Some(size),
        );
        let mut ring = ThreadRing::new(rings::throughput_config());
        g.bench("shmplug_deferred", |n| {
            ring.run(payload, n, Publish::Deferred)
        });
        g.note("shmplug_deferred", ring.take_parks());
        if size == 64 {
            g.bench("shmplug_commit", |n| {
                ring.run(payload, n, Publish::EveryRecord)
            });
            g.note("shmplug_commit", ring.take_parks());
            g.bench("shmplug_deferred_try", |n| {
                ring.run(payload, n, Publish::DeferredTryLoop)
            });
            g.note("shmplug_deferred_try", ring.take_parks());
        }
        drop(ring);
        let mut rtrb = RtrbBytes::default();
        g.bench("rtrb_u8_chunks", |n| rtrb.run(payload, n));
        drop(rtrb);
        if size == 64 {
            let item: &[u8; 64] = payload.try_into().expect("64 bytes");
            let mut rtrb = RtrbArrays::default();
            g.bench("rtrb_array64", |n| rtrb.run(item, n));
        }
        // One thread: where the cores sit does not matter.
        g.probe_c2c(false);
        let mut memcpy = Memcpy::large_buffers();
        g.bench("memcpy_large_buffers", |n| memcpy.run(size, n));
        let mut memcpy = Memcpy::producer_copy(size);
        g.bench("memcpy_producer_copy", |n| memcpy.run(size, n));
        g.finish();
    }
    c.final_summary();
    if !report::benchmarking() {
        return;
    }

    println!(
        "\n== ring_threads summary: medians of this run; ratio = shmplug / baseline throughput =="
    );
    println!("(shmplug endpoints: {:?})", rings::throughput_config());
    println!("{}", audit.report());
    for size in SIZES {
        let (id, label) = (size_id(size), size_label(size));
        let key = |f: &str| format!("threads/{id}/{f}");
        let deferred = format!("ring {label} threads, commit_deferred");
        results.throughput_line(
            &deferred,
            &key("shmplug_deferred"),
            "rtrb u8 chunks",
            &key("rtrb_u8_chunks"),
            size,
        );
        if size == 64 {
            results.throughput_line(
                &deferred,
                &key("shmplug_deferred"),
                "rtrb [u8; 64] push/pop",
                &key("rtrb_array64"),
                size,
            );
            results.throughput_line(
                &format!("ring {label} threads, commit per record"),
                &key("shmplug_commit"),
                "rtrb u8 chunks",
                &key("rtrb_u8_chunks"),
                size,
            );
            results.throughput_line(
                &format!("ring {label} threads, try_claim/try_read busy-poll"),
                &key("shmplug_deferred_try"),
                "blocking claim/read",
                &key("shmplug_deferred"),
                size,
            );
        }
        results.throughput_line(
            &deferred,
            &key("shmplug_deferred"),
            "memcpy 4 MiB -> 4 MiB",
            &key("memcpy_large_buffers"),
            size,
        );
        results.throughput_line(
            &deferred,
            &key("shmplug_deferred"),
            "memcpy hot source -> 1 MiB (the producer's copy alone)",
            &key("memcpy_producer_copy"),
            size,
        );
    }
}
