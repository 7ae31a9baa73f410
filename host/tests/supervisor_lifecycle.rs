//! The supervisor against the fake plugin: handshake, refusals, time-outs, reaping.

mod support;

use std::time::{Duration, Instant};

use shmplug_host::{Error, InstanceSpec, Phase, Plugin, SymbolKind};
use support::{assert_reaped, fake, gone_or_zombie, quick_config, read_lines, wait_for};

/// The fake plugin's entry point: a no-op unless the test binary runs as the fake plugin.
#[test]
fn fake_plugin_entry() {
    support::fake::entry();
}

#[test]
fn handshake_ok_reports_symbols_and_shuts_down_cleanly() {
    let fake = fake("alpha", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let hello = plugin.hello().unwrap();
    assert_eq!(hello.plugin_name, "alpha");
    assert_eq!(hello.sources, ["counter", "broken", "rewinding"]);
    let status = plugin.status();
    assert_eq!(status.phase, Phase::Running);
    assert_eq!(status.restarts, 0);
    let pid = status.pid.unwrap() as i32;
    assert_eq!(fake.pids(), [pid]);
    plugin.shutdown();
    assert_reaped(pid);
}

#[test]
fn a_plugin_that_never_says_hello_is_killed_with_a_clear_error() {
    let fake = fake("mute", "silent");
    let config = shmplug_host::SupervisorConfig {
        handshake_timeout: Duration::from_millis(300),
        ..quick_config()
    };
    let started = Instant::now();
    let err = Plugin::start(fake.spec.clone(), config).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = err.to_string();
    assert!(matches!(err, Error::HandshakeTimeout { .. }), "{text}");
    assert!(
        text.contains("plugin `mute` did not say hello within 300ms"),
        "{text}"
    );
    assert!(
        text.contains("is `") && text.contains("a shmplug plugin"),
        "{text}"
    );
    for pid in fake.pids() {
        assert_reaped(pid);
    }
}

#[test]
fn a_killed_plugin_takes_the_processes_it_started_with_it() {
    let fake = fake("forker", "silent-forks");
    let config = shmplug_host::SupervisorConfig {
        // Long enough for the plugin to start its own process first.
        handshake_timeout: Duration::from_secs(3),
        ..quick_config()
    };
    let err = Plugin::start(fake.spec.clone(), config).unwrap_err();
    assert!(matches!(err, Error::HandshakeTimeout { .. }), "{err}");
    let grandchildren = read_lines(&fake.path("grandchildren"));
    assert_eq!(grandchildren.len(), 1, "the plugin started its process");
    let pid: i32 = grandchildren[0].parse().unwrap();
    wait_for("the plugin's own process to be killed", || {
        gone_or_zombie(pid)
    });
    for pid in fake.pids() {
        assert_reaped(pid);
    }
}

#[test]
fn a_plugin_that_exits_before_hello_is_reported_with_its_status() {
    let fake = fake("quitter", "exit");
    let err = Plugin::start(fake.spec.clone(), quick_config()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Handshake { .. }), "{text}");
    assert!(text.contains("before saying hello"), "{text}");
    assert!(text.contains("exit status: 3"), "{text}");
    for pid in fake.pids() {
        assert_reaped(pid);
    }
}

#[test]
fn a_wrong_protocol_version_is_refused_and_the_plugin_told_why() {
    let fake = fake("ancient", "old-version");
    let err = Plugin::start(fake.spec.clone(), quick_config()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::VersionMismatch { .. }), "{text}");
    assert!(text.contains("99.0") && text.contains("1.x"), "{text}");
    // The plugin received the same explanation as a control `Error` message (it may be killed
    // before it writes it down, so only check what it did write).
    let refused = read_lines(&fake.path("refused"));
    assert!(refused.iter().all(|l| l.contains("99.0")), "{refused:?}");
    for pid in fake.pids() {
        assert_reaped(pid);
    }
}

#[test]
fn a_plugin_with_another_name_is_refused() {
    let fake = fake("honest", "wrong-name");
    let err = Plugin::start(fake.spec.clone(), quick_config()).unwrap_err();
    assert!(
        err.to_string().contains("introduced itself as `impostor`"),
        "{err}"
    );
    for pid in fake.pids() {
        assert_reaped(pid);
    }
}

#[test]
fn a_missing_executable_fails_to_spawn() {
    let spec = shmplug_host::PluginSpec::new("ghost", "/nonexistent/ghost");
    let err = Plugin::start(spec, quick_config()).unwrap_err();
    assert!(matches!(err, Error::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/ghost"), "{err}");
}

#[test]
fn unknown_symbols_and_failed_starts_are_explained() {
    let fake = fake("beta", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let err = plugin.source(InstanceSpec::new("nope")).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::UnknownSymbol {
                kind: SymbolKind::Source,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("[counter, broken, rewinding]"),
        "{err}"
    );
    let err = plugin.source(InstanceSpec::new("broken")).unwrap_err();
    assert!(matches!(err, Error::StartFailed { .. }), "{err}");
    assert!(err.to_string().contains("the device is unplugged"), "{err}");
    assert!(plugin.status().instances.is_empty());
    let pid = plugin.status().pid.unwrap() as i32;
    drop(plugin);
    assert_reaped(pid);
}

#[test]
fn a_crashed_plugin_is_restarted_and_every_process_reaped() {
    let fake = fake("gamma", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let first = plugin.status().pid.unwrap();
    plugin.restart("test asked for it");
    wait_for("a new process", || {
        let status = plugin.status();
        status.phase == Phase::Running && status.pid.is_some_and(|p| p != first)
    });
    assert_eq!(plugin.status().restarts, 1);
    assert!(
        plugin
            .status()
            .last_error
            .unwrap()
            .contains("test asked for it")
    );
    assert_reaped(first as i32);
    drop(plugin);
    let pids = fake.pids();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert_reaped(pid);
    }
}

#[test]
fn a_failed_update_keeps_the_old_process() {
    let fake = fake("delta", "ok");
    let config = shmplug_host::SupervisorConfig {
        max_restarts: Some(2),
        handshake_timeout: Duration::from_millis(500),
        ..quick_config()
    };
    let mut spec = fake.spec.clone();
    let plugin = Plugin::start(spec.clone(), config).unwrap();
    // From now on every restart fails: the executable exits before saying hello.
    spec.env.push(("FAKE_MODE".into(), "exit".into()));
    // An update to a broken executable fails and keeps the old process.
    let err = plugin.update(spec).unwrap_err();
    assert!(matches!(err, Error::Handshake { .. }), "{err}");
    assert_eq!(plugin.status().phase, Phase::Running);
    drop(plugin);
    for pid in fake.pids() {
        assert_reaped(pid);
    }
}
