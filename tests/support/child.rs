//! The parent's side: start a helper binary with one end of a socket pair, and make sure it is
//! reaped whatever happens to the test.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::{Errno, FdFlags, fcntl_setfd};
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use super::{SOCKET_ENV, WAIT};

/// Held while one end of a socket pair is inheritable: another test thread spawning a child at
/// that moment would otherwise leak the descriptor into its child, and a socket kept open by
/// the wrong process never reports end of file.
static SPAWN: Mutex<()> = Mutex::new(());

/// A child process that is killed and reaped when dropped (a failing test leaves no orphan and
/// no zombie).
#[derive(Debug)]
pub struct Child {
    name: String,
    inner: std::process::Child,
    /// Becomes readable when the child exits: waiting with a time-out needs no sleeping.
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
}

impl Child {
    /// Starts `program` with `args` and one end of a new socket pair inherited (its number in
    /// [`SOCKET_ENV`]); returns the child and the other end, with [`WAIT`] time-outs.
    pub fn spawn(program: &str, args: &[&str]) -> (Child, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("socket pair");
        let inner = {
            let _inheritable = SPAWN.lock().unwrap_or_else(PoisonError::into_inner);
            fcntl_setfd(&theirs, FdFlags::empty()).expect("clearing FD_CLOEXEC");
            let spawned = Command::new(program)
                .args(args)
                .env(SOCKET_ENV, theirs.as_raw_fd().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn();
            // Close our copy of the child's end while still holding the lock.
            drop(theirs);
            spawned.unwrap_or_else(|e| panic!("spawning {program}: {e}"))
        };
        let name = format!(
            "{} {}",
            program.rsplit('/').next().unwrap_or(program),
            args.join(" ")
        );
        // A zombie still has its pid, so this works even if the child already exited.
        let pidfd = match pidfd_open(Pid::from_child(&inner), PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                let mut inner = inner;
                let _ = inner.kill();
                let _ = inner.wait();
                panic!("pidfd_open for {name}: {e}");
            }
        };
        ours.set_read_timeout(Some(WAIT)).expect("read time-out");
        ours.set_write_timeout(Some(WAIT)).expect("write time-out");
        let child = Child {
            name,
            inner,
            pidfd,
            status: None,
        };
        (child, ours)
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    /// Sends SIGKILL (harmless if the child already exited; it is reaped by `wait`/drop).
    pub fn kill(&mut self) {
        if self.status.is_none() {
            self.inner.kill().expect("killing the child");
        }
    }

    /// Waits for the child to exit, at most `timeout`, and reaps it.
    ///
    /// # Panics
    /// If it is still running after `timeout` (it is then killed and reaped on drop).
    pub fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ts = rustix::time::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: left.subsec_nanos().into(),
            };
            let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                Ok(0) => panic!("{} still running after {timeout:?}", self.name),
                Ok(_) => break,
                Err(Errno::INTR) => continue,
                Err(e) => panic!("polling the pidfd of {}: {e}", self.name),
            }
        }
        let status = self.inner.wait().expect("reaping the child");
        self.status = Some(status);
        status
    }

    /// Waits (at most [`WAIT`]) and asserts the child exited with status 0.
    pub fn expect_success(&mut self) {
        let status = self.wait_timeout(WAIT);
        assert!(status.success(), "{} failed: {status}", self.name);
    }

    /// Waits (at most [`WAIT`]) and asserts the child was ended by `signal`.
    pub fn expect_signal(&mut self, signal: i32) {
        let status = self.wait_timeout(WAIT);
        assert_eq!(
            status.signal(),
            Some(signal),
            "{} should have died of signal {signal}: {status}",
            self.name
        );
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.inner.kill();
            let _ = self.inner.wait();
        }
    }
}

/// Asserts that process `pid` no longer exists: reaped, not left as a zombie.
pub fn assert_gone(pid: u32) {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("inspecting /proc/{pid}: {e}"),
        Ok(stat) => panic!("process {pid} still exists: {stat}"),
    }
}
