//! eKuiper's official Python SDK (`pip install ekuiper`, with pynng) running a plugin written
//! from its documentation, unchanged, under the host: source, sink and function through the
//! usual handles, restart with replay, and no socket file left in /tmp.
//!
//! These tests need a Python with the `ekuiper` and `pynng` packages: `SHMPLUG_PYTHON`, else
//! `target/ekuiper-venv/bin/python` (which `tests/ekuiper/ci.sh` creates). Without one they
//! say so and pass, unless `SHMPLUG_REQUIRE_EKUIPER=1` (CI sets it), which makes them fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use shmplug_host::ekuiper::{PORTABLE_CONFIG_ARG, Symbols};
use shmplug_host::transport::{Tuple, Value, ValueRef};
use shmplug_host::{Error, InstanceSpec, Plugin, PluginSpec, Protocol, SupervisorConfig};

const WAIT: Duration = Duration::from_secs(20);

/// eKuiper's socket names are global: one test at a time uses the plugin.
static SERIAL: Mutex<()> = Mutex::new(());

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A Python that imports `ekuiper` and `pynng`, or `None` (after saying why).
fn python() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("SHMPLUG_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([workspace().join("target/ekuiper-venv/bin/python")])
        .collect();
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", "import ekuiper, pynng"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    assert!(
        std::env::var_os("SHMPLUG_REQUIRE_EKUIPER").is_none(),
        "SHMPLUG_REQUIRE_EKUIPER is set but no Python with `ekuiper` and `pynng` was found \
         (set SHMPLUG_PYTHON, or run tests/ekuiper/ci.sh)"
    );
    eprintln!("skipped: no Python with `ekuiper` and `pynng` (see tests/ekuiper/ci.sh)");
    None
}

fn plugin_dir() -> PathBuf {
    workspace().join("tests/ekuiper/pycount")
}

fn spec(python: &Path) -> PluginSpec {
    let dir = plugin_dir();
    PluginSpec {
        args: vec![
            "-u".into(),
            dir.join("pycount.py").into(),
            PORTABLE_CONFIG_ARG.into(),
        ],
        dir: Some(dir),
        protocol: Protocol::Ekuiper(Symbols {
            sources: vec!["counter".into()],
            sinks: vec!["lines".into()],
            functions: vec!["revert".into()],
        }),
        ..PluginSpec::new("pycount", python)
    }
}

fn config() -> SupervisorConfig {
    SupervisorConfig {
        handshake_timeout: Duration::from_secs(20),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ring_capacity: 1 << 16,
        ..SupervisorConfig::default()
    }
}

/// Every socket file of eKuiper's naming that these tests may create.
fn leftover_sockets(rule: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/tmp")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            name == "plugin_pycount.ipc" || name == "func_revert.ipc" || name.starts_with(rule)
        })
        .collect()
}

