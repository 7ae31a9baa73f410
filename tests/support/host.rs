//! The host tests' side (`tests/host_*.rs`): the mirror plugin installed as a real package,
//! supervisor settings for a shared two-core machine, and ways to look at processes and
//! descriptors.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, pidfd_open};
use shmplug_host::registry::{InstallOptions, Registry};
use shmplug_host::{PluginSpec, SupervisorConfig};

/// The mirror example's manifest.
pub const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/mirror/mirror.json"
);

/// A plugins directory holding the mirror plugin, and the spec that runs it from there.
pub struct Installed {
    pub dir: tempfile::TempDir,
    pub spec: PluginSpec,
}

impl Installed {
    /// A scratch directory beside the plugins directory (for sink output).
    pub fn scratch(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

/// Builds the mirror package (`executable` copied as `mirror` beside `mirror.json`) in a new
/// temporary directory and installs it with [`Registry`].
pub fn install_mirror(executable: &str) -> Installed {
    let dir = tempfile::tempdir().expect("temporary directory");
    let package = dir.path().join("package").join("mirror");
    std::fs::create_dir_all(&package).expect("package directory");
    std::fs::copy(executable, package.join("mirror")).expect("copying the plugin executable");
    std::fs::copy(MANIFEST, package.join("mirror.json")).expect("copying mirror.json");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins directory");
    let registry = Registry::open(&plugins).expect("opening the registry");
    let info = registry
        .install(&package, &InstallOptions::default())
        .expect("installing the mirror package");
    assert_eq!(info.name, "mirror");
    assert!(info.executable.starts_with(&plugins), "{info:?}");
    let spec = PluginSpec::from_info(&registry.describe("mirror").expect("describe"));
    Installed { dir, spec }
}

/// Short time-outs and spins: tests share two cores with each other and other work.
pub fn config() -> SupervisorConfig {
    SupervisorConfig {
        handshake_timeout: Duration::from_secs(20),
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_secs(10),
        start_timeout: Duration::from_secs(20),
        stop_timeout: Duration::from_secs(10),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ring_capacity: 1 << 16,
        handle_spin: Duration::from_micros(5),
        ..SupervisorConfig::default()
    }
}

/// The entries of `/proc/self/fd`, each with what it points to (for failure messages).
pub fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .filter_map(Result::ok)
        .map(|entry| {
            let target = std::fs::read_link(entry.path())
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "(closed)".into());
            format!("{} -> {target}", entry.file_name().to_string_lossy())
        })
        .collect();
    fds.sort();
    fds
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`; `None` if it is gone.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so split after the
    // last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A pidfd for `pid`, readable once the process has exited (zombie or reaped).
pub fn pidfd(pid: i32) -> std::os::fd::OwnedFd {
    let raw = Pid::from_raw(pid).expect("pid");
    pidfd_open(raw, PidfdFlags::empty()).unwrap_or_else(|e| panic!("pidfd_open({pid}): {e}"))
}

/// Waits at most `timeout` for the process behind `pidfd` to exit; true if it did.
pub fn wait_exit(pidfd: &std::os::fd::OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = rustix::time::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos().into(),
        };
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(Errno::INTR) => continue,
            Err(e) => panic!("polling a pidfd: {e}"),
        }
    }
}

/// True if `/proc/<pid>` exists.
pub fn exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Shuts `plugin` down and checks its process was reaped (not a zombie of ours, and gone).
pub fn shut_down(plugin: shmplug_host::Plugin) {
    let pid = plugin.status().pid.expect("a running process") as i32;
    plugin.shutdown();
    let raw = Pid::from_raw(pid).expect("pid");
    match rustix::process::waitpid(Some(raw), rustix::process::WaitOptions::NOHANG) {
        Err(Errno::CHILD) => {}
        other => panic!("plugin process {pid} was not reaped: waitpid says {other:?}"),
    }
    assert!(!exists(pid), "plugin process {pid} still exists");
}
