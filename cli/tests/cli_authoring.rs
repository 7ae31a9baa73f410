//! What a plugin author meets: `shmplug run` starts plugins in the pipeline file's directory
//! (so that relative paths in properties resolve there) and tells each its own directory in
//! `SHMPLUG_PLUGIN_DIR`; `shmplug plugins install` refuses a manifest whose symbols differ from
//! the executable's.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::cli::{self, stderr, stdout};

#[test]
fn fake_plugin_entry() {
    support::fake::entry();
}

/// The symbols the fake plugin offers, as manifest fields.
const SYMBOLS: &str = r#""sources": ["counter", "broken", "rewinding"], "sinks": ["collect"], "functions": ["echo", "fail", "once", "sum"]"#;

/// A package `dir/fake` whose executable notes its working directory and `SHMPLUG_PLUGIN_DIR`
/// in `state`, then runs this test binary as the fake plugin; its manifest lists `symbols`.
fn fake_package(dir: &Path, state: &Path, symbols: &str) -> std::path::PathBuf {
    let pkg = dir.join("fake");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("fake.json"),
        format!(
            r#"{{"version": "v1.0.0", "language": "rust", "executable": "run.sh", {symbols}}}"#
        ),
    )
    .unwrap();
    let state = state.display();
    let script = format!(
        "#!/bin/sh\npwd > '{state}/cwd'\nprintf '%s\\n' \"$SHMPLUG_PLUGIN_DIR\" > '{state}/plugin_dir'\n\
         export {}=ok {}=fake {}='{state}'\nexec '{}' --exact fake_plugin_entry --nocapture --test-threads=1\n",
        support::fake::MODE_ENV,
        support::fake::NAME_ENV,
        support::fake::STATE_ENV,
        std::env::current_exe().unwrap().display()
    );
    std::fs::write(pkg.join("run.sh"), script).unwrap();
    std::fs::set_permissions(pkg.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    pkg
}

#[test]
fn plugins_run_in_the_pipeline_files_directory() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let plugins = dir_path.join("plugins");
    let state = tempfile::tempdir().unwrap();
    let pkg = fake_package(&dir_path, state.path(), SYMBOLS);
    let out = cli::shmplug(&plugins, &["plugins", "install", pkg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs = dir_path.join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    std::fs::write(
        jobs.join("pipeline.toml"),
        "[source]\nplugin = \"fake\"\nsymbol = \"counter\"\nproperties = { count = 3 }\n\n\
         [sink]\nplugin = \"fake\"\nsymbol = \"collect\"\n",
    )
    .unwrap();
    // The pipeline named relative to the command's own working directory.
    let out = cli::command(&plugins, &["run", "jobs/pipeline.toml"])
        .current_dir(&dir_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("tuples:     3 in"),
        "{}",
        stdout(&out)
    );
    let read = |name: &str| {
        std::fs::read_to_string(state.path().join(name))
            .unwrap()
            .trim_end()
            .to_owned()
    };
    assert_eq!(Path::new(&read("cwd")), jobs);
    assert_eq!(Path::new(&read("plugin_dir")), plugins.join("fake"));
}

#[test]
fn install_refuses_a_manifest_whose_symbols_differ_from_the_executables() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let state = tempfile::tempdir().unwrap();
    let symbols = r#""sources": ["counter", "broken", "rewinding", "ghost"], "sinks": ["collect"], "functions": ["echo"]"#;
    let pkg = fake_package(dir.path(), state.path(), symbols);
    let out = cli::shmplug(&plugins, &["plugins", "install", pkg.to_str().unwrap()]);
    let text = stderr(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(
            "plugin `fake`: its manifest and its executable disagree: the manifest \
                       lists source `ghost`, which the executable does not offer; the \
                       executable offers function `fail`, which the manifest does not list"
        ),
        "{text}"
    );
    assert!(text.contains("fake.json"), "{text}");
    let out = cli::shmplug(&plugins, &["plugins", "list"]);
    assert!(
        stdout(&out).contains("no plugins installed"),
        "{}",
        stdout(&out)
    );
    // The check can be skipped, for an executable that cannot run here.
    let out = cli::shmplug(
        &plugins,
        &["plugins", "install", "--no-check", pkg.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The fake package installed, and a pipeline `dir/pipeline.toml`: `count` tuples `{n}` from
/// `counter`, then `function` called on the fields `args`, then `collect`.
fn pipeline_with(
    function: &str,
    args: &str,
    count: u32,
) -> (tempfile::TempDir, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let state = tempfile::tempdir().unwrap();
    let pkg = fake_package(dir.path(), state.path(), SYMBOLS);
    let out = cli::shmplug(&plugins, &["plugins", "install", pkg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(
        dir.path().join("pipeline.toml"),
        format!(
            "[source]\nplugin = \"fake\"\nsymbol = \"counter\"\nproperties = {{ count = {count} }}\n\n\
             [[functions]]\nplugin = \"fake\"\nsymbol = \"{function}\"\nargs = {args}\noutput = \"out\"\n\n\
             [sink]\nplugin = \"fake\"\nsymbol = \"collect\"\n"
        ),
    )
    .unwrap();
    (dir, state, plugins)
}

#[test]
fn a_missing_argument_field_is_counted_and_named_once() {
    let (dir, _state, plugins) = pipeline_with("echo", r#"["n", "nope"]"#, 300);
    let pipeline = dir.path().join("pipeline.toml");
    let out = cli::shmplug(&plugins, &["run", pipeline.to_str().unwrap()]);
    let (text, log) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}{log}");
    assert!(text.contains("tuples:     300 in"), "{text}");
    assert!(text.contains("errors:     300\n"), "{text}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("`nope`")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("has no field `nope` to pass as argument 2"),
        "{log}"
    );
}

#[test]
fn failed_calls_are_logged_at_most_once_a_second() {
    let (dir, _state, plugins) = pipeline_with("fail", r#"["n"]"#, 2000);
    let pipeline = dir.path().join("pipeline.toml");
    let started = std::time::Instant::now();
    let out = cli::shmplug(&plugins, &["run", pipeline.to_str().unwrap()]);
    let seconds = started.elapsed().as_secs();
    let (text, log) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}{log}");
    assert!(text.contains("errors:     2000\n"), "{text}");
    let lines = log.lines().filter(|l| l.contains("WARN")).count() as u64;
    // The first at once, then at most one per second the run lasted.
    assert!(
        lines >= 1 && lines <= 2 + seconds,
        "{lines} lines in {seconds} s:\n{log}"
    );
}
