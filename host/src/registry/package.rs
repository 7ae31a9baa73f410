//! Bringing a package into a staging directory: copying a directory, or extracting a zip
//! without letting any entry escape.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// A directory inside the plugins directory that is removed on drop unless [`kept`](Self::keep).
#[derive(Debug)]
pub(crate) struct Staging {
    path: PathBuf,
    armed: bool,
}

impl Staging {
    /// Creates `root/.{prefix}-{name}-{pid}-{n}` (a fresh name).
    pub(crate) fn create(root: &Path, prefix: &str, name: &str) -> Result<Staging> {
        let pid = std::process::id();
        for n in 0u32.. {
            let path = root.join(format!(".{prefix}-{name}-{pid}-{n}"));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Staging { path, armed: true }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("creating staging directory", path)(e)),
            }
        }
        unreachable!("u32 exhausted creating staging directories")
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Disarms the clean-up: the directory was renamed into place.
    pub(crate) fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Copies the directory `from` into `to` (which exists), keeping permissions. Symbolic links
/// are followed (their targets are copied).
pub(crate) fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let entries = fs::read_dir(from).map_err(Error::io("reading package directory", from))?;
    for entry in entries {
        let entry = entry.map_err(Error::io("reading package directory", from))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let meta = fs::metadata(&source).map_err(Error::io("inspecting", &source))?;
        if meta.is_dir() {
            fs::create_dir(&target).map_err(Error::io("creating directory", &target))?;
            copy_dir(&source, &target)?;
        } else {
            fs::copy(&source, &target).map_err(Error::io("copying", &source))?;
        }
    }
    Ok(())
}

/// Extracts every entry of the zip at `zip` into `to`, refusing entries that are absolute,
/// contain `..`, or are symbolic links. Unix permissions stored in the zip are applied.
pub(crate) fn extract_zip(zip: &Path, to: &Path) -> Result<()> {
    let file = fs::File::open(zip).map_err(Error::io("opening zip", zip))?;
    let zip_err = |e: zip::result::ZipError| Error::Zip {
        zip: zip.to_owned(),
        detail: e.to_string(),
    };
    let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
    // Check every name first, so that a bad entry leaves nothing extracted at all.
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(zip_err)?;
        if entry_path(entry.name()).is_none() || entry.is_symlink() {
            return Err(Error::UnsafeZipEntry {
                zip: zip.to_owned(),
                entry: entry.name().to_owned(),
            });
        }
    }
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zip_err)?;
        let Some(relative) = entry_path(entry.name()) else {
            unreachable!("entry names were checked above");
        };
        let target = to.join(relative);
        if entry.is_dir() {
            fs::create_dir_all(&target).map_err(Error::io("creating directory", &target))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(Error::io("creating directory", parent))?;
        }
        let mut out = fs::File::create(&target).map_err(Error::io("creating", &target))?;
        io::copy(&mut entry, &mut out).map_err(Error::io("extracting", &target))?;
        if let Some(mode) = entry.unix_mode() {
            let mode = mode & 0o777;
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(Error::io("setting permissions of", &target))?;
        }
    }
    Ok(())
}

/// The relative path a zip entry name stands for, or `None` if it is absolute, names a drive,
/// or climbs with `..`.
pub(crate) fn entry_path(name: &str) -> Option<PathBuf> {
    // Zips written on Windows may use backslashes.
    let normalized = name.replace('\\', "/");
    if normalized.starts_with('/') || normalized.as_bytes().get(1) == Some(&b':') {
        return None;
    }
    let mut path = PathBuf::new();
    for component in Path::new(&normalized).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(path)
}

/// Every `*.json` file name directly inside `dir`, sorted (for "did you mean" hints).
pub(crate) fn json_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// Subdirectories directly inside `dir`.
pub(crate) fn subdirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}
