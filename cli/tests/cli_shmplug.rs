//! The `shmplug` command: plugin management, `run`, and `status` of a running `run`, with the
//! fake plugin installed as a package (a shell script that re-executes this test binary).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::cli::{self, shmplug, stderr, stdout};
use support::read_lines;

#[test]
fn fake_plugin_entry() {
    support::fake::entry();
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

    // The fake offers more symbols than its manifest lists: no check at install.
    let out = shmplug(&plugins, &["plugins", "install", "--no-check", pkg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("installed fake v1.2.3"));
    let out = shmplug(&plugins, &["plugins", "install", pkg]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = shmplug(&plugins, &["plugins", "list"]);
    assert!(stdout(&out).contains("fake") && stdout(&out).contains("[counter]"));
    let out = shmplug(&plugins, &["plugins", "describe", "fake"]);
    assert!(stdout(&out).contains("run.sh"), "{}", stdout(&out));
    let out = shmplug(&plugins, &["plugins", "update", "--no-check", "fake", pkg]);
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

/// The fake package installed into `plugins` under a new directory, and a pipeline file there:
/// the fake `counter` source with `source_properties` (TOML inline-table entries), the `echo`
/// function, the `collect` sink, then `extra` TOML. Returns the directory, the fake plugin's
/// state directory, the plugins directory and the pipeline file.
fn installed_with_pipeline(
    source_properties: &str,
    extra: &str,
) -> (tempfile::TempDir, tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let state = tempfile::tempdir().unwrap();
    let pkg = fake_package(dir.path(), state.path());
    let out = shmplug(
        &plugins,
        &["plugins", "install", "--no-check", pkg.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pipeline = dir.path().join("pipeline.toml");
    let text = format!(
        r#"
[source]
plugin = "fake"
symbol = "counter"
properties = {{ {source_properties} }}

[[functions]]
plugin = "fake"
symbol = "echo"
args = ["n"]
output = "echoed"

[sink]
plugin = "fake"
symbol = "collect"
{extra}"#
    );
    std::fs::write(&pipeline, text).unwrap();
    (dir, state, plugins, pipeline)
}

#[test]
fn logs_without_colours_when_stderr_is_not_a_terminal() {
    let (_dir, _state, plugins, pipeline) = installed_with_pipeline("count = 5", "");
    let out = cli::command(&plugins, &["run", pipeline.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a piped log: {log:?}"
    );
}

#[test]
fn runs_a_pipeline_and_prints_a_summary() {
    let (_dir, state, plugins, pipeline) = installed_with_pipeline("count = 500", "");
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

/// Asks `shmplug status --format json` until `accept` takes one of the runs it lists, polling
/// for at most [`support::WAIT`]; returns that run.
fn status_until(
    plugins: &Path,
    what: &str,
    mut accept: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + support::WAIT;
    loop {
        let out = shmplug(plugins, &["status", "--format", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let last = stdout(&out);
        let runs: Vec<serde_json::Value> = serde_json::from_str(&last).expect("a JSON array");
        if let Some(run) = runs.into_iter().find(|run| accept(run)) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last answer: {last}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_shows_a_running_run_until_it_is_interrupted() {
    let (dir, state, plugins, pipeline) =
        installed_with_pipeline("interval_ms = 5", "[limits]\nduration_secs = 60.0\n");
    let mut run = cli::Child::spawn(&plugins, &["run", pipeline.to_str().unwrap()], dir.path());
    let pid = u64::from(run.id());

    let snapshot = status_until(&plugins, "the run with three live instances", |r| {
        r["pid"] == pid
            && r["tuples"].as_u64() > Some(0)
            && r["plugins"][0]["instances"]
                .as_array()
                .is_some_and(|i| i.len() == 3 && i.iter().all(|i| i["live"] == true))
    });
    assert_eq!(snapshot["errors"], 0, "{snapshot}");
    assert_eq!(
        snapshot["pipeline"],
        pipeline.canonicalize().unwrap().to_str().unwrap()
    );
    let fake = &snapshot["plugins"][0];
    assert_eq!(fake["name"], "fake", "{snapshot}");
    assert_eq!(fake["phase"], "running", "{snapshot}");
    assert_eq!(fake["restarts"], 0, "{snapshot}");
    let plugin_pid = fake["pid"].as_i64().expect("the plugin's pid");
    let fake_pids = support::fake::pids_in(state.path());
    assert_eq!(fake_pids, [plugin_pid as i32], "{snapshot}");
    let mut kinds: Vec<(&str, &str)> = fake["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["kind"].as_str().unwrap(), i["symbol"].as_str().unwrap()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("function", "echo"),
            ("sink", "collect"),
            ("source", "counter")
        ]
    );

    // A client that connects and says nothing does not keep others from being answered.
    let socket = cli::runtime_dir(&plugins).join(format!("run-{pid}.sock"));
    let _silent = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    let out = shmplug(&plugins, &["status"]);
    let table = stdout(&out);
    assert!(out.status.success(), "{table}{}", stderr(&out));
    assert!(table.contains(&format!("run {pid}: ")), "{table}");
    let row = |l: &&str| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words[..] == ["fake", "running", &plugin_pid.to_string(), "0", "-"]
    };
    assert!(table.lines().any(|l| row(&l)), "{table}");
    assert!(
        table.contains("counter") && table.contains("live"),
        "{table}"
    );
    let out = shmplug(&plugins, &["status", "other"]);
    assert!(!stdout(&out).contains("run "), "{}", stdout(&out));

    run.signal(rustix::process::Signal::INT);
    let status = run.wait(support::WAIT);
    assert!(status.success(), "{status:?}: {}", run.stderr());
    assert!(
        run.stdout().contains("ended:      interrupted (Ctrl-C"),
        "{}",
        run.stdout()
    );
    assert!(!socket.exists(), "the run left {}", socket.display());
    let out = shmplug(&plugins, &["status", "--format", "json"]);
    assert_eq!(stdout(&out).trim(), "[]");
    // Not a terminal: no progress line.
    assert!(!run.stderr().contains('\r'), "{:?}", run.stderr());
}

#[test]
fn status_removes_the_sockets_of_ended_runs() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let runtime = cli::runtime_dir(&plugins);
    std::fs::create_dir_all(&runtime).unwrap();
    // A process that has ended (and was reaped): its pid is free.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let stale = runtime.join(format!("run-{dead}.sock"));
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());

    let out = shmplug(&plugins, &["status", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "[]");
    assert!(!stale.exists(), "the stale socket is still there");

    let out = shmplug(&plugins, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("no `shmplug run`"),
        "{}",
        stdout(&out)
    );
    let out = shmplug(&plugins, &["status", "--check", "--format", "json"]);
    assert!(!out.status.success());
}
