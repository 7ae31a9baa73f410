//! eKuiper's portable plugins, unchanged, under the host.
//!
//! A plugin whose manifest says `"language": "python"` or `"go"` speaks eKuiper's portable
//! protocol (nng sockets under `/tmp`, JSON) instead of shmplug's. The supervisor runs it the
//! way eKuiper does — `python -u script '{"sendTimeout":1000}'` or
//! `executable '{"sendTimeout":1000}'`, in the plugin's directory — and a **bridge** thread in
//! the host plays a shmplug plugin towards the supervisor (hello, starts, stops,
//! pings, shared-memory rings) while it drives the process over eKuiper's protocol:
//!
//! | eKuiper channel | socket (`ipc://`) | host side |
//! | --- | --- | --- |
//! | control | `/tmp/plugin_{name}.ipc` | REP, listens; the plugin's `handshake` request is answered with `start`/`stop` commands (their `arg` a JSON string) |
//! | source data | `/tmp/{ruleId}_{opId}_{instanceId}.ipc` | PULL, listens |
//! | sink data | the same name | PUSH, dials (the plugin listens) |
//! | sink acknowledgements | `/tmp/{ruleId}_{opId}_{instanceId}_ack.ipc` | PULL, listens |
//! | function | `/tmp/func_{symbol}.ipc` | REP, listens; one per symbol, calls take turns |
//!
//! So the data handles ([`SourceReader`](crate::SourceReader), ...), restarts with replay,
//! status and `shmplug run` work for these plugins as for shmplug's: the bridge converts JSON
//! to tuples at the host's edge. The wire is [`sp`], the Scalability Protocols'
//! small published format, written here (no system library to install).
//!
//! What differs from a shmplug plugin: the process cannot set tuple timestamps (a source
//! tuple is stamped when the host receives it, as in eKuiper); liveness is the process being
//! alive (eKuiper's plugins answer no pings); socket names are global, so two hosts must not
//! run the same rule ids or function symbols at once (as two eKuiper engines must not).
//! eKuiper's SDKs ask for no parent-death signal; the host asks for one when it starts the
//! process, so a host killed with `SIGKILL` leaves no plugin behind.

pub(crate) mod bridge;
mod convert;
mod install;
pub(crate) mod launch;
pub mod sp;

pub use install::{INSTALL_SCRIPT, has_install_script, run_install_script};

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The argument eKuiper passes to every portable plugin (its `PortableConfig`).
pub const PORTABLE_CONFIG_ARG: &str = r#"{"sendTimeout":1000}"#;

/// The environment variable naming the Python interpreter for `python` plugins (eKuiper's
/// `portable.pythonBin`); default `python3`.
pub const PYTHON_ENV: &str = "SHMPLUG_PYTHON";

/// Longest message accepted from an eKuiper plugin (eKuiper sets no limit; the rings take a
/// tuple of at most half their capacity anyway).
pub const MAX_MESSAGE: usize = 64 << 20;

/// The symbols an eKuiper plugin offers, from its manifest (its SDK does not say them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Symbols {
    /// Source symbols.
    pub sources: Vec<String>,
    /// Sink symbols.
    pub sinks: Vec<String>,
    /// Function symbols.
    pub functions: Vec<String>,
}

/// True for the manifest languages eKuiper runs as portable plugins (`go`, `python`).
pub fn is_ekuiper_language(language: &str) -> bool {
    matches!(language, "go" | "python")
}

/// The program and arguments eKuiper starts a portable plugin with: for `python`, the
/// interpreter ([`PYTHON_ENV`]) with `-u` and the script; otherwise the executable; then
/// [`PORTABLE_CONFIG_ARG`].
pub fn command_line(language: &str, executable: &Path) -> (PathBuf, Vec<OsString>) {
    if language == "python" {
        let python = std::env::var_os(PYTHON_ENV).unwrap_or_else(|| "python3".into());
        (
            PathBuf::from(python),
            vec![
                "-u".into(),
                executable.as_os_str().to_owned(),
                PORTABLE_CONFIG_ARG.into(),
            ],
        )
    } else {
        (executable.to_owned(), vec![PORTABLE_CONFIG_ARG.into()])
    }
}

/// The socket paths eKuiper's SDKs use, checked to be one file name under `/tmp` that a Unix
/// socket address can hold.
pub mod paths {
    use super::*;

    /// Longest socket path (`sun_path` holds 108 bytes with the terminating zero).
    const MAX_PATH: usize = 107;

    fn checked(name: String) -> Result<PathBuf, String> {
        if name.contains('/') || name.contains('\0') || name.starts_with('.') {
            return Err(format!(
                "`{name}` cannot name an eKuiper socket under /tmp (no `/`, NUL or leading `.`)"
            ));
        }
        let path = Path::new("/tmp").join(&name);
        if path.as_os_str().len() > MAX_PATH {
            return Err(format!(
                "the eKuiper socket path `{}` is longer than the {MAX_PATH} bytes a Unix socket \
                 address holds; use shorter rule, operator or symbol names",
                path.display()
            ));
        }
        Ok(path)
    }

    /// `/tmp/plugin_{name}.ipc`.
    ///
    /// # Errors
    /// Text saying why the name cannot make a socket path.
    pub fn control(plugin: &str) -> Result<PathBuf, String> {
        checked(format!("plugin_{plugin}.ipc"))
    }

    /// `/tmp/{ruleId}_{opId}_{instanceId}.ipc`.
    ///
    /// # Errors
    /// As [`control`].
    pub fn data(rule_id: &str, op_id: &str, instance_id: u64) -> Result<PathBuf, String> {
        checked(format!("{rule_id}_{op_id}_{instance_id}.ipc"))
    }

    /// `/tmp/{ruleId}_{opId}_{instanceId}_ack.ipc`.
    ///
    /// # Errors
    /// As [`control`].
    pub fn ack(rule_id: &str, op_id: &str, instance_id: u64) -> Result<PathBuf, String> {
        checked(format!("{rule_id}_{op_id}_{instance_id}_ack.ipc"))
    }

    /// `/tmp/func_{symbol}.ipc`.
    ///
    /// # Errors
    /// As [`control`].
    pub fn function(symbol: &str) -> Result<PathBuf, String> {
        checked(format!("func_{symbol}.ipc"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_ekuipers_and_checked() {
        assert_eq!(
            paths::control("pysam").unwrap(),
            Path::new("/tmp/plugin_pysam.ipc")
        );
        assert_eq!(
            paths::data("rule1", "op1", 0).unwrap(),
            Path::new("/tmp/rule1_op1_0.ipc")
        );
        assert_eq!(
            paths::ack("rule1", "op1", 2).unwrap(),
            Path::new("/tmp/rule1_op1_2_ack.ipc")
        );
        assert_eq!(
            paths::function("revert").unwrap(),
            Path::new("/tmp/func_revert.ipc")
        );
        assert!(paths::data("../etc", "x", 0).is_err());
        assert!(paths::function(&"f".repeat(200)).is_err());
    }

    #[test]
    fn command_lines_are_ekuipers() {
        let (program, args) = command_line("go", Path::new("/p/mirror"));
        assert_eq!(program, Path::new("/p/mirror"));
        assert_eq!(args, [PORTABLE_CONFIG_ARG]);
        let (_, args) = command_line("python", Path::new("/p/pysam.py"));
        assert_eq!(args, ["-u", "/p/pysam.py", PORTABLE_CONFIG_ARG]);
    }
}
