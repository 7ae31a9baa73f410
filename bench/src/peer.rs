//! The other processes of a measurement: starting them, meeting them on a Unix socket, and
//! what they run ([`peer_main`]).

use std::ffi::OsString;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{BenchError, Case, Launcher, STUCK};

/// A peer process, killed and reaped when dropped unless it was [`wait`](Self::wait)ed for.
#[derive(Debug)]
pub(super) struct Peer {
    child: Option<Child>,
    role: String,
}

impl Peer {
    /// Starts `launcher`'s program as peer `role` with `args`.
    pub(super) fn spawn(
        launcher: &Launcher,
        role: &str,
        args: &[OsString],
    ) -> Result<Peer, BenchError> {
        let child = Command::new(&launcher.program)
            .args(&launcher.peer_args)
            .arg(role)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(BenchError::io(format!(
                "starting {} as the {role} peer",
                launcher.program.display()
            )))?;
        Ok(Peer {
            child: Some(child),
            role: role.to_owned(),
        })
    }

    /// Waits for the peer to exit on its own, at most [`STUCK`].
    ///
    /// # Errors
    /// If it exits with a failure, or is still running after [`STUCK`] (then it is killed).
    pub(super) fn wait(mut self) -> Result<(), BenchError> {
        let mut child = self.child.take().expect("waited for once");
        let deadline = Instant::now() + STUCK;
        let mut pause = Duration::from_micros(100);
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(BenchError::Protocol(format!(
                        "the {} peer failed ({status}); its error is above",
                        self.role
                    )));
                }
                Ok(None) if Instant::now() < deadline => {
                    // Polling the exit: nothing here depends on the peer's timing.
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BenchError::Protocol(format!(
                        "the {} peer did not exit within {STUCK:?}",
                        self.role
                    )));
                }
                Err(e) => return Err(BenchError::io("waiting for a peer")(e)),
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Unix socket in a private temporary directory where a peer connects; the directory goes
/// with it.
#[derive(Debug)]
pub(super) struct Rendezvous {
    listener: UnixListener,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rendezvous {
    /// Binds a new socket.
    pub(super) fn new() -> Result<Rendezvous, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("shmplug-bench-")
            .tempdir()
            .map_err(BenchError::io("making a temporary directory"))?;
        let path = dir.path().join("peer.sock");
        let listener =
            UnixListener::bind(&path).map_err(BenchError::io("binding the peer socket"))?;
        Ok(Rendezvous {
            listener,
            path,
            _dir: dir,
        })
    }

    /// The socket's path, for the peer's command line.
    pub(super) fn path(&self) -> OsString {
        self.path.clone().into_os_string()
    }

    /// Accepts the peer's connection, waiting at most [`STUCK`]; if `peer` exits first, says
    /// so.
    pub(super) fn accept(&self, peer: &mut Peer) -> Result<UnixStream, BenchError> {
        use rustix::event::{PollFd, PollFlags, poll};
        let deadline = Instant::now() + STUCK;
        loop {
            let mut fds = [PollFd::new(&self.listener, PollFlags::IN)];
            let timeout = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 50_000_000,
            };
            match poll(&mut fds, Some(&timeout)) {
                Ok(n) if n > 0 => break,
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(BenchError::io("waiting for a peer to connect")(e.into())),
            }
            if let Some(child) = peer.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(BenchError::Protocol(format!(
                    "the {} peer exited ({status}) before connecting; its error is above",
                    peer.role
                )));
            }
            if Instant::now() >= deadline {
                return Err(BenchError::Protocol(format!(
                    "the {} peer did not connect within {STUCK:?}",
                    peer.role
                )));
            }
        }
        let (stream, _) = self
            .listener
            .accept()
            .map_err(BenchError::io("accepting a peer"))?;
        stream
            .set_read_timeout(Some(STUCK))
            .and_then(|()| stream.set_write_timeout(Some(STUCK)))
            .map_err(BenchError::io("setting socket time-outs"))?;
        Ok(stream)
    }
}

/// Connects a peer to the bench's [`Rendezvous`] socket at `path`, with time-outs set.
pub(super) fn connect(path: &str) -> Result<UnixStream, BenchError> {
    let stream =
        UnixStream::connect(path).map_err(BenchError::io(format!("connecting to {path}")))?;
    stream
        .set_read_timeout(Some(STUCK))
        .and_then(|()| stream.set_write_timeout(Some(STUCK)))
        .map_err(BenchError::io("setting socket time-outs"))?;
    Ok(stream)
}

/// Parses a peer's `<case> <path-or-name> <count>` arguments.
pub(super) fn case_args(args: &[String]) -> Result<(Case, &str, u64), BenchError> {
    match args {
        [case, target, count] => {
            let case = Case::from_name(case)
                .ok_or_else(|| BenchError::Protocol(format!("unknown case `{case}`")))?;
            let count = count
                .parse()
                .map_err(|_| BenchError::Protocol(format!("`{count}` is not a count")))?;
            Ok((case, target, count))
        }
        _ => Err(BenchError::Protocol(format!(
            "expected <case> <target> <count>, got {args:?}"
        ))),
    }
}

/// Runs the peer side of a measurement: `args` is a role (`json-uds`, `iceoryx2`,
/// `pingpong`) and its arguments, as the measuring side passed them.
///
/// # Errors
/// Whatever stopped the peer; the measuring side reports it too.
pub fn peer_main(args: &[String]) -> Result<(), BenchError> {
    let Some((role, rest)) = args.split_first() else {
        return Err(BenchError::Protocol(
            "this is the other process of `shmplug bench`, which starts it; run `shmplug bench`"
                .into(),
        ));
    };
    match role.as_str() {
        "json-uds" => super::json_uds::peer(rest),
        "json-nng" => super::json_nng::peer(rest),
        "pingpong" => super::physical::pingpong_peer(rest),
        #[cfg(feature = "iceoryx2")]
        "iceoryx2" => super::iceoryx2::peer(rest),
        other => Err(BenchError::Protocol(format!(
            "unknown peer role `{other}`; this is the other process of `shmplug bench`"
        ))),
    }
}
