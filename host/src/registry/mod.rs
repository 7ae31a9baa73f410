//! The plugin registry: a plugins directory holding one directory per installed plugin.
//!
//! ```text
//! plugins/
//!   mirror/
//!     mirror.json        the manifest (eKuiper's fields, see PluginManifest)
//!     mirror             the executable the manifest names
//!     sources/random.yaml, ...   anything else the package carries
//! ```
//!
//! Installing (from a directory or a zip) copies the package into a staging directory inside
//! the plugins directory, checks it there, and renames it into place: a failed install leaves
//! nothing behind, and a replaced plugin is swapped in one rename. Staging directories start
//! with a dot and are never listed.

mod manifest;
mod package;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use manifest::PluginManifest;

use crate::error::{Error, Result};
use package::Staging;

/// Environment variable that overrides the default plugins directory.
pub const PLUGINS_DIR_ENV: &str = "SHMPLUG_PLUGINS_DIR";

/// An installed plugin: its name, directory, manifest, and absolute executable path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    /// The plugin's name (its directory's name and its manifest's file stem).
    pub name: String,
    /// The plugin's directory.
    pub dir: PathBuf,
    /// The manifest.
    pub manifest: PluginManifest,
    /// The executable, absolute.
    pub executable: PathBuf,
}

/// One entry of [`Registry::list`]: a plugin, or a directory whose package is broken.
#[derive(Debug)]
pub enum Listed {
    /// A valid plugin.
    Plugin(PluginInfo),
    /// A directory in the plugins directory that does not hold a valid plugin.
    Broken {
        /// The directory's name.
        name: String,
        /// What is wrong with it.
        error: Error,
    },
}

/// How [`Registry::install`] treats its package.
#[derive(Clone, Debug, Default)]
pub struct InstallOptions {
    /// Install under this name instead of the package's (directory name, or zip file stem).
    pub name: Option<String>,
    /// Replace a plugin of the same name instead of failing with [`Error::AlreadyInstalled`].
    pub force: bool,
}

