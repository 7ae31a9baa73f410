//! `shmplug plugins install` of eKuiper packages as they are: a Python script without its
//! executable bit, `sources/*.yaml` and `.json` metadata, and `install.sh`, which runs only with
//! `--run-install-sh`. (Running such plugins is tested in `shmplug-host`'s `ekuiper_python` and
//! `tests/ekuiper/ci.sh`.)

mod support;

use std::path::Path;

use support::cli::{shmplug, stderr, stdout};

fn ekuiper_package(dir: &Path) -> std::path::PathBuf {
    let pkg = dir.join("pysam");
    std::fs::create_dir_all(pkg.join("sources")).unwrap();
    std::fs::create_dir_all(pkg.join("functions")).unwrap();
    std::fs::write(
        pkg.join("pysam.json"),
        r#"{"version": "v1.0.0", "language": "python", "executable": "pysam.py",
            "sources": ["pyjson"], "sinks": ["print"], "functions": ["revert"]}"#,
    )
    .unwrap();
    std::fs::write(pkg.join("pysam.py"), "print('not run by these tests')\n").unwrap();
    std::fs::write(pkg.join("sources/pyjson.yaml"), "default:\n").unwrap();
    std::fs::write(pkg.join("sources/pyjson.json"), r#"{"about": {}}"#).unwrap();
    std::fs::write(pkg.join("functions/revert.json"), r#"{"about": {}}"#).unwrap();
    std::fs::write(
        pkg.join("install.sh"),
        "echo \"installed with $1\" > install-ran.txt\n",
    )
    .unwrap();
    pkg
}

#[test]
fn an_ekuiper_package_installs_as_it_is_and_its_install_sh_runs_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let pkg = ekuiper_package(dir.path());
    let pkg = pkg.to_str().unwrap();

    let out = shmplug(&plugins, &["plugins", "install", "--no-check", pkg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("install.sh, which was not run"),
        "{}",
        stderr(&out)
    );
    let installed = plugins.join("pysam");
    assert!(!installed.join("install-ran.txt").exists());
    for file in [
        "pysam.py",
        "sources/pyjson.yaml",
        "sources/pyjson.json",
        "functions/revert.json",
    ] {
        assert!(installed.join(file).is_file(), "{file} installed");
    }
    let out = shmplug(&plugins, &["plugins", "list"]);
    assert!(stdout(&out).contains("python"), "{}", stdout(&out));

    let out = shmplug(
        &plugins,
        &[
            "plugins",
            "install",
            "--no-check",
            "--force",
            "--run-install-sh",
            "--install-arg",
            "gpu",
            pkg,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ran = std::fs::read_to_string(installed.join("install-ran.txt")).unwrap();
    assert_eq!(ran, "installed with gpu\n");

    // A failing script installs nothing.
    std::fs::write(Path::new(pkg).join("install.sh"), "exit 3\n").unwrap();
    let out = shmplug(
        &plugins,
        &[
            "plugins",
            "install",
            "--no-check",
            "--force",
            "--run-install-sh",
            pkg,
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("install.sh failed"),
        "{}",
        stderr(&out)
    );
    assert!(
        installed.join("install-ran.txt").exists(),
        "the old install stays"
    );
}
