//! Data handles against the fake plugin: sources, sinks and functions, blocking and async,
//! across crashes, wedges and updates.

mod support;

use std::time::{Duration, Instant};

use shmplug_host::transport::{Tuple, Value, ValueRef};
use shmplug_host::{Error, InstanceSpec, Phase, Plugin, SupervisorConfig};
use support::{WAIT, assert_reaped, fake, quick_config, read_lines, wait_for};

#[test]
fn fake_plugin_entry() {
    support::fake::entry();
}

/// Reads `n` from the next tuple, waiting at most [`WAIT`].
fn next_n(reader: &mut shmplug_host::SourceReader) -> i64 {
    let view = reader
        .recv_timeout(WAIT)
        .unwrap()
        .expect("a tuple within the wait");
    view.get("n").and_then(|v| v.as_i64()).unwrap()
}

#[test]
fn a_source_streams_to_its_end() {
    let fake = fake("src", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let mut reader = plugin
        .source(InstanceSpec::new("counter").property("count", 5000))
        .unwrap();
    for expected in 0..5000 {
        assert_eq!(next_n(&mut reader), expected);
    }
    let err = reader.recv().unwrap_err();
    assert!(err.is_end_of_stream(), "{err}");
    assert!(err.to_string().contains("source `counter`"), "{err}");
    assert!(reader.try_recv().is_err());
    reader.stop().unwrap();
    assert!(plugin.status().instances.is_empty());
}

#[test]
fn try_recv_and_timeouts_do_not_block() {
    let fake = fake("idle", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let mut reader = plugin
        .source(InstanceSpec::new("counter").property("count", 0))
        .unwrap();
    // The source sends nothing and closes at once: end of stream, quickly.
    let started = Instant::now();
    loop {
        match reader.recv_timeout(Duration::from_millis(20)) {
            Ok(None) => assert!(started.elapsed() < WAIT),
            Ok(Some(_)) => panic!("no tuple expected"),
            Err(e) => {
                assert!(e.is_end_of_stream(), "{e}");
                break;
            }
        }
    }
}

#[test]
fn a_crash_mid_stream_restarts_the_plugin_and_data_resumes() {
    let fake = fake("crashy", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let mut reader = plugin
        .source(InstanceSpec::new("counter").property("crash_after", 3000))
        .unwrap();
    let first_pid = plugin.status().pid.unwrap();
    // Every tuple the first process committed arrives, in order; then the replayed instance
    // starts again from 0 in the new process.
    let mut expected = 0;
    let mut restarted = false;
    let deadline = Instant::now() + WAIT;
    while !(restarted && expected >= 100) {
        assert!(Instant::now() < deadline, "data did not resume");
        let n = next_n(&mut reader);
        if n == expected {
            expected += 1;
        } else {
            assert_eq!(n, 0, "after {expected} the stream jumped to {n}");
            assert!(!restarted, "restarted twice");
            assert!(expected <= 3000, "more tuples than the first process sent");
            restarted = true;
            expected = 1;
        }
    }
    let status = plugin.status();
    assert_eq!(status.restarts, 1);
    assert!(status.last_error.unwrap().contains("exit status: 101"));
    assert_ne!(status.pid.unwrap(), first_pid);
    assert_reaped(first_pid as i32);
    drop(reader);
    drop(plugin);
    for pid in fake.pids() {
        assert_reaped(pid);
    }
}

#[test]
fn an_instances_state_survives_a_plugin_restart() {
    let fake = fake("stateful", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let reader = plugin
        .source(
            InstanceSpec::new("counter")
                .property("crash_after", 50)
                .property("put_state", "seen"),
        )
        .unwrap();
    // The first process puts its entry, writes 50 tuples (they fit in the ring unread) and
    // exits; the supervisor starts a second one and replays the instance.
    support::wait_for("the plugin's restart", || plugin.status().restarts >= 1);
    support::wait_for("the replayed start", || {
        !support::read_lines(&fake.state.path().join("kept_state")).is_empty()
    });
    // The replayed start carried what the first process put.
    let kept = support::read_lines(&fake.state.path().join("kept_state"));
    // (The first process may be gone before `status` could say its pid: ask the fake's log.)
    let first_pid = fake.pids()[0];
    assert_eq!(kept, [format!(r#"{{"seen":{{"pid":{first_pid}}}}}"#)]);
    drop(reader);
    drop(plugin);
    for pid in fake.pids() {
        assert_reaped(pid);
    }
}

#[test]
fn a_wedged_plugin_is_noticed_and_restarted() {
    let fake = fake("wedgy", "ok");
    let config = SupervisorConfig {
        ping_interval: Duration::from_millis(50),
        ping_timeout: Duration::from_millis(300),
        ..quick_config()
    };
    let plugin = Plugin::start(fake.spec.clone(), config).unwrap();
    let mut reader = plugin
        .source(InstanceSpec::new("counter").property("wedge_after", 0))
        .unwrap();
    let first_pid = plugin.status().pid.unwrap();
    wait_for("the wedged plugin to be replaced", || {
        plugin.status().pid.is_some_and(|p| p != first_pid)
    });
    assert!(
        plugin
            .status()
            .last_error
            .unwrap()
            .contains("did not answer a ping")
    );
    // Data flows from the new process (the old one's tuples come first).
    let mut zeros = 0;
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while zeros < 2 {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            &seen[..seen.len().min(20)]
        );
        let n = next_n(&mut reader);
        seen.push(n);
        if n == 0 {
            zeros += 1;
        }
    }
    assert_reaped(first_pid as i32);
}

#[test]
fn a_sink_receives_what_the_host_writes_even_across_a_restart() {
    let fake = fake("snk", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let mut writer = plugin.sink(InstanceSpec::new("collect")).unwrap();
    for n in 0..1000i64 {
        writer.send(&Tuple::new(n).with_field("n", n)).unwrap();
    }
    wait_for("the sink to collect 1000 tuples", || {
        read_lines(&fake.path("sink")).len() >= 1000
    });
    let lines = read_lines(&fake.path("sink"));
    let got: Vec<i64> = lines.iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());

    let first = plugin.status().pid.unwrap();
    plugin.restart("test");
    wait_for("the new process", || {
        plugin.status().pid.is_some_and(|p| p != first)
    });
    // The writer notices the new rings by itself.
    writer
        .send_timeout(&Tuple::new(0).with_field("n", 5000i64), WAIT)
        .unwrap();
    wait_for("the new process to collect", || {
        read_lines(&fake.path("sink")).contains(&"5000".to_owned())
    });
    assert_ne!(plugin.status().pid.unwrap(), first);
    assert!(
        writer
            .try_send(&Tuple::new(0).with_field("n", 1i64))
            .unwrap()
    );
}

#[test]
fn functions_answer_single_and_pipelined_calls() {
    let fake = fake("fn", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let mut echo = plugin.function(InstanceSpec::new("echo")).unwrap();
    assert_eq!(
        echo.call(&[ValueRef::String("hi"), ValueRef::Int(2)])
            .unwrap(),
        Value::from("hi")
    );
    let args: Vec<[ValueRef<'_>; 1]> = (0..5000).map(|i| [ValueRef::Int(i)]).collect();
    let calls: Vec<&[ValueRef<'_>]> = args.iter().map(|a| &a[..]).collect();
    let results = echo.call_batch_timeout(&calls, WAIT).unwrap();
    assert_eq!(results.len(), 5000);
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(result.unwrap(), Value::Int(i as i64));
    }
    let mut fail = plugin.function(InstanceSpec::new("fail")).unwrap();
    let err = fail.call_timeout(&[ValueRef::Null], WAIT).unwrap_err();
    assert!(matches!(err, Error::FunctionFailed { .. }), "{err}");
    assert!(err.to_string().contains("echo refuses"), "{err}");
    assert!(
        err.to_string().contains("function `fail` of plugin `fn`"),
        "{err}"
    );

    // An answer read in place: `read` sees it in the ring, once, and not on a failure.
    let len = echo
        .call_with(&[ValueRef::String("in place")], WAIT, |answer| {
            answer.as_str().map(str::len)
        })
        .unwrap();
    assert_eq!(len, Some(8));
    let mut called = false;
    let err = fail
        .call_with(&[ValueRef::Null], WAIT, |_| called = true)
        .unwrap_err();
    assert!(matches!(err, Error::FunctionFailed { .. }), "{err}");
    assert!(!called, "read runs only for an answer");

    // Across a restart, the client re-attaches by itself.
    plugin.restart("test");
    assert_eq!(
        echo.call_timeout(&[ValueRef::Int(7)], WAIT).unwrap(),
        Value::Int(7)
    );
    assert_eq!(
        echo.call_with(&[ValueRef::Int(8)], WAIT, |answer| answer.as_i64())
            .unwrap(),
        Some(8)
    );
}

#[test]
fn async_handles_share_one_runtime_thread() {
    let fake = fake("asy", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    // Two hundred source instances, all read from one current-thread runtime.
    let mut readers: Vec<_> = (0..200)
        .map(|_| {
            plugin
                .source(InstanceSpec::new("counter").property("count", 500))
                .unwrap()
        })
        .collect();
    let mut writer = plugin.sink(InstanceSpec::new("collect")).unwrap();
    let mut echo = plugin.function(InstanceSpec::new("echo")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sources = readers.iter_mut().map(|reader| async move {
            let mut sum = 0i64;
            loop {
                match reader.recv_async().await {
                    Ok(view) => sum += view.get("n").and_then(|v| v.as_i64()).unwrap(),
                    Err(e) if e.is_end_of_stream() => return sum,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let sums = tokio::time::timeout(WAIT, futures_join(sources))
            .await
            .unwrap();
        assert_eq!(sums.len(), 200);
        assert!(sums.iter().all(|s| *s == 499 * 500 / 2), "{sums:?}");
        for n in 0..200i64 {
            writer
                .send_async(&Tuple::new(n).with_field("n", n))
                .await
                .unwrap();
        }
        let answer = tokio::time::timeout(WAIT, echo.call_async(&[ValueRef::Int(42)]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, Value::Int(42));
        let args: Vec<[ValueRef<'_>; 1]> = (0..1000).map(|i| [ValueRef::Int(i)]).collect();
        let calls: Vec<&[ValueRef<'_>]> = args.iter().map(|a| &a[..]).collect();
        let results = tokio::time::timeout(WAIT, echo.call_batch_async(&calls))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(results.len(), 1000);
    });
    wait_for("the sink to collect 200 tuples", || {
        read_lines(&fake.path("sink")).len() >= 200
    });
    // The async forms count as the blocking ones do.
    assert!(readers.iter().all(|r| r.stats().received == 500));
    assert_eq!(writer.stats().sent, 200);
    let echoed = echo.stats();
    assert_eq!(
        (echoed.calls, echoed.answers, echoed.errors),
        (1001, 1001, 0)
    );
}

/// Awaits every future, concurrently, on the current task.
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.unwrap()).collect()
}

#[test]
fn an_update_swaps_the_process_under_running_handles() {
    let fake = fake("upd", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let mut reader = plugin.source(InstanceSpec::new("counter")).unwrap();
    let mut echo = plugin.function(InstanceSpec::new("echo")).unwrap();
    let first = plugin.status().pid.unwrap();
    let version = |view: &shmplug_host::transport::TupleView<'_>| {
        view.get("version")
            .and_then(|v| v.as_str())
            .unwrap()
            .to_owned()
    };
    assert_eq!(version(&reader.recv_timeout(WAIT).unwrap().unwrap()), "");

    plugin
        .update(fake.spec.clone().env("FAKE_VERSION", "v2"))
        .unwrap();
    let second = plugin.status().pid.unwrap();
    assert_ne!(first, second);
    assert_eq!(plugin.status().phase, Phase::Running);
    assert_eq!(plugin.status().restarts, 0);
    assert_reaped(first as i32);
    // The same handle now reads from the new process.
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no tuple from the new version");
        if version(&reader.recv_timeout(WAIT).unwrap().unwrap()) == "v2" {
            break;
        }
    }
    assert_eq!(
        echo.call_timeout(&[ValueRef::Int(1)], WAIT).unwrap(),
        Value::Int(1)
    );
}

#[test]
fn handles_fail_once_the_plugin_is_shut_down() {
    let fake = fake("bye", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let mut reader = plugin.source(InstanceSpec::new("counter")).unwrap();
    let mut echo = plugin.function(InstanceSpec::new("echo")).unwrap();
    let pid = plugin.status().pid.unwrap();
    plugin.shutdown();
    assert_reaped(pid as i32);
    // The reader may still drain tuples the plugin committed; then it fails.
    let deadline = Instant::now() + WAIT;
    let err = loop {
        assert!(Instant::now() < deadline);
        match reader.recv_timeout(WAIT) {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::InstanceGone { .. }), "{err}");
    assert!(err.to_string().contains("shut down"), "{err}");
    let err = echo.call_timeout(&[ValueRef::Int(1)], WAIT).unwrap_err();
    assert!(matches!(err, Error::InstanceGone { .. }), "{err}");
}

#[test]
fn an_instance_may_choose_its_ring_capacity_and_keeps_it_across_a_restart() {
    let fake = fake("cap", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let mut writer = plugin
        .sink(InstanceSpec::new("collect").ring_capacity(1 << 12))
        .unwrap();
    // A tuple takes at most about half the ring: under 2 KiB here, not half of 1 MiB.
    let large = Tuple::new(0)
        .with_field("n", 1i64)
        .with_field("pad", "x".repeat(3000));
    let err = writer.send(&large).unwrap_err();
    assert!(
        err.to_string().contains("largest record (1984 bytes)"),
        "{err}"
    );
    writer.send(&Tuple::new(0).with_field("n", 7i64)).unwrap();
    wait_for("the sink to collect", || {
        read_lines(&fake.path("sink")).contains(&"7".to_owned())
    });
    let first = plugin.status().pid.unwrap();
    plugin.restart("test");
    wait_for("the new process", || {
        plugin.status().pid.is_some_and(|p| p != first)
    });
    writer
        .send_timeout(&Tuple::new(0).with_field("n", 8i64), WAIT)
        .unwrap();
    let err = writer.send(&large).unwrap_err();
    assert!(
        err.to_string().contains("(1984 bytes)"),
        "after the restart too: {err}"
    );
    // A capacity the transport refuses is an error that says so, not a panic.
    let err = plugin
        .sink(InstanceSpec::new("collect").ring_capacity(1000))
        .unwrap_err();
    assert!(err.to_string().contains("1000"), "{err}");
}

/// Each handle counts what moves through it (`stats()`), and the plugin's status reports the
/// same figures per instance: tuples received from a source, written to a sink (deferred ones
/// once flushed), calls answered and failed.
#[test]
fn handles_count_tuples_calls_and_failures() {
    let fake = fake("stats", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let mut reader = plugin
        .source(InstanceSpec::new("counter").property("count", 300))
        .unwrap();
    for expected in 0..300 {
        assert_eq!(next_n(&mut reader), expected);
    }
    let mut writer = plugin.sink(InstanceSpec::new("collect")).unwrap();
    for n in 0..100i64 {
        writer
            .send_deferred(&Tuple::new(n).with_field("n", n))
            .unwrap();
    }
    assert_eq!(writer.stats().sent, 100);
    let sink_id = writer.instance_id();
    let in_status = |id: u64| {
        let status = plugin.status();
        let i = status.instances.iter().find(|i| i.id == id).unwrap();
        (i.tuples_in, i.tuples_out, i.errors)
    };
    // Deferred writes reach the status at the flush (one store per batch).
    assert_eq!(in_status(sink_id), (0, 0, 0));
    writer.flush();
    assert_eq!(in_status(sink_id), (100, 0, 0));
    writer
        .send_timeout(&Tuple::new(100).with_field("n", 100i64), WAIT)
        .unwrap();
    assert_eq!(in_status(sink_id), (101, 0, 0));

    let mut echo = plugin.function(InstanceSpec::new("echo")).unwrap();
    let args: Vec<[ValueRef<'_>; 1]> = (0..50).map(|i| [ValueRef::Int(i)]).collect();
    let calls: Vec<&[ValueRef<'_>]> = args.iter().map(|a| &a[..]).collect();
    assert!(
        echo.call_batch_timeout(&calls, WAIT)
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    let mut fail = plugin.function(InstanceSpec::new("fail")).unwrap();
    let failed = fail.call_batch_timeout(&calls[..3], WAIT).unwrap();
    assert!(failed.iter().all(Result::is_err));
    assert!(fail.call_timeout(&[ValueRef::Null], WAIT).is_err());

    let source = reader.stats();
    assert_eq!((source.received, source.errors), (300, 0));
    let sink = writer.stats();
    assert_eq!((sink.sent, sink.errors, sink.replayed), (101, 0, 0));
    let echoed = echo.stats();
    assert_eq!((echoed.calls, echoed.answers, echoed.errors), (50, 50, 0));
    let refused = fail.stats();
    assert_eq!((refused.calls, refused.answers, refused.errors), (4, 0, 4));
    assert_eq!(in_status(reader.instance_id()), (0, 300, 0));
    assert_eq!(in_status(echo.instance_id()), (50, 50, 0));
    assert_eq!(in_status(fail.instance_id()), (4, 0, 4));
}