/// A plugins directory.
///
/// # Examples
/// ```no_run
/// use shmplug_host::registry::{InstallOptions, Registry};
///
/// let registry = Registry::open(Registry::default_dir()?)?;
/// let info = registry.install("mirror.zip".as_ref(), &InstallOptions::default())?;
/// println!("installed {} {}", info.name, info.manifest.version);
/// # Ok::<(), shmplug_host::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    /// The default plugins directory: `$SHMPLUG_PLUGINS_DIR` if set, else
    /// `$XDG_DATA_HOME/shmplug/plugins`, else `$HOME/.local/share/shmplug/plugins`.
    ///
    /// # Errors
    /// [`Error::NoPluginsDir`] if none of these variables is set.
    pub fn default_dir() -> Result<PathBuf> {
        let var = |name| std::env::var_os(name).filter(|v: &std::ffi::OsString| !v.is_empty());
        if let Some(dir) = var(PLUGINS_DIR_ENV) {
            return Ok(PathBuf::from(dir));
        }
        if let Some(data) = var("XDG_DATA_HOME") {
            return Ok(PathBuf::from(data).join("shmplug").join("plugins"));
        }
        if let Some(home) = var("HOME") {
            return Ok(PathBuf::from(home).join(".local/share/shmplug/plugins"));
        }
        Err(Error::NoPluginsDir)
    }

    /// Opens the plugins directory `root`, creating it if needed.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Registry> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(Error::io("creating plugins directory", &root))?;
        Ok(Registry { root })
    }

    /// The plugins directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every directory in the plugins directory, sorted by name, each a valid plugin or the
    /// reason it is not.
    ///
    /// # Errors
    /// [`Error::Io`] if the plugins directory cannot be read.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let entries =
            fs::read_dir(&self.root).map_err(Error::io("reading plugins directory", &self.root))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Error::io("reading plugins directory", &self.root))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            names.push(name);
        }
        names.sort();
        Ok(names
            .into_iter()
            .map(|name| match self.describe(&name) {
                Ok(info) => Listed::Plugin(info),
                Err(error) => Listed::Broken { name, error },
            })
            .collect())
    }

    /// The installed plugin `name`.
    ///
    /// # Errors
    /// [`Error::NotInstalled`], or the manifest errors of [`PluginManifest::load`].
    pub fn describe(&self, name: &str) -> Result<PluginInfo> {
        let dir = self.installed_dir(name)?;
        load(name, &dir, &dir)
    }

    /// Installs the package at `package` (a directory, or a `.zip` file) and returns the
    /// installed plugin.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::AlreadyInstalled`] (without
    /// [`force`](InstallOptions::force)), [`Error::UnsafeZipEntry`], [`Error::Zip`],
    /// [`Error::NoManifest`], the manifest errors of [`PluginManifest::load`], [`Error::Io`].
    /// Nothing is left in the plugins directory after an error.
    pub fn install(&self, package: &Path, options: &InstallOptions) -> Result<PluginInfo> {
        self.install_checked(package, options, |_| Ok(()))
    }

    /// As [`install`](Self::install), but first runs `check` on the plugin as unpacked in a
    /// staging directory (its executable can be started from there), and installs nothing if
    /// it fails. `shmplug plugins install` starts the executable there and compares its hello
    /// with the manifest ([`PluginManifest::check_hello`]).
    ///
    /// # Errors
    /// As [`install`](Self::install), and `check`'s error.
    pub fn install_checked(
        &self,
        package: &Path,
        options: &InstallOptions,
        check: impl FnOnce(&PluginInfo) -> Result<()>,
    ) -> Result<PluginInfo> {
        let name = match &options.name {
            Some(name) => name.clone(),
            None => package_name(package)?,
        };
        validate_name(&name)?;
        let target = self.root.join(&name);
        if !options.force && target.exists() {
            return Err(Error::AlreadyInstalled { name, dir: target });
        }
        let staging = Staging::create(&self.root, "staging", &name)?;
        let meta = fs::metadata(package).map_err(Error::io("opening package", package))?;
        if meta.is_dir() {
            package::copy_dir(package, staging.path())?;
        } else {
            package::extract_zip(package, staging.path())?;
        }
        check_layout(&name, package, staging.path())?;
        // Validate where it will run from, so the absolute executable path is the final one.
        load(&name, staging.path(), &target).map_err(|e| as_given(e, staging.path(), package))?;
        check(&load(&name, staging.path(), staging.path())?)?;
        self.commit(&name, staging, &target, options.force)?;
        load(&name, &target, &target)
    }

    /// Replaces the installed plugin `name` with the package at `package` (a new version).
    /// A running supervisor picks the new executable up with
    /// [`Plugin::update`](crate::Plugin::update).
    ///
    /// # Errors
    /// [`Error::NotInstalled`] if no such plugin is installed, and as [`install`](Self::install).
    pub fn update(&self, name: &str, package: &Path) -> Result<PluginInfo> {
        self.installed_dir(name)?;
        let options = InstallOptions {
            name: Some(name.to_owned()),
            force: true,
        };
        self.install(package, &options)
    }

    /// Removes the installed plugin `name` and all its files.
    ///
    /// # Errors
    /// [`Error::NotInstalled`], or [`Error::Io`].
    pub fn remove(&self, name: &str) -> Result<()> {
        let dir = self.installed_dir(name)?;
        // Move it aside first so a half-deleted plugin is never visible under its name.
        let trash = Staging::create(&self.root, "removed", name)?;
        fs::rename(&dir, trash.path()).map_err(Error::io("removing plugin", &dir))?;
        drop(trash);
        Ok(())
    }

    /// The directory of installed plugin `name`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] or [`Error::NotInstalled`].
    fn installed_dir(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(Error::NotInstalled {
                name: name.to_owned(),
                dir: self.root.clone(),
            });
        }
        Ok(dir)
    }

    fn commit(&self, name: &str, staging: Staging, target: &Path, force: bool) -> Result<()> {
        let exists = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty
            )
        };
        if force && target.exists() {
            // Rename the old plugin over an empty directory, the new one into place, then
            // delete the old one (when `old` drops).
            let old = Staging::create(&self.root, "replaced", name)?;
            fs::rename(target, old.path()).map_err(Error::io("moving old plugin aside", target))?;
            if let Err(e) = fs::rename(staging.path(), target) {
                let _ = fs::rename(old.path(), target);
                old.keep();
                return Err(Error::io("installing plugin", target)(e));
            }
        } else if let Err(e) = fs::rename(staging.path(), target) {
            if exists(&e) {
                return Err(Error::AlreadyInstalled {
                    name: name.to_owned(),
                    dir: target.to_owned(),
                });
            }
            return Err(Error::io("installing plugin", target)(e));
        }
        staging.keep();
        Ok(())
    }
}

