//! The `shmplug` command: plugin management, `status`, and `run` with the fake plugin
//! installed as a package (a shell script that re-executes this test binary).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use support::read_lines;

#[test]
fn fake_plugin_entry() {
    support::fake::entry();
}

fn shmplug(plugins: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shmplug"))
        .arg("--plugins-dir")
        .arg(plugins)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run shmplug")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A package directory `dir/fake` whose executable runs this test binary as the fake plugin.
fn fake_package(dir: &Path, state: &Path) -> std::path::PathBuf {
    let pkg = dir.join("fake");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("fake.json"),
        r#"{"version": "v1.2.3", "language": "rust", "executable": "run.sh",
            "sources": ["counter"], "sinks": ["collect"], "functions": ["echo"]}"#,
    )
    .unwrap();
    let script = format!(
        "#!/bin/sh\nexport {}=ok {}=fake {}='{}'\nexec '{}' --exact fake_plugin_entry --nocapture --test-threads=1\n",
        support::fake::MODE_ENV,
        support::fake::NAME_ENV,
        support::fake::STATE_ENV,
        state.display(),
        std::env::current_exe().unwrap().display()
    );
    std::fs::write(pkg.join("run.sh"), script).unwrap();
    std::fs::set_permissions(pkg.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    pkg
}

#[test]
fn help_explains_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = shmplug(dir.path(), &["--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for word in ["plugins", "run", "status"] {
        assert!(text.contains(word), "{text}");
    }
    let out = shmplug(dir.path(), &["plugins", "--help"]);
    let text = stdout(&out);
    for word in ["install", "list", "describe", "update", "remove"] {
        assert!(text.contains(word), "{text}");
    }
    let out = shmplug(dir.path(), &["run", "--help"]);
    assert!(stdout(&out).contains("summary"), "{}", stdout(&out));
}

#[test]
fn manages_plugins_and_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let state = tempfile::tempdir().unwrap();
    let pkg = fake_package(dir.path(), state.path());
    let pkg = pkg.to_str().unwrap();

    let out = shmplug(&plugins, &["plugins", "install", pkg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("installed fake v1.2.3"));
    let out = shmplug(&plugins, &["plugins", "install", pkg]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = shmplug(&plugins, &["plugins", "list"]);
    assert!(stdout(&out).contains("fake") && stdout(&out).contains("[counter]"));
    let out = shmplug(&plugins, &["plugins", "describe", "fake"]);
    assert!(stdout(&out).contains("run.sh"), "{}", stdout(&out));
    let out = shmplug(&plugins, &["plugins", "update", "fake", pkg]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = shmplug(&plugins, &["status"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("fake") && stdout(&out).contains("OK"));

    let out = shmplug(&plugins, &["plugins", "remove", "fake"]);
    assert!(out.status.success());
    let out = shmplug(&plugins, &["plugins", "describe", "fake"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no plugin named `fake`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn runs_a_pipeline_and_prints_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let state = tempfile::tempdir().unwrap();
    let pkg = fake_package(dir.path(), state.path());
    let out = shmplug(&plugins, &["plugins", "install", pkg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        r#"
[source]
plugin = "fake"
symbol = "counter"
properties = { count = 500 }

[[functions]]
plugin = "fake"
symbol = "echo"
args = ["n"]
output = "echoed"

[sink]
plugin = "fake"
symbol = "collect"
"#,
    )
    .unwrap();
    let out = shmplug(&plugins, &["run", pipeline.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("ended:      the source ended"), "{text}");
    assert!(text.contains("tuples:     500 in"), "{text}");
    assert!(text.contains("p99"), "{text}");
    assert!(text.contains("errors:     0"), "{text}");
    assert!(text.contains("restarts:   0"), "{text}");
    support::wait_for("the sink to write 500 lines", || {
        read_lines(&state.path().join("sink")).len() == 500
    });

    let out = shmplug(
        &plugins,
        &["run", pipeline.to_str().unwrap(), "--count", "10"],
    );
    assert!(stdout(&out).contains("count reached"), "{}", stdout(&out));
}
