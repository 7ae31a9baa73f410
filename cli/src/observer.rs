//! The thread beside `shmplug run`'s loop: it answers `shmplug status` on the run's socket and,
//! on a terminal, redraws a one-line progress display. The loop only stores two counters per
//! batch ([`Live::publish`]); everything else happens here.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use shmplug_host::Plugin;

use crate::live::{self, Live, REQUEST};

/// How often the progress line is redrawn.
const TICK: Duration = Duration::from_millis(250);

/// The most time one status client may take to send its request and receive the answer; a
/// stuck client delays the next client (and the progress line) by at most this, never the run.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(500);

/// The longest request line accepted.
const MAX_REQUEST: u64 = 256;

/// The run's listening status socket; the file is removed on drop.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Listens on `run-{pid}.sock` in `dir`, creating `dir` (private) if needed.
    ///
    /// # Errors
    /// The directory is unusable or the socket cannot be bound.
    pub fn bind(dir: &Path) -> io::Result<Server> {
        live::ensure_private_dir(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("`{}`: {e}", dir.display())))?;
        // Sockets of runs that were killed before they could remove theirs.
        live::live_sockets(dir);
        let path = live::socket_path(dir, std::process::id());
        // A file under our pid is left from a dead process that had the same pid.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("`{}`: {e}", path.display())))?;
        let server = Server { listener, path };
        // Connecting needs write permission: only this user may ask.
        std::fs::set_permissions(&server.path, std::fs::Permissions::from_mode(0o600))?;
        server.listener.set_nonblocking(true)?;
        Ok(server)
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers every client waiting to be accepted.
    fn serve_ready(&self, live: &Live, plugins: &[&Plugin]) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = answer(stream, || live.snapshot(plugins)) {
                        tracing::debug!("a `shmplug status` client went wrong: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("accepting a `shmplug status` client: {e}");
                    return;
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(
                "cannot remove the status socket `{}`: {e}",
                self.path.display()
            );
        }
    }
}

/// Reads one request line and writes one line of JSON, all within [`CLIENT_TIMEOUT`].
fn answer(stream: UnixStream, snapshot: impl FnOnce() -> live::RunSnapshot) -> io::Result<()> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new((&stream).take(MAX_REQUEST));
    let mut request = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        reader.get_ref().get_ref().set_read_timeout(Some(left))?;
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let used = newline.map_or(available.len(), |i| i + 1);
        request.extend_from_slice(&available[..used]);
        reader.consume(used);
        if newline.is_some() {
            break;
        }
    }
    let request = String::from_utf8_lossy(&request);
    let reply = if request.trim() == REQUEST {
        serde_json::to_string(&snapshot()).map_err(io::Error::other)?
    } else {
        serde_json::json!({
            "error": format!("unknown request `{}`; send `{REQUEST}` and a newline", request.trim())
        })
        .to_string()
    };
    let left = deadline.saturating_duration_since(Instant::now());
    stream.set_write_timeout(Some(left.max(Duration::from_millis(1))))?;
    (&stream).write_all(reply.as_bytes())?;
    (&stream).write_all(b"\n")
}

/// The running observer thread; [`finish`](Observer::finish) stops it.
#[derive(Debug)]
pub struct Observer<'scope> {
    /// Dropping it wakes the thread (its read end sees the hang-up).
    stop: OwnedFd,
    thread: ScopedJoinHandle<'scope, ()>,
}

impl<'scope> Observer<'scope> {
    /// Starts the thread in `scope` if there is anything to do: a `server` to answer, or a
    /// `progress` line to draw.
    ///
    /// # Errors
    /// The wake-up pipe or the thread cannot be created.
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        live: &'env Live,
        plugins: Vec<&'env Plugin>,
        server: Option<Server>,
        progress: bool,
    ) -> io::Result<Option<Observer<'scope>>> {
        if server.is_none() && !progress {
            return Ok(None);
        }
        let (wake, stop) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let thread = std::thread::Builder::new()
            .name("shmplug-observer".into())
            .spawn_scoped(scope, move || {
                observe(&wake, live, &plugins, server.as_ref(), progress);
            })?;
        Ok(Some(Observer { stop, thread }))
    }

    /// Stops the thread: the progress line is cleared and the socket file removed when this
    /// returns.
    pub fn finish(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::warn!("the status and progress thread panicked");
        }
    }
}

fn observe(
    wake: &OwnedFd,
    live: &Live,
    plugins: &[&Plugin],
    server: Option<&Server>,
    progress: bool,
) {
    let mut line = progress.then(|| Progress::new(live));
    let mut next_draw = Instant::now() + TICK;
    loop {
        let timeout = match line {
            Some(_) => next_draw.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        let mut fds = vec![PollFd::new(wake, PollFlags::IN)];
        if let Some(server) = server {
            fds.push(PollFd::new(&server.listener, PollFlags::IN));
        }
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                tracing::warn!("status and progress stop: waiting failed: {e}");
                break;
            }
        }
        if !fds[0].revents().is_empty() {
            break;
        }
        let incoming = fds.get(1).is_some_and(|fd| !fd.revents().is_empty());
        if let (true, Some(server)) = (incoming, server) {
            server.serve_ready(live, plugins);
        }
        if let Some(line) = &mut line
            && Instant::now() >= next_draw
        {
            line.draw(live, plugins);
            next_draw = Instant::now() + TICK;
        }
    }
    if let Some(line) = line {
        line.clear();
    }
}