/// Loads the manifest of plugin `name` whose files are in `files`, reporting the executable as
/// it will be found under `dir`.
fn load(name: &str, files: &Path, dir: &Path) -> Result<PluginInfo> {
    let path = files.join(format!("{name}.json"));
    if !path.is_file() {
        return Err(Error::NoManifest {
            package: files.to_owned(),
            name: name.to_owned(),
            hint: String::new(),
        });
    }
    let manifest = PluginManifest::load(name, &path, files)?;
    let dir = std::path::absolute(dir).map_err(Error::io("resolving", dir))?;
    Ok(PluginInfo {
        name: name.to_owned(),
        executable: manifest.executable_in(&dir),
        dir,
        manifest,
    })
}

/// `error` with every path inside the staging directory `staged` shown inside `package`, the
/// package the user gave (a directory, or a zip whose entries show as `package.zip/entry`):
/// the staging directory is an internal detail that is gone by the time the user reads this.
fn as_given(mut error: Error, staged: &Path, package: &Path) -> Error {
    let path = match &mut error {
        Error::InvalidManifest { path, .. }
        | Error::NameMismatch { path, .. }
        | Error::MissingExecutable { path, .. }
        | Error::NotExecutable { path, .. }
        | Error::Io { path, .. } => path,
        _ => return error,
    };
    if let Ok(inside) = path.strip_prefix(staged) {
        *path = package.join(inside);
    }
    error
}

/// Fails with advice when the staged package has no `{name}.json` at its root.
fn check_layout(name: &str, package: &Path, staged: &Path) -> Result<()> {
    let file = format!("{name}.json");
    if staged.join(&file).is_file() {
        return Ok(());
    }
    let mut hint = String::new();
    let found = package::json_files(staged);
    if !found.is_empty() {
        hint = format!(
            " (found {}: install under the manifest's name with --name, or rename the package)",
            found.join(", ")
        );
    } else if let Some(nested) = package::subdirs(staged)
        .into_iter()
        .find(|d| d.join(&file).is_file())
    {
        let folder = nested.file_name().unwrap_or_default().to_string_lossy();
        hint = format!(
            " (found it inside the folder `{folder}/`: package that folder's contents, not the \
             folder)"
        );
    }
    Err(Error::NoManifest {
        package: package.to_owned(),
        name: name.to_owned(),
        hint,
    })
}

/// The name a package installs under: a directory's name, or a file's stem (`mirror.zip`).
fn package_name(package: &Path) -> Result<String> {
    let raw = if package.extension() == Some(OsStr::new("zip")) {
        package.file_stem()
    } else {
        package.file_name()
    };
    let name = raw
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .unwrap_or_default();
    validate_name(&name)?;
    Ok(name)
}

/// Accepts names that are safe as a directory name and a file stem.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
