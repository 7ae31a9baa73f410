//! What a running `shmplug run` shows to `shmplug status`: its counters, the JSON answer it
//! gives, and the per-user runtime directory that holds one socket per run.
//!
//! Each run listens on `{runtime dir}/run-{pid}.sock` and removes it when it ends. The runtime
//! directory is `$SHMPLUG_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/shmplug`, else
//! `/tmp/shmplug-{uid}`; a run creates it with mode 0700, refuses to serve from one that is not
//! its user's or that other users can write to, and makes its socket readable and writable by
//! its user only (connecting needs write permission).

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use shmplug_host::{Phase, Plugin};

/// The environment variable that overrides the runtime directory.
pub const RUNTIME_DIR_ENV: &str = "SHMPLUG_RUNTIME_DIR";

/// The request a client sends (one line); the run answers with one line of JSON.
pub const REQUEST: &str = "status";

/// The directory where runs put their status sockets (see the module docs).
pub fn runtime_dir() -> PathBuf {
    let set = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty());
    if let Some(dir) = set(RUNTIME_DIR_ENV) {
        return dir.into();
    }
    if let Some(dir) = set("XDG_RUNTIME_DIR") {
        return Path::new(&dir).join("shmplug");
    }
    PathBuf::from(format!(
        "/tmp/shmplug-{}",
        rustix::process::getuid().as_raw()
    ))
}

/// The socket of the run with process id `pid`.
pub fn socket_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("run-{pid}.sock"))
}

/// The process id in a socket's file name `run-{pid}.sock`, if it is one.
pub fn socket_pid(file_name: &str) -> Option<u32> {
    file_name
        .strip_prefix("run-")?
        .strip_suffix(".sock")?
        .parse()
        .ok()
}

/// The sockets in `dir` whose run is still alive, by pid; removes those whose process is gone
/// (left by a run that was killed before it could remove its own).
pub fn live_sockets(dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        // No directory: no run ever served here.
        return Vec::new();
    };
    let mut sockets: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid = socket_pid(e.file_name().to_str()?)?;
            Some((pid, e.path()))
        })
        .filter(|(pid, path)| {
            let alive = alive(*pid);
            if !alive {
                tracing::debug!("removing `{}`: process {pid} is gone", path.display());
                let _ = std::fs::remove_file(path);
            }
            alive
        })
        .collect();
    sockets.sort();
    sockets
}

/// True while process `pid` exists (ours or not).
fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    rustix::process::test_kill_process(pid) != Err(rustix::io::Errno::SRCH)
}

/// Creates `dir` (mode 0700) if needed and checks that it is a directory of ours that no one
/// else can write to (so no one else can put or replace a socket in it).
///
/// # Errors
/// The directory cannot be created, or it is not private; the message says what to do.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    let uid = rustix::process::getuid().as_raw();
    let mode = meta.permissions().mode() & 0o777;
    if !meta.is_dir() || meta.uid() != uid || mode & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "it is not a directory of user {uid} that only they can write to (owner {}, \
                 mode {mode:o}); remove it, `chmod 700` it, or set {RUNTIME_DIR_ENV} to a \
                 directory of yours",
                meta.uid()
            ),
        ));
    }
    Ok(())
}

/// A run's counters, written by the run's loop once per batch and read by the status server
/// and the progress line. Relaxed atomics: each counter is read on its own, and a reader only
/// needs a recent value.
#[derive(Debug)]
pub struct Live {
    /// The pipeline file, made absolute where possible.
    pub pipeline: PathBuf,
    /// The plugins directory the run uses.
    pub plugins_dir: PathBuf,
    started: Instant,
    started_at: SystemTime,
    tuples: AtomicU64,
    errors: AtomicU64,
}

