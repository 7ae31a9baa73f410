//! A host that dies without shutting its plugin down (SIGKILL) leaves no plugin behind: the
//! SDK's parent-death signal ends the plugin.
//!
//! This test binary makes itself a child subreaper, so the orphaned plugin becomes its child and
//! can be waited for (and its cause of death checked) instead of polled; it holds this one test
//! only, because the subreaper setting is process-wide.

#![forbid(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions, kill_process, set_child_subreaper, waitpid};
use support::WAIT;
use support::host::{exists, parent_of, pidfd, wait_exit};

const MIRROR: &str = env!("CARGO_BIN_EXE_mirror-plugin");
const RUNNER: &str = env!("CARGO_BIN_EXE_host-runner");
/// How long the plugin may take to follow its host.
const FOLLOW: Duration = Duration::from_secs(10);

/// Kills and reaps a process that became our child (the orphaned plugin) if the test fails.
struct Orphan(Option<i32>);

impl Drop for Orphan {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take()
            && let Some(raw) = Pid::from_raw(pid)
        {
            let _ = kill_process(raw, Signal::KILL);
            let _ = waitpid(Some(raw), WaitOptions::empty());
        }
    }
}

/// Kills and reaps the runner if the test fails before it does.
struct Runner(std::process::Child);

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn killing_the_host_leaves_no_plugin_behind() {
    set_child_subreaper(Some(rustix::process::getpid())).expect("becoming a child subreaper");
    let mut runner = Runner(
        Command::new(RUNNER)
            .arg(MIRROR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning host-runner"),
    );
    let runner_pid = runner.0.id() as i32;
    let stdout = runner.0.stdout.take().expect("runner stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(WAIT)
        .expect("host-runner printed no pid in time");
    reader.join().expect("stdout reader");
    let plugin_pid: i32 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("host-runner printed {line:?}, not a pid"));
    let mut orphan = Orphan(Some(plugin_pid));
    assert_eq!(
        parent_of(plugin_pid),
        Some(runner_pid),
        "the plugin runs under the runner"
    );
    let plugin_fd = pidfd(plugin_pid);

    runner.0.kill().expect("killing host-runner");
    let status = runner.0.wait().expect("reaping host-runner");
    assert_eq!(status.signal(), Some(9), "host-runner: {status}");
    let killed = Instant::now();

    assert!(
        wait_exit(&plugin_fd, FOLLOW),
        "plugin {plugin_pid} still runs {FOLLOW:?} after its host was killed"
    );
    let followed = killed.elapsed();
    // Orphaned, the plugin became our child (we are its subreaper): reap it and see why it
    // ended. The parent-death signal is SIGTERM.
    let raw = Pid::from_raw(plugin_pid).expect("pid");
    let (_, status) = waitpid(Some(raw), WaitOptions::NOHANG)
        .expect("reaping the orphaned plugin")
        .expect("the plugin has exited");
    orphan.0 = None;
    assert!(
        status.terminating_signal() == Some(Signal::TERM.as_raw()) || status.exited(),
        "plugin ended with {status:?}"
    );
    assert!(!exists(plugin_pid), "plugin {plugin_pid} still exists");
    eprintln!("the plugin followed its host in {followed:?} ({status:?})");
}

#[test]
fn running_out_of_descriptors_fails_the_start_with_an_error_that_names_the_limit() {
    let out = Command::new(RUNNER)
        .args([MIRROR, "descriptor-limit", "200"])
        .stdin(Stdio::null())
        .output()
        .expect("running host-runner");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}: {text}", out.status);
    let mut lines = text.lines();
    let opened: usize = lines.next().and_then(|l| l.parse().ok()).expect("a count");
    let error = lines.next().unwrap_or_default();
    assert!(
        opened > 10,
        "only {opened} instances under a limit of 200: {error}"
    );
    assert!(
        error.contains("open-descriptor limit (200) is reached") && error.contains("ulimit -n"),
        "{error}"
    );
}
