//! Running the `shmplug` command in tests: each call gets a plugins directory and a runtime
//! directory of its own (so that runs of concurrent tests do not see each other), and a
//! running `shmplug run` is a [`Child`] that is killed and reaped on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The runtime directory (status sockets) used with plugins directory `plugins`: a sibling
/// named `{plugins}.runtime`, so that it lies in the same temporary directory.
pub fn runtime_dir(plugins: &Path) -> PathBuf {
    let mut name = plugins.as_os_str().to_owned();
    name.push(".runtime");
    PathBuf::from(name)
}

/// `shmplug --plugins-dir PLUGINS ARGS...`, ready to run.
pub fn command(plugins: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shmplug"));
    command
        .arg("--plugins-dir")
        .arg(plugins)
        .args(args)
        .env("RUST_LOG", "warn")
        .env("SHMPLUG_RUNTIME_DIR", runtime_dir(plugins))
        .stdin(Stdio::null());
    command
}

/// Runs `shmplug --plugins-dir PLUGINS ARGS...` to its end and returns its output.
pub fn shmplug(plugins: &Path, args: &[&str]) -> Output {
    command(plugins, args).output().expect("run shmplug")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A `shmplug` process running in the background, its stdout and stderr going to files.
/// Dropping it kills and reaps it.
pub struct Child {
    child: std::process::Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Child {
    /// Starts `shmplug --plugins-dir PLUGINS ARGS...`, writing its output into `dir`.
    pub fn spawn(plugins: &Path, args: &[&str], dir: &Path) -> Child {
        let stdout = dir.join("stdout");
        let stderr = dir.join("stderr");
        let child = command(plugins, args)
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start shmplug");
        Child {
            child,
            stdout,
            stderr,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).expect("signal shmplug");
    }

    /// Waits (polling, up to `timeout`) for the process to exit; panics if it does not.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "shmplug did not exit within {timeout:?}; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
