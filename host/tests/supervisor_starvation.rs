//! Starvation reports against the fake plugin: a source instance whose ring holds tuples the
//! host does not read is reported starved after `starved_after`, one that is read is not, and
//! reading clears the report; an async reader of a busy source yields after a bounded batch.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shmplug_host::handles::ASYNC_BATCH;
use shmplug_host::{InstanceSpec, InstanceStatus, Plugin, SupervisorConfig};
use support::{WAIT, assert_reaped, fake, quick_config};

#[test]
fn fake_plugin_entry() {
    support::fake::entry();
}

/// Short enough for a quick test, long enough that a reader thread that keeps reading is not
/// mistaken for a starved one on a busy machine.
const STARVED_AFTER: Duration = Duration::from_millis(300);

fn config() -> SupervisorConfig {
    SupervisorConfig {
        starved_after: STARVED_AFTER,
        ..quick_config()
    }
}

/// Instance `id` in `plugin`'s status.
fn instance(plugin: &Plugin, id: u64) -> InstanceStatus {
    plugin
        .status()
        .instances
        .into_iter()
        .find(|i| i.id == id)
        .expect("the instance is in the status")
}

/// Polls `plugin`'s status until instance `id` is reported starved, or fails after [`WAIT`].
fn wait_until_starved(plugin: &Plugin, id: u64) -> InstanceStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = instance(plugin, id);
        if status.starved_for.is_some() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "instance {id} was not reported starved within {WAIT:?}: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_unread_source_is_reported_starved_and_reading_it_clears_the_report() {
    let fake = fake("starve", "ok");
    let plugin = Plugin::start(fake.spec.clone(), config()).unwrap();
    let pid = plugin.status().pid.unwrap() as i32;
    let mut read = plugin.source(InstanceSpec::new("counter")).unwrap();
    let mut unread = plugin.source(InstanceSpec::new("counter")).unwrap();
    let (read_id, unread_id) = (read.instance_id(), unread.instance_id());
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // One instance is read all along, on a thread of its own.
        let reader = s.spawn(|| {
            let mut received = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match read.recv_timeout(Duration::from_millis(20)) {
                    Ok(Some(_)) => received += 1,
                    Ok(None) => {}
                    Err(e) => panic!("reading the read instance: {e}"),
                }
            }
            received
        });

        let starved = wait_until_starved(&plugin, unread_id);
        assert!(starved.starved_for.unwrap() >= STARVED_AFTER, "{starved:?}");
        assert_eq!(starved.starvations, 1, "{starved:?}");
        let fed = instance(&plugin, read_id);
        assert_eq!(fed.starved_for, None, "{fed:?}");
        assert_eq!(fed.starvations, 0, "{fed:?}");

        // Reading the starved instance ends its episode; it keeps the count.
        let deadline = Instant::now() + WAIT;
        let cleared = loop {
            unread
                .recv_timeout(WAIT)
                .unwrap()
                .expect("a tuple from the starved instance");
            let status = instance(&plugin, unread_id);
            if status.starved_for.is_none() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "reading did not clear the report within {WAIT:?}: {status:?}"
            );
        };
        assert_eq!(cleared.starvations, 1, "{cleared:?}");

        stop.store(true, Ordering::Relaxed);
        let received = reader.join().unwrap();
        assert!(received > 0, "the read instance delivered nothing");
    });
    let fed = instance(&plugin, read_id);
    assert_eq!(
        fed.starvations, 0,
        "the instance read all along was reported: {fed:?}"
    );
    drop((read, unread));
    plugin.shutdown();
    assert_reaped(pid);
}

#[test]
fn an_async_reader_of_a_busy_source_yields_after_a_bounded_batch() {
    let fake = fake("batch", "ok");
    let plugin = Plugin::start(fake.spec.clone(), config()).unwrap();
    let pid = plugin.status().pid.unwrap() as i32;
    let mut source = plugin.source(InstanceSpec::new("counter")).unwrap();
    // Let its ring fill: the report says it held unread tuples for a while, and the counter
    // writes as fast as the ring takes them (a 64 KiB ring holds hundreds).
    wait_until_starved(&plugin, source.instance_id());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reads = runtime.block_on(async {
        // On a current-thread runtime this task runs only when the reading task yields; it
        // notes how many tuples had been read by then.
        let reads = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(usize::MAX));
        let (counted, noted) = (reads.clone(), seen.clone());
        tokio::spawn(
            async move { noted.store(counted.load(Ordering::Relaxed), Ordering::Relaxed) },
        );
        tokio::time::timeout(WAIT, async {
            while seen.load(Ordering::Relaxed) == usize::MAX {
                source.recv_async().await.expect("a tuple");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await
        .expect("the other task ran within the wait");
        seen.load(Ordering::Relaxed)
    });
    assert!(
        (1..=ASYNC_BATCH).contains(&reads),
        "{reads} tuples were read before another task of the runtime could run"
    );
    drop(source);
    plugin.shutdown();
    assert_reaped(pid);
}
