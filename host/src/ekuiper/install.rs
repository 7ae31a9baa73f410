//! An eKuiper package's `install.sh`, which eKuiper runs on every install
//! (`/bin/sh install.sh <shellParas...>` in the plugin's directory) and shmplug runs only when
//! asked: a script from a package is code run with the installer's rights.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The script's file name, at the package's root.
pub const INSTALL_SCRIPT: &str = "install.sh";

/// True if the unpacked package at `dir` carries an `install.sh`.
pub fn has_install_script(dir: &Path) -> bool {
    dir.join(INSTALL_SCRIPT).is_file()
}

/// Runs `/bin/sh install.sh args...` in `dir` (as eKuiper does), its output going to this
/// process's, and waits for it. Does nothing if there is no script.
///
/// # Errors
/// [`Error::Spawn`] if the shell cannot start; [`Error::InstallScript`] if the script fails.
pub fn run_install_script(plugin: &str, dir: &Path, args: &[String]) -> Result<()> {
    if !has_install_script(dir) {
        return Ok(());
    }
    let status = Command::new("/bin/sh")
        .arg(INSTALL_SCRIPT)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .status()
        .map_err(|source| Error::Spawn {
            plugin: plugin.to_owned(),
            executable: dir.join(INSTALL_SCRIPT),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::InstallScript {
            plugin: plugin.to_owned(),
            status: status.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_in_the_plugin_directory_with_its_arguments() {
        let dir = tempfile::tempdir().unwrap();
        run_install_script("p", dir.path(), &[]).unwrap();
        std::fs::write(
            dir.path().join(INSTALL_SCRIPT),
            "echo \"$1 $2\" > installed.txt\n",
        )
        .unwrap();
        assert!(has_install_script(dir.path()));
        run_install_script("p", dir.path(), &["a".into(), "b c".into()]).unwrap();
        let written = std::fs::read_to_string(dir.path().join("installed.txt")).unwrap();
        assert_eq!(written, "a b c\n");
        std::fs::write(dir.path().join(INSTALL_SCRIPT), "exit 4\n").unwrap();
        let err = run_install_script("p", dir.path(), &[]).unwrap_err();
        assert!(err.to_string().contains("exit status: 4"), "{err}");
    }
}
