//! Arbitrary bytes as a plugin package, `fuzz.zip`, installed into an empty plugins directory:
//! the installer must refuse what it cannot use with an error, never panic, never write outside
//! the plugins directory, and leave nothing behind when it refuses.

#![no_main]

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shmplug_host::registry::{InstallOptions, Registry};

/// The names directly inside `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The directory every input is installed from and into: `fuzz.zip` beside `plugins/`. On
/// tmpfs where there is one (`/dev/shm`): creating and removing directories on a disk file
/// system makes each input cost milliseconds.
fn work_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("shmplug-fuzz-")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("a temporary directory")
    })
    .path()
}

fuzz_target!(|data: &[u8]| {
    // The plugins directory is empty before every input: the checks below leave it so.
    let tmp = work_dir();
    let zip = tmp.join("fuzz.zip");
    fs::write(&zip, data).unwrap();
    let registry = Registry::open(tmp.join("plugins")).unwrap();

    match registry.install(&zip, &InstallOptions::default()) {
        Ok(info) => {
            assert_eq!(info.name, "fuzz");
            assert!(info.executable.starts_with(registry.root().join("fuzz")));
            assert!(info.executable.is_file());
            assert_eq!(entries(registry.root()), ["fuzz"]);
            registry
                .remove("fuzz")
                .expect("an installed plugin can be removed");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty());
        }
    }
    // Nothing left in the plugins directory, nothing written beside it.
    assert_eq!(entries(registry.root()), Vec::<String>::new());
    assert_eq!(entries(tmp), ["fuzz.zip", "plugins"]);
});
