//! The host's error type: one enum for the registry, the supervisor, the data handles and the
//! command-line tool. Every message names what failed (plugin, symbol, instance, file) and,
//! where there is one, the fix.

use std::path::PathBuf;
use std::time::Duration;

/// Which kind of instance a handle or a start concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SymbolKind {
    /// A source: the plugin produces tuples, the host reads them.
    Source,
    /// A sink: the host writes tuples, the plugin consumes them.
    Sink,
    /// A function: the host sends calls, the plugin answers.
    Function,
}

impl std::fmt::Display for SymbolKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SymbolKind::Source => "source",
            SymbolKind::Sink => "sink",
            SymbolKind::Function => "function",
        })
    }
}

/// Everything that can go wrong in the host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- registry ----
    /// A file-system operation on a plugin package or the plugins directory failed.
    #[error("{context} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// No plugins directory could be chosen.
    #[error(
        "cannot choose a plugins directory: neither XDG_DATA_HOME nor HOME is set; pass \
         --plugins-dir or set SHMPLUG_PLUGINS_DIR"
    )]
    NoPluginsDir,
    /// A plugin name that cannot be a directory name.
    #[error(
        "`{name}` is not a valid plugin name: use letters, digits, `_`, `-` and `.` (not first), \
         at most 64 characters"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// The package has no `{name}.json` at its root.
    #[error(
        "plugin package `{}` has no `{name}.json` at its root{hint}; the manifest must sit at \
         the top of the package, beside the executable",
        package.display()
    )]
    NoManifest {
        /// The package (directory or zip file).
        package: PathBuf,
        /// The plugin name the manifest is named after.
        name: String,
        /// What was found instead, as advice (may be empty).
        hint: String,
    },
    /// The manifest is not valid JSON or does not have the expected shape.
    #[error(
        "{}:{line}:{column}: invalid plugin manifest: {detail}; it must be one JSON object with \
         `version`, `language`, `executable` and at least one of `sources`, `sinks`, `functions`",
        path.display()
    )]
    InvalidManifest {
        /// The manifest file.
        path: PathBuf,
        /// Line of the problem (1-based; 0 if unknown).
        line: usize,
        /// Column of the problem (1-based; 0 if unknown).
        column: usize,
        /// What the JSON parser or the field check said.
        detail: String,
    },
    /// The manifest's `name` field differs from the name the plugin is installed under.
    #[error(
        "manifest `{}` says its name is `{found}` but the plugin is being installed as \
         `{expected}`; make them equal (rename the package or the `name` field, or pass --name)",
        path.display()
    )]
    NameMismatch {
        /// The manifest file.
        path: PathBuf,
        /// The install name.
        expected: String,
        /// The manifest's `name`.
        found: String,
    },
    /// The manifest's symbols differ from those the executable announces in its hello.
    #[error(
        "plugin `{plugin}`: its manifest and its executable disagree: {detail}; make \
         `{plugin}.json` list exactly the symbols the executable offers (its PluginConfig)"
    )]
    SymbolsMismatch {
        /// The plugin.
        plugin: String,
        /// Which symbols one side has and the other lacks.
        detail: String,
    },
    /// The manifest lists no source, sink or function.
    #[error(
        "plugin `{name}` declares no symbols; list at least one name in `sources`, `sinks` or \
         `functions` of {name}.json"
    )]
    NoSymbols {
        /// The plugin.
        name: String,
    },
    /// The manifest's executable is not in the package.
    #[error(
        "plugin `{name}`: executable `{}` named in {name}.json is not in the package; add it \
         beside {name}.json or fix the `executable` field",
        path.display()
    )]
    MissingExecutable {
        /// The plugin.
        name: String,
        /// Where the executable should be.
        path: PathBuf,
    },
    /// The manifest's executable lacks execute permission, or is not a regular file.
    #[error(
        "plugin `{name}`: `{}` is not an executable file; build it into the package and mark it \
         executable (`chmod +x`)",
        path.display()
    )]
    NotExecutable {
        /// The plugin.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// A zip entry would be written outside the plugin's directory.
    #[error(
        "zip `{}` contains entry `{entry}`, which would be written outside the plugin directory \
         (absolute path, `..` or a link); rebuild the zip with paths relative to its root",
        zip.display()
    )]
    UnsafeZipEntry {
        /// The zip file.
        zip: PathBuf,
        /// The offending entry name.
        entry: String,
    },
    /// The zip file could not be read.
    #[error("cannot read zip `{}`: {detail}; is it a complete zip archive?", zip.display())]
    Zip {
        /// The zip file.
        zip: PathBuf,
        /// What the zip reader said.
        detail: String,
    },
    /// A plugin of that name is installed already.
    #[error(
        "a plugin named `{name}` is already installed in `{}`; pass --force to replace it, or \
         use `shmplug plugins update`",
        dir.display()
    )]
    AlreadyInstalled {
        /// The plugin.
        name: String,
        /// Its directory.
        dir: PathBuf,
    },
    /// No plugin of that name is installed.
    #[error(
        "no plugin named `{name}` is installed in `{}`; `shmplug plugins list` shows what is",
        dir.display()
    )]
    NotInstalled {
        /// The plugin.
        name: String,
        /// The plugins directory.
        dir: PathBuf,
    },

    // ---- supervisor ----
    /// The plugin executable could not be started.
    #[error("cannot start plugin `{plugin}` (`{}`): {source}", executable.display())]
    Spawn {
        /// The plugin.
        plugin: String,
        /// The executable.
        executable: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The plugin did not send `Hello` in time; it was killed.
    #[error(
        "plugin `{plugin}` did not say hello within {timeout:?}; is `{}` a shmplug plugin (built \
         with shmplug-sdk and calling its start function)? It was killed. If it loads slowly, \
         raise the handshake time-out",
        executable.display()
    )]
    HandshakeTimeout {
        /// The plugin.
        plugin: String,
        /// The executable.
        executable: PathBuf,
        /// How long the host waited.
        timeout: Duration,
    },
    /// The plugin broke the handshake: it exited, or said something other than a valid `Hello`.
    #[error("plugin `{plugin}` failed the handshake: {detail}")]
    Handshake {
        /// The plugin.
        plugin: String,
        /// What happened, with the fix where there is one.
        detail: String,
    },
    /// The plugin speaks an incompatible control protocol version; it was refused.
    #[error("plugin `{plugin}` refused: {detail}")]
    VersionMismatch {
        /// The plugin.
        plugin: String,
        /// The transport's version-mismatch text (both versions and the fix).
        detail: String,
    },
    /// The plugin does not offer the symbol asked for.
    #[error(
        "plugin `{plugin}` has no {kind} `{symbol}`; it offers {kind}s: [{}]",
        offered.join(", ")
    )]
    UnknownSymbol {
        /// The plugin.
        plugin: String,
        /// Source, sink or function.
        kind: SymbolKind,
        /// The symbol asked for.
        symbol: String,
        /// What the plugin's `Hello` offered.
        offered: Vec<String>,
    },
    /// The plugin answered a start with `Failed`.
    #[error("plugin `{plugin}` could not start {kind} `{symbol}` (instance {instance}): {reason}")]
    StartFailed {
        /// The plugin.
        plugin: String,
        /// Source, sink or function.
        kind: SymbolKind,
        /// The symbol.
        symbol: String,
        /// The instance id.
        instance: u64,
        /// The plugin's explanation.
        reason: String,
    },
    /// The function refused the argument list a rule gives it (its `validate_args`), before
    /// anything started.
    #[error("function `{symbol}` of plugin `{plugin}` refuses its arguments: {message}")]
    ArgsRefused {
        /// The plugin.
        plugin: String,
        /// The symbol.
        symbol: String,
        /// The plugin's explanation.
        message: String,
    },
    /// The plugin is not running and cannot take requests now.
    #[error("plugin `{plugin}` is unavailable: {reason}")]
    Unavailable {
        /// The plugin.
        plugin: String,
        /// Why (the last failure, or that it was shut down).
        reason: String,
    },

    // ---- data handles ----
    /// An operation on an instance did not complete in time.
    #[error(
        "{op} on {kind} `{symbol}` of plugin `{plugin}` (instance {instance}) timed out after \
         {timeout:?}; the plugin may be slow, wedged or restarting"
    )]
    TimedOut {
        /// What was being done (`"start"`, `"call"`, ...).
        op: &'static str,
        /// The plugin.
        plugin: String,
        /// Source, sink or function.
        kind: SymbolKind,
        /// The symbol.
        symbol: String,
        /// The instance id.
        instance: u64,
        /// The time-out.
        timeout: Duration,
    },
    /// The source ended (the plugin closed its ring), or the sink's plugin stopped reading.
    #[error("{kind} `{symbol}` of plugin `{plugin}` (instance {instance}) ended its stream")]
    EndOfStream {
        /// The plugin.
        plugin: String,
        /// Source or sink.
        kind: SymbolKind,
        /// The symbol.
        symbol: String,
        /// The instance id.
        instance: u64,
    },
    /// The instance was stopped or can no longer run.
    #[error("{kind} `{symbol}` of plugin `{plugin}` (instance {instance}) is gone: {reason}")]
    InstanceGone {
        /// The plugin.
        plugin: String,
        /// Source, sink or function.
        kind: SymbolKind,
        /// The symbol.
        symbol: String,
        /// The instance id.
        instance: u64,
        /// Why.
        reason: String,
    },
    /// The function returned an error for a call.
    #[error("function `{symbol}` of plugin `{plugin}` (instance {instance}) failed: {message}")]
    FunctionFailed {
        /// The plugin.
        plugin: String,
        /// The symbol.
        symbol: String,
        /// The instance id.
        instance: u64,
        /// The plugin's error message.
        message: String,
    },
    /// A call was in flight when the plugin's process died, and the function is not safe to
    /// repeat (its plugin said so, or the client turned retries off), so it was not run again.
    #[error(
        "function `{symbol}` of plugin `{plugin}` (instance {instance}): the call was in flight \
         when the plugin's process died ({reason}); it was not run again, since the function is \
         not safe to repeat; call it again if its effects allow"
    )]
    CallInterrupted {
        /// The plugin.
        plugin: String,
        /// The symbol.
        symbol: String,
        /// The instance id.
        instance: u64,
        /// Why the process went, as the supervisor saw it.
        reason: String,
    },
    /// The data plane failed for an instance (a corrupt ring, an invalid tuple, a tuple too
    /// large for the ring).
    #[error("{kind} `{symbol}` of plugin `{plugin}` (instance {instance}): {source}")]
    Data {
        /// The plugin.
        plugin: String,
        /// Source, sink or function.
        kind: SymbolKind,
        /// The symbol.
        symbol: String,
        /// The instance id.
        instance: u64,
        /// The transport's error.
        #[source]
        source: shmplug_transport::Error,
    },
    /// New rings could not be made: the host process has as many descriptors open as it may.
    #[error(
        "plugin `{plugin}`: no descriptor left for another instance's rings: {}; each source or \
         sink instance holds 3 descriptors in the host and a function 6: raise the limit \
         (`ulimit -n`) or run fewer instances ({source})",
        if *system { "the system-wide table of open files is full".to_owned() } else {
            format!("the host's open-descriptor limit ({}) is reached", limit.map_or("unlimited".to_owned(), |n| n.to_string()))
        }
    )]
    DescriptorLimit {
        /// The plugin.
        plugin: String,
        /// The process's soft limit of open descriptors (`None`: unlimited).
        limit: Option<u64>,
        /// True if the system-wide table is full rather than the process's limit.
        system: bool,
        /// The transport's error.
        #[source]
        source: shmplug_transport::Error,
    },
    /// A transport operation outside any instance failed (creating rings, the control socket).
    #[error("plugin `{plugin}`: {source}")]
    Transport {
        /// The plugin.
        plugin: String,
        /// The transport's error.
        #[source]
        source: shmplug_transport::Error,
    },
    /// An eKuiper package's `install.sh` failed; nothing was installed.
    #[error(
        "plugin `{plugin}`: its install.sh failed ({status}); nothing was installed. Its output \
         above says why"
    )]
    InstallScript {
        /// The plugin.
        plugin: String,
        /// How the script ended.
        status: String,
    },
}

impl Error {
    /// True for [`Error::EndOfStream`]: the source (or sink) ended normally.
    pub fn is_end_of_stream(&self) -> bool {
        matches!(self, Error::EndOfStream { .. })
    }

    /// True for [`Error::TimedOut`].
    pub fn is_timed_out(&self) -> bool {
        matches!(self, Error::TimedOut { .. })
    }

    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }
}

/// Result alias for the host.
pub type Result<T, E = Error> = std::result::Result<T, E>;
