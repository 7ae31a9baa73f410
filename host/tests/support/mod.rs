//! Helpers for the host's integration tests: the fake plugin and ways to check on processes.
#![allow(dead_code)]

pub mod fake;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shmplug_host::{PluginSpec, SupervisorConfig};

/// Generous bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// A state directory and a spec that runs this test binary as the fake plugin.
pub struct Fake {
    pub state: tempfile::TempDir,
    pub spec: PluginSpec,
}

/// The fake plugin `name` in `mode`. The test binary must have a test named
/// `fake_plugin_entry` that calls [`fake::entry`].
pub fn fake(name: &str, mode: &str) -> Fake {
    let state = tempfile::tempdir().expect("state dir");
    let spec = PluginSpec::new(name, std::env::current_exe().expect("current_exe"))
        .arg("--exact")
        .arg("fake_plugin_entry")
        .arg("--nocapture")
        .arg("--test-threads=1")
        .env(fake::MODE_ENV, mode)
        .env(fake::NAME_ENV, name)
        .env(fake::STATE_ENV, state.path());
    Fake { state, spec }
}

impl Fake {
    pub fn path(&self, file: &str) -> PathBuf {
        self.state.path().join(file)
    }

    /// Pids of every fake process started so far.
    pub fn pids(&self) -> Vec<i32> {
        fake::pids_in(self.state.path())
    }
}

/// Short time-outs so that failures show up quickly.
pub fn quick_config() -> SupervisorConfig {
    SupervisorConfig {
        handshake_timeout: Duration::from_secs(10),
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_secs(5),
        start_timeout: Duration::from_secs(10),
        stop_timeout: Duration::from_secs(2),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ring_capacity: 1 << 16,
        handle_spin: Duration::from_micros(5),
        ..SupervisorConfig::default()
    }
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Polls `condition` until it holds or [`WAIT`] passes.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asserts that `pid` was reaped: it is not a child of ours any more (no zombie) and is gone.
pub fn assert_reaped(pid: i32) {
    let pid = rustix::process::Pid::from_raw(pid).expect("pid");
    match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG) {
        Err(rustix::io::Errno::CHILD) => {}
        other => panic!("process {pid:?} was not reaped: waitpid says {other:?}"),
    }
    wait_for("the process to disappear", || {
        !Path::new(&format!("/proc/{}", pid.as_raw_nonzero())).exists()
    });
}

/// True once process `pid` has exited: gone from `/proc`, or a zombie waiting for whoever
/// inherited it (the tests cannot reap a process that is not their child).
pub fn gone_or_zombie(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}
