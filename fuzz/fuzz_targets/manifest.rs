//! Arbitrary bytes as a plugin's `{name}.json`: the manifest reader must refuse what it cannot
//! use with an error, never panic, and whatever it accepts must name an executable file inside
//! the plugin's directory, declare a symbol, and write out as JSON that reads back the same.

#![no_main]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shmplug_host::registry::PluginManifest;

/// A plugin directory made once per run: an executable `run`, a plain file `data`, a folder
/// `bin` holding an executable `tool`. Nothing here is written by the target.
fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, dir) = DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let dir = tmp.path().join("fuzz");
        let exe = |path: PathBuf| {
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        exe(dir.join("run"));
        exe(dir.join("bin/tool"));
        std::fs::write(dir.join("data"), "not a program").unwrap();
        (tmp, dir)
    });
    dir
}

fuzz_target!(|data: &[u8]| {
    let dir = plugin_dir();
    let path = dir.join("fuzz.json");
    let manifest = match PluginManifest::from_bytes("fuzz", data, &path, dir) {
        Ok(manifest) => manifest,
        Err(e) => {
            // Every refusal has a message that names the file or the plugin.
            let text = e.to_string();
            assert!(text.contains("fuzz"), "{text}");
            return;
        }
    };
    assert!(manifest.name.as_deref().is_none_or(|n| n == "fuzz"));
    assert!(manifest.symbol_count() > 0);
    assert!(!manifest.language.trim().is_empty());
    let exe = manifest.executable_in(dir);
    assert!(
        exe.starts_with(dir),
        "{} escapes {}",
        exe.display(),
        dir.display()
    );
    assert!(exe.is_file(), "{}", exe.display());

    let json = serde_json::to_vec(&manifest).expect("a manifest serializes");
    let again = PluginManifest::from_bytes("fuzz", &json, &path, dir).expect("it reads back");
    assert_eq!(again, manifest);
});
