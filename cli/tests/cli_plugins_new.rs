//! `shmplug plugins new NAME` writes a crate that formats clean and passes `cargo test` as
//! generated, outside this repository (offline: this workspace's lock file pins the versions
//! already in the local registry cache, and a target directory under this workspace's keeps
//! the SDK's build between runs).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::cli::{stderr, stdout};

/// Longest the generated crate's build and tests may take (a first build on a loaded 2-core
/// machine compiles the SDK's dependencies: about two minutes).
const CARGO_TIME_OUT: Duration = Duration::from_secs(15 * 60);

fn shmplug_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shmplug"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run shmplug")
}

/// Runs `cargo ARGS` in `dir` to its end (killed past [`CARGO_TIME_OUT`]); panics with its
/// output if it fails.
fn cargo(dir: &Path, args: &[&str]) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let log = dir.join(format!("cargo-{}.log", args[0]));
    let child = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", workspace.join("target").join("guide"))
        .env_remove("RUSTFLAGS")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("cargo.stderr")).unwrap())
        .spawn()
        .expect("start cargo");
    let pid = rustix::process::Pid::from_child(&child);
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut child = child;
        let status = child.wait();
        let _ = done_tx.send(());
        status
    });
    if done_rx.recv_timeout(CARGO_TIME_OUT).is_err() {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    let status = waiter.join().unwrap().unwrap();
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    let err = std::fs::read_to_string(dir.join("cargo.stderr")).unwrap_or_default();
    assert!(status.success(), "cargo {args:?}: {status}\n{out}\n{err}");
}

#[test]
fn a_new_plugin_crate_passes_its_tests_as_generated() {
    let dir = tempfile::tempdir().unwrap();
    let out = shmplug_in(dir.path(), &["plugins", "new", "zz_meter"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("created the plugin crate ./zz_meter"),
        "{text}"
    );
    assert!(text.contains("by path"), "{text}");
    let crate_dir = dir.path().join("zz_meter");
    for file in [
        "Cargo.toml",
        "zz_meter.json",
        "src/main.rs",
        "src/lib.rs",
        "tests/symbols.rs",
    ] {
        assert!(crate_dir.join(file).is_file(), "{file} missing");
    }
    let cargo_toml = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk")
        .canonicalize()
        .unwrap();
    assert!(
        cargo_toml.contains(&format!("shmplug-sdk = {{ path = \"{}\" }}", sdk.display())),
        "{cargo_toml}"
    );
    // The manifest lists what the executable offers.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(crate_dir.join("zz_meter.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["executable"], "zz_meter");
    assert_eq!(manifest["sources"], serde_json::json!(["counter"]));

    // The versions this workspace builds with, all in the local registry cache.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"),
        crate_dir.join("Cargo.lock"),
    )
    .unwrap();
    cargo(&crate_dir, &["fmt", "--check"]);
    cargo(&crate_dir, &["test", "--offline", "--quiet"]);
}

#[test]
fn bad_names_and_existing_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = shmplug_in(dir.path(), &["plugins", "new", "My-Plugin"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot name a plugin"),
        "{}",
        stderr(&out)
    );
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let out = shmplug_in(dir.path(), &["plugins", "new", "taken"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let out = shmplug_in(dir.path(), &["plugins", "new", "fresh", "--sdk", "/"]);
    assert!(
        stderr(&out).contains("is not the shmplug SDK"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("fresh").exists());
}