impl Live {
    /// Counters of a run of `pipeline` that starts now.
    pub fn new(pipeline: &Path, plugins_dir: &Path) -> Live {
        let absolute = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
        Live {
            pipeline: absolute(pipeline),
            plugins_dir: absolute(plugins_dir),
            started: Instant::now(),
            started_at: SystemTime::now(),
            tuples: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// Publishes the loop's totals so far.
    pub fn publish(&self, tuples: u64, errors: u64) {
        self.tuples.store(tuples, Ordering::Relaxed);
        self.errors.store(errors, Ordering::Relaxed);
    }

    /// Tuples sent to the sink so far.
    pub fn tuples(&self) -> u64 {
        self.tuples.load(Ordering::Relaxed)
    }

    /// Errors so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Time since the run started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// The answer to a status request: these counters and each plugin's state.
    pub fn snapshot(&self, plugins: &[&Plugin]) -> RunSnapshot {
        let uptime = self.uptime().as_secs_f64();
        let tuples = self.tuples();
        let plugins: Vec<PluginSnapshot> = plugins.iter().map(|p| plugin_snapshot(p)).collect();
        RunSnapshot {
            pid: std::process::id(),
            pipeline: self.pipeline.clone(),
            plugins_dir: self.plugins_dir.clone(),
            started_unix_ms: self
                .started_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            uptime_secs: uptime,
            tuples,
            tuples_per_sec: per_second(tuples, uptime),
            errors: self.errors(),
            restarts: plugins.iter().map(|p| p.restarts).sum(),
            plugins,
        }
    }
}

/// `count` over `secs` seconds, per second (0 before any time has passed): the rate a run's
/// and a served pipeline's snapshots show.
pub fn per_second(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

pub fn plugin_snapshot(plugin: &Plugin) -> PluginSnapshot {
    let status = plugin.status();
    let (phase, restart_attempt) = match status.phase {
        Phase::Running => ("running", None),
        Phase::Restarting { attempt } => ("restarting", Some(attempt)),
        Phase::Failed => ("failed", None),
        Phase::Stopped => ("stopped", None),
    };
    PluginSnapshot {
        name: status.name,
        phase: phase.into(),
        restart_attempt,
        pid: status.pid,
        restarts: status.restarts,
        last_error: status.last_error,
        instances: status
            .instances
            .into_iter()
            .map(|i| InstanceSnapshot {
                id: i.id,
                kind: i.kind.to_string(),
                symbol: i.symbol,
                rule_id: i.rule_id,
                live: i.live,
                replayed: i.replayed,
                duplicates: i.duplicates,
                tuples_in: i.tuples_in,
                tuples_out: i.tuples_out,
                errors: i.errors,
                starved_ms: i
                    .starved_for
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                starvations: i.starvations,
            })
            .collect(),
    }
}

/// A running `shmplug run`, as `shmplug status --format json` prints it.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct RunSnapshot {
    /// The run's process id.
    pub pid: u32,
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// The plugins directory.
    pub plugins_dir: PathBuf,
    /// When the run started, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Seconds since the run started.
    pub uptime_secs: f64,
    /// Tuples sent to the sink so far.
    pub tuples: u64,
    /// Average tuples per second since the start.
    pub tuples_per_sec: f64,
    /// Failed calls, failed sends and the like so far.
    pub errors: u64,
    /// Process restarts of all its plugins.
    pub restarts: u64,
    /// The plugins the run uses, in pipeline order.
    pub plugins: Vec<PluginSnapshot>,
}

/// One plugin in a [`RunSnapshot`] (the supervisor's `PluginStatus`).
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct PluginSnapshot {
    /// The plugin.
    pub name: String,
    /// `running`, `restarting`, `failed` or `stopped`.
    pub phase: String,
    /// Failed restarts in a row, while restarting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_attempt: Option<u32>,
    /// The plugin's current process.
    pub pid: Option<u32>,
    /// How many times its process was restarted.
    pub restarts: u64,
    /// Its last failure, in words.
    pub last_error: Option<String>,
    /// The instances it runs.
    pub instances: Vec<InstanceSnapshot>,
}

/// One instance in a [`PluginSnapshot`].
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct InstanceSnapshot {
    /// The instance id.
    pub id: u64,
    /// `source`, `sink` or `function`.
    pub kind: String,
    /// The symbol.
    pub symbol: String,
    /// The rule it belongs to.
    pub rule_id: String,
    /// True once the current process confirmed it.
    pub live: bool,
    /// A sink's tuples written again to a restarted process (at least once).
    #[serde(default)]
    pub replayed: u64,
    /// Of those, how many the dead process may have collected already.
    #[serde(default)]
    pub duplicates: u64,
    /// Tuples into the instance: written to a sink, calls sent to a function.
    #[serde(default)]
    pub tuples_in: u64,
    /// Tuples out of it: received from a source, answers a function gave.
    #[serde(default)]
    pub tuples_out: u64,
    /// Failed calls and records refused as invalid.
    #[serde(default)]
    pub errors: u64,
    /// While the instance is starved (its ring held tuples the host did not read for longer
    /// than the supervisor's `starved_after`): for how long so far, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starved_ms: Option<u64>,
    /// Episodes of starvation so far.
    #[serde(default)]
    pub starvations: u64,
}

/// `ms` since the Unix epoch as `YYYY-MM-DD hh:mm:ss UTC`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_735_689_599_999), "2024-12-31 23:59:59 UTC");
    }

    #[test]
    fn socket_names_carry_the_pid() {
        let path = socket_path(Path::new("/run/x"), 42);
        assert_eq!(path, Path::new("/run/x/run-42.sock"));
        assert_eq!(socket_pid("run-42.sock"), Some(42));
        assert_eq!(socket_pid("run-x.sock"), None);
        assert_eq!(socket_pid("other"), None);
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("a/b");
        ensure_private_dir(&private).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir(&private).unwrap_err();
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }
}
