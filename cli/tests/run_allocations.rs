//! `shmplug run`'s data path allocates nothing per tuple, so its memory stays flat: the pump
//! (`src/pump.rs`, compiled into this test as it is) moves tuples from the fake plugin's source
//! through its echo function to its sink, under a global allocator that counts the
//! allocations made on the pump's thread.

mod support;

#[path = "../src/pump.rs"]
#[allow(dead_code)]
mod pump;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmplug_host::{InstanceSpec, Plugin};

use pump::{Outcome, Pump, Step};

/// Counts the allocations made on threads that asked for it; allocates with [`System`].
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments, so `System`'s
// guarantees are this allocator's; counting touches only an atomic and a const-initialised
// thread-local (no allocation, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: `ptr` and `layout` came from this allocator, that is from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` came from this allocator, that is from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn fake_plugin_entry() {
    support::fake::entry();
}

/// Resident memory of this process, in kilobytes.
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[test]
fn the_pump_allocates_nothing_per_tuple_and_memory_stays_flat() {
    const WARM_UP: u64 = 5_000;
    const TOTAL: u64 = 40_000;
    let fake = support::fake("fake", "ok");
    let plugin = Plugin::start(fake.spec.clone(), support::quick_config()).expect("plugin");
    let mut source = plugin
        .source(InstanceSpec::new("counter").property("count", TOTAL))
        .expect("source");
    let step = Step::new(vec!["n".into()], "echoed".into(), &[]);
    let mut functions = vec![(
        plugin.function(InstanceSpec::new("echo")).expect("echo"),
        step,
    )];
    let mut sink = plugin.sink(InstanceSpec::new("collect")).expect("sink");

    let mut pump = Pump::new(functions.len());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut counted_from = None;
    let mut rss_at_start = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "the pipeline did not finish in time"
        );
        if counted_from.is_none() && pump.stats.tuples >= WARM_UP {
            counted_from = Some(pump.stats.tuples);
            rss_at_start = rss_kb();
            ALLOCATIONS.store(0, Ordering::SeqCst);
            COUNTING.with(|c| c.set(true));
        }
        let outcome = pump.step(
            &mut source,
            &mut functions,
            &mut sink,
            256,
            Duration::from_millis(100),
        );
        match outcome {
            Outcome::Moved | Outcome::Idle => {}
            Outcome::SourceEnded => break,
            Outcome::Failed(reason) => panic!("the pipeline failed: {reason}"),
        }
    }
    COUNTING.with(|c| c.set(false));
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);
    let counted = pump.stats.tuples - counted_from.expect("warm-up reached");
    let rss_growth = rss_kb().saturating_sub(rss_at_start);
    println!("{counted} tuples: {allocations} allocations, RSS +{rss_growth} kB");
    assert_eq!(pump.stats.tuples, TOTAL);
    assert_eq!(pump.stats.errors, 0);
    // Batches may still grow to a size not seen during the warm-up (a few reallocations);
    // one allocation per tuple would be tens of thousands.
    assert!(
        allocations <= 16,
        "{allocations} allocations over {counted} tuples"
    );
    // A latency kept per tuple would be 16 bytes each; the histogram is fixed.
    assert!(rss_growth < 2_048, "RSS grew by {rss_growth} kB");
    assert_eq!(pump.stats.latency.len(), TOTAL);

    drop((source, functions));
    sink.stop().expect("sink stop");
    let written = std::fs::read_to_string(fake.path("sink")).expect("sink file");
    assert_eq!(written.lines().count() as u64, TOTAL);
}