#[test]
fn source_function_and_sink_through_the_handles() {
    let Some(python) = python() else { return };
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let out = tempfile::tempdir().unwrap();
    let lines = out.path().join("lines.jsonl");
    let rule = "ekpy1";
    {
        let plugin = Plugin::start(spec(&python), config()).unwrap();
        let hello = plugin.hello().unwrap();
        assert_eq!(hello.functions, ["revert"]);

        let mut source = plugin
            .source(
                InstanceSpec::new("counter")
                    .rule(rule, "src")
                    .property("count", 30),
            )
            .unwrap();
        for i in 0..30i64 {
            let tuple = source.recv_timeout(WAIT).unwrap().expect("a tuple in time");
            let tuple = tuple.to_owned();
            assert_eq!(tuple.fields["id"], Value::Int(i));
            assert_eq!(tuple.fields["name"], Value::String(format!("n{i}")));
            assert_eq!(tuple.fields["value"], Value::Float(i as f64 * 1.5));
            assert_eq!(
                tuple.fields["tags"],
                Value::List(vec![Value::String("a".into()), Value::Int(i)])
            );
            assert_eq!(tuple.meta["topic"], Value::String("counter".into()));
            assert_eq!(tuple.meta["rule"], Value::String(rule.into()));
            assert!(tuple.timestamp > 0, "stamped when received");
        }

        let mut revert = plugin
            .function(InstanceSpec::new("revert").rule(rule, "f"))
            .unwrap();
        assert_eq!(
            revert.call(&[ValueRef::String("shmplug")]).unwrap(),
            Value::String("gulpmhs".into())
        );
        let err = revert.call(&[ValueRef::Int(3)]).unwrap_err();
        assert!(
            matches!(&err, Error::FunctionFailed { .. })
                && err.to_string().contains("revert needs a string"),
            "{err}"
        );
        // Many calls, each a round trip.
        for i in 0..200 {
            let text = format!("x{i}y");
            let back = revert.call(&[ValueRef::String(&text)]).unwrap();
            assert_eq!(back, Value::String(text.chars().rev().collect()));
        }

        let mut sink = plugin
            .sink(
                InstanceSpec::new("lines")
                    .rule(rule, "sink")
                    .property("path", lines.to_str().unwrap())
                    .property("requireAck", true),
            )
            .unwrap();
        for i in 0..20i64 {
            let tuple = Tuple::new(i)
                .with_field("id", i)
                .with_field("s", format!("v{i}"))
                .with_field("b", Value::Bytes(vec![1, 2, 3]));
            sink.send(&tuple).unwrap();
        }
        sink.stop().unwrap();
        let written = std::fs::read_to_string(&lines).unwrap();
        let written: Vec<serde_json::Value> = written
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(written.len(), 20);
        for (i, line) in written.iter().enumerate() {
            assert_eq!(
                *line,
                serde_json::json!({"id": i, "s": format!("v{i}"), "b": "AQID"})
            );
        }
        source.stop().unwrap();
        drop(revert);
        plugin.shutdown();
    }
    assert_eq!(leftover_sockets(rule), Vec::<PathBuf>::new());
}

#[test]
fn a_killed_plugin_is_restarted_and_its_instances_reopened() {
    let Some(python) = python() else { return };
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let rule = "ekpy2";
    {
        let plugin = Plugin::start(spec(&python), config()).unwrap();
        let mut revert = plugin
            .function(InstanceSpec::new("revert").rule(rule, "f"))
            .unwrap();
        assert_eq!(
            revert.call(&[ValueRef::String("ab")]).unwrap(),
            Value::String("ba".into())
        );
        let mut source = plugin
            .source(
                InstanceSpec::new("counter")
                    .rule(rule, "src")
                    .property("count", 5),
            )
            .unwrap();
        for _ in 0..5 {
            source.recv_timeout(WAIT).unwrap().expect("a tuple in time");
        }
        let pid = plugin.status().pid.unwrap();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        // The replayed source starts counting again in the new process.
        let first = source
            .recv_timeout(WAIT)
            .unwrap()
            .expect("a tuple after the restart")
            .to_owned();
        assert_eq!(first.fields["id"], Value::Int(0));
        let deadline = Instant::now() + WAIT;
        while plugin.status().pid == Some(pid) && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_ne!(plugin.status().pid, Some(pid));
        assert_eq!(plugin.status().restarts, 1);
        assert_eq!(
            revert.call(&[ValueRef::String("cd")]).unwrap(),
            Value::String("dc".into())
        );
        drop(source);
        drop(revert);
        plugin.shutdown();
    }
    assert_eq!(leftover_sockets(rule), Vec::<PathBuf>::new());
}

#[test]
fn a_plugin_that_never_handshakes_fails_its_start_clearly() {
    let Some(python) = python() else { return };
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let spec = PluginSpec {
        args: vec!["-c".into(), "import sys; sys.exit(3)".into()],
        ..spec(&python)
    };
    let err = Plugin::start(spec, config()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("exited before its handshake") && text.contains("3"),
        "{text}"
    );
    assert!(!Path::new("/tmp/plugin_pycount.ipc").exists());
}