/// The progress line on stderr (a terminal), drawn by indicatif, which fits it to the
/// terminal's width.
struct Progress {
    bar: ProgressBar,
    last: (Instant, u64),
}

impl Progress {
    fn new(live: &Live) -> Progress {
        Progress::with_target(live, ProgressDrawTarget::stderr())
    }

    fn with_target(live: &Live, target: ProgressDrawTarget) -> Progress {
        let bar = ProgressBar::with_draw_target(None, target);
        // `wide_msg` takes the width that is left, cutting the counters at the terminal's edge
        // rather than wrapping them onto a new line at each redraw.
        if let Ok(style) = ProgressStyle::with_template("{spinner} {wide_msg}") {
            bar.set_style(style);
        }
        Progress {
            bar,
            last: (Instant::now(), live.tuples()),
        }
    }

    fn draw(&mut self, live: &Live, plugins: &[&Plugin]) {
        let now = Instant::now();
        let tuples = live.tuples();
        let (then, before) = self.last;
        let seconds = now.duration_since(then).as_secs_f64();
        let rate = if seconds > 0.0 {
            tuples.saturating_sub(before) as f64 / seconds
        } else {
            0.0
        };
        self.last = (now, tuples);
        let restarts: u64 = plugins.iter().map(|p| p.status().restarts).sum();
        self.bar.set_message(format!(
            "{tuples} tuples  {rate:.0} tuples/s  {} errors  {restarts} restarts  {:.1} s",
            live.errors(),
            live.uptime().as_secs_f64()
        ));
        self.bar.tick();
    }

    fn clear(self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;

    use super::*;

    fn ask(path: &Path, request: &str) -> UnixStream {
        let mut client = UnixStream::connect(path).unwrap();
        client.write_all(request.as_bytes()).unwrap();
        client
    }

    fn answer_of(client: UnixStream) -> serde_json::Value {
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut line = String::new();
        BufReader::new(client).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn answers_requests_and_removes_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("runtime");
        let live = Live::new(Path::new("pipeline.toml"), dir.path());
        live.publish(42, 1);
        let server = Server::bind(&runtime).unwrap();
        let path = server.path().to_owned();
        assert_eq!(path, live::socket_path(&runtime, std::process::id()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let good = ask(&path, "status\n");
        let bad = ask(&path, "shutdown\n");
        // Says nothing and hangs up: the server gives up on it and answers the next one.
        let silent = UnixStream::connect(&path).unwrap();
        drop(silent);
        let after = ask(&path, "status\n");
        server.serve_ready(&live, &[]);

        let run: live::RunSnapshot = serde_json::from_value(answer_of(good)).unwrap();
        assert_eq!(
            (run.pid, run.tuples, run.errors),
            (std::process::id(), 42, 1)
        );
        assert!(run.plugins.is_empty());
        let refused = answer_of(bad);
        assert!(
            refused["error"].as_str().unwrap().contains("`shutdown`"),
            "{refused}"
        );
        assert_eq!(answer_of(after)["tuples"], 42);

        drop(server);
        assert!(!path.exists());
    }

    #[test]
    fn binding_removes_the_sockets_of_dead_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = live::socket_path(dir.path(), dead);
        std::fs::write(&stale, b"").unwrap();
        let unrelated = dir.path().join("notes.txt");
        std::fs::write(&unrelated, b"").unwrap();
        let server = Server::bind(dir.path()).unwrap();
        assert!(!stale.exists(), "the dead run's socket is still there");
        assert!(unrelated.exists() && server.path().exists());
    }

    #[test]
    fn the_progress_line_shows_the_runs_counters() {
        let dir = tempfile::tempdir().unwrap();
        let live = Live::new(Path::new("p.toml"), dir.path());
        let mut progress = Progress::with_target(&live, ProgressDrawTarget::hidden());
        live.publish(1234, 5);
        progress.draw(&live, &[]);
        let line = progress.bar.message();
        assert!(
            line.starts_with("1234 tuples  ") && line.contains("  5 errors  0 restarts  "),
            "{line}"
        );
        progress.clear();
    }

    #[test]
    fn a_stuck_client_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let live = Live::new(Path::new("p.toml"), dir.path());
        let server = Server::bind(dir.path()).unwrap();
        // Connected, never writes, never hangs up: the read times out.
        let _stuck = UnixStream::connect(server.path()).unwrap();
        let after = ask(server.path(), "status\n");
        server.serve_ready(&live, &[]);
        assert_eq!(answer_of(after)["tuples"], 0);
    }
}
