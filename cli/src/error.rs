//! The command's errors: the host's, and what only the command can get wrong.

use std::path::PathBuf;

/// What can go wrong in a `shmplug` command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host library's error (registry, supervisor, handles), as it says it.
    #[error(transparent)]
    Host(#[from] shmplug_host::Error),
    /// A pipeline file is invalid.
    #[error("pipeline `{}`: {detail}", path.display())]
    Pipeline {
        /// The pipeline file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// A pipeline's function stage was refused before anything opened (the function refused
    /// its argument list, say).
    #[error("pipeline function {stage}: {detail}")]
    Stage {
        /// Which stage: its position and the field it fills.
        stage: String,
        /// What is wrong (what the host or the plugin said).
        detail: String,
    },
    /// `shmplug bench` could not run as asked, or a measurement failed.
    #[error("bench: {0}")]
    Bench(String),
    /// `shmplug serve` could not start or stopped on an error.
    #[error("serve: {0}")]
    Serve(String),
    /// `shmplug plugins new` cannot write the crate as asked.
    #[error("plugins new: {0}")]
    New(String),
}

impl Error {
    /// A file or socket operation on `path` failed while doing `context`.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Host(shmplug_host::Error::Io {
            context,
            path: path.into(),
            source,
        })
    }
}

/// Result alias for the command.
pub type Result<T, E = Error> = std::result::Result<T, E>;