/// eKuiper's SDKs re-send `handshake` on their REQ sockets after 5 s without a command or a
/// call (the keep-alive of eKuiper's PRs #3965/#3967); commands and calls after such a pause
/// must still be answered (eKuiper's issue #3962 was calls stopping after idle periods).
#[test]
fn calls_and_commands_work_after_the_plugins_idle_keepalive() {
    let Some(python) = python() else { return };
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let rule = "ekpy3";
    {
        let plugin = Plugin::start(spec(&python), config()).unwrap();
        let mut revert = plugin
            .function(InstanceSpec::new("revert").rule(rule, "f"))
            .unwrap();
        assert_eq!(
            revert.call(&[ValueRef::String("ab")]).unwrap(),
            Value::String("ba".into())
        );
        // Idle past the SDK's 5 s receive time-out on both its control and function sockets
        // (the pause is what is tested, not a synchronisation).
        std::thread::sleep(Duration::from_millis(6500));
        assert_eq!(
            revert.call(&[ValueRef::String("xyz")]).unwrap(),
            Value::String("zyx".into())
        );
        let mut source = plugin
            .source(
                InstanceSpec::new("counter")
                    .rule(rule, "src")
                    .property("count", 3),
            )
            .unwrap();
        for i in 0..3i64 {
            let tuple = source
                .recv_timeout(WAIT)
                .unwrap()
                .expect("a tuple")
                .to_owned();
            assert_eq!(tuple.fields["id"], Value::Int(i));
        }
        source.stop().unwrap();
        drop(revert);
        plugin.shutdown();
    }
    assert_eq!(leftover_sockets(rule), Vec::<PathBuf>::new());
}

/// A hot update swaps the process under running instances, as eKuiper's `PUT` does.
#[test]
fn an_update_swaps_the_process_under_running_instances() {
    let Some(python) = python() else { return };
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let rule = "ekpy4";
    {
        let plugin = Plugin::start(spec(&python), config()).unwrap();
        let mut revert = plugin
            .function(InstanceSpec::new("revert").rule(rule, "f"))
            .unwrap();
        assert_eq!(
            revert.call(&[ValueRef::String("ab")]).unwrap(),
            Value::String("ba".into())
        );
        let old = plugin.status().pid;
        plugin.update(spec(&python)).unwrap();
        assert_ne!(plugin.status().pid, old);
        assert_eq!(
            revert.call(&[ValueRef::String("uv")]).unwrap(),
            Value::String("vu".into())
        );
        drop(revert);
        plugin.shutdown();
    }
    assert_eq!(leftover_sockets(rule), Vec::<PathBuf>::new());
}

/// Set in the helper process that plays a host for [`a_host_killed_with_sigkill_leaves_no_plugin`]:
/// the directory where it writes the plugin's pid.
const HELPER_ENV: &str = "SHMPLUG_TEST_EKUIPER_HOST";

/// The helper host: starts the plugin, writes its pid, and waits to be killed (at most
/// [`WAIT`]). Does nothing as an ordinary test.
#[test]
fn host_helper_entry() {
    let Some(dir) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let python = python().expect("the parent test found a Python");
    // A plugin that says `handshake` and then waits, whatever happens to its host (eKuiper's
    // Python SDK happens to exit when its control connection drops; its Go SDK and a busy
    // plugin need not).
    let stubborn = "import pynng, time\n\
                    s = pynng.Req0()\n\
                    s.dial('ipc:///tmp/plugin_pycount.ipc', block=True)\n\
                    s.send(b'handshake')\n\
                    time.sleep(60)\n";
    let spec = PluginSpec {
        args: vec!["-c".into(), stubborn.into()],
        ..spec(&python)
    };
    let plugin = Plugin::start(spec, config()).unwrap();
    let pid = plugin.status().pid.unwrap();
    let path = Path::new(&dir).join("pid");
    std::fs::write(path.with_extension("tmp"), pid.to_string()).unwrap();
    std::fs::rename(path.with_extension("tmp"), &path).unwrap();
    std::thread::sleep(WAIT);
}

/// True while `pid` runs (a zombie or a missing process does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

#[test]
fn a_host_killed_with_sigkill_leaves_no_plugin() {
    let Some(python) = python() else { return };
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let mut host = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "host_helper_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, dir.path())
        .env("SHMPLUG_PYTHON", &python)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("pid");
    let deadline = Instant::now() + WAIT;
    while !pid_file.exists() {
        assert!(
            Instant::now() < deadline,
            "the helper host did not start the plugin"
        );
        assert!(
            host.try_wait().unwrap().is_none(),
            "the helper host ended early"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert!(alive(pid));
    host.kill().unwrap();
    host.wait().unwrap();
    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the plugin {pid} outlived its host"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A killed host cannot clean up; the next start replaces the stale control socket.
    let _ = std::fs::remove_file("/tmp/plugin_pycount.ipc");
}
