//! `shmplug plugins install|update|remove` through the command line, with each bad package:
//! the command fails, stderr names the problem, and the plugins directory is left as it was.

mod support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::cli::{shmplug, stderr, stdout};

const MANIFEST: &str = r#"{
  "version": "v1.0.0",
  "language": "rust",
  "executable": "mirror",
  "sources": ["random"],
  "sinks": ["file"],
  "functions": ["echo"]
}"#;

/// A work directory for packages and an empty plugins directory beside it.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// A package directory `work/{dir}` holding `{manifest_name}.json` and an executable
    /// `mirror` with permissions `exe_mode`.
    fn package(&self, dir: &str, manifest_name: &str, manifest: &str, exe_mode: u32) -> PathBuf {
        let pkg = self.work().join(dir);
        fs::create_dir_all(pkg.join("sources")).unwrap();
        fs::write(pkg.join(format!("{manifest_name}.json")), manifest).unwrap();
        fs::write(pkg.join("mirror"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(pkg.join("mirror"), fs::Permissions::from_mode(exe_mode)).unwrap();
        fs::write(pkg.join("sources/random.yaml"), "default: {}\n").unwrap();
        pkg
    }

    /// A zip `work/{file}` of `(name, contents, mode)` entries.
    fn zip(&self, file: &str, entries: &[(&str, &str, u32)]) -> PathBuf {
        fs::create_dir_all(self.work()).unwrap();
        let path = self.work().join(file);
        let mut writer = zip::ZipWriter::new(fs::File::create(&path).unwrap());
        for (name, contents, mode) in entries {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(*mode);
            writer.start_file(*name, options).unwrap();
            writer.write_all(contents.as_bytes()).unwrap();
        }
        writer.finish().unwrap();
        path
    }

    /// `shmplug --plugins-dir PLUGINS ARGS...`; an install or update does not start the
    /// package's executable (`--no-check`): these executables are empty scripts.
    fn shmplug(&self, args: &[&str]) -> std::process::Output {
        let mut args = args.to_vec();
        if matches!(args.get(1), Some(&"install" | &"update")) {
            args.push("--no-check");
        }
        shmplug(&self.plugins(), &args)
    }

    /// Runs `args`, which must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.shmplug(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    }

    /// Runs `args`, which must fail with every one of `needles` on stderr; returns stderr.
    fn fails(&self, args: &[&str], needles: &[&str]) -> String {
        let out = self.shmplug(args);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
        assert!(text.starts_with("error: "), "{text}");
        for needle in needles {
            assert!(text.contains(needle), "{args:?}: `{needle}` not in: {text}");
        }
        text
    }

    /// Installing `package` fails naming the problem and leaves the plugins directory empty.
    fn refused(&self, package: &Path, needles: &[&str]) -> String {
        let text = self.fails(&["plugins", "install", package.to_str().unwrap()], needles);
        assert!(
            self.plugins().is_dir(),
            "the plugins directory exists (staging happens in it)"
        );
        assert_eq!(entries(&self.plugins()), Vec::<String>::new(), "{text}");
        text
    }
}

/// Every name in `dir`, hidden ones (staging left-overs) included.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn install_describe_update_remove() {
    let f = Fixture::new();
    let pkg = f.package("mirror", "mirror", MANIFEST, 0o755);
    let text = f.ok(&["plugins", "install", pkg.to_str().unwrap()]);
    assert!(text.contains("installed mirror v1.0.0"), "{text}");
    assert_eq!(entries(&f.plugins()), ["mirror"]);
    assert_eq!(
        entries(&f.plugins().join("mirror")),
        ["mirror", "mirror.json", "sources"]
    );
    let text = f.ok(&["plugins", "list"]);
    assert!(text.contains("mirror") && text.contains("v1.0.0"), "{text}");
    let text = f.ok(&["plugins", "describe", "mirror"]);
    assert!(text.contains("functions:  echo"), "{text}");

    let v2 = f.package(
        "v2/mirror",
        "mirror",
        &MANIFEST.replace("v1.0.0", "v2.0.0"),
        0o755,
    );
    let text = f.ok(&["plugins", "update", "mirror", v2.to_str().unwrap()]);
    assert!(text.contains("updated mirror to v2.0.0"), "{text}");
    assert!(f.ok(&["plugins", "describe", "mirror"]).contains("v2.0.0"));
    assert_eq!(entries(&f.plugins()), ["mirror"]);

    let text = f.ok(&["plugins", "remove", "mirror"]);
    assert!(text.contains("removed mirror"), "{text}");
    assert_eq!(entries(&f.plugins()), Vec::<String>::new());
    f.fails(
        &["plugins", "remove", "mirror"],
        &["no plugin named `mirror`", "plugins list"],
    );
    f.fails(
        &["plugins", "update", "mirror", v2.to_str().unwrap()],
        &["no plugin named `mirror`"],
    );
}

#[test]
fn installs_a_zip_keeping_the_executable_bit() {
    let f = Fixture::new();
    let zip = f.zip(
        "mirror.zip",
        &[
            ("mirror.json", MANIFEST, 0o644),
            ("mirror", "#!/bin/sh\n", 0o755),
            ("sources/random.yaml", "default: {}\n", 0o644),
        ],
    );
    let text = f.ok(&["plugins", "install", zip.to_str().unwrap()]);
    assert!(text.contains("installed mirror v1.0.0"), "{text}");
    let exe = f.plugins().join("mirror/mirror");
    assert_ne!(fs::metadata(exe).unwrap().permissions().mode() & 0o111, 0);
}

#[test]
fn an_existing_plugin_needs_force() {
    let f = Fixture::new();
    let pkg = f.package("mirror", "mirror", MANIFEST, 0o755);
    let pkg = pkg.to_str().unwrap();
    f.ok(&["plugins", "install", pkg]);
    let v2 = f.package(
        "v2/mirror",
        "mirror",
        &MANIFEST.replace("v1.0.0", "v2.0.0"),
        0o755,
    );
    let v2 = v2.to_str().unwrap();
    f.fails(
        &["plugins", "install", v2],
        &["already installed", "--force", "plugins update"],
    );
    assert!(f.ok(&["plugins", "describe", "mirror"]).contains("v1.0.0"));
    let text = f.ok(&["plugins", "install", v2, "--force"]);
    assert!(text.contains("installed mirror v2.0.0"), "{text}");
    assert!(f.ok(&["plugins", "describe", "mirror"]).contains("v2.0.0"));
    assert_eq!(entries(&f.plugins()), ["mirror"]);
}

#[test]
fn invalid_json_names_the_line_and_column() {
    let f = Fixture::new();
    let broken = "{\n  \"version\": \"v1\",\n  \"language\": rust\n}";
    let pkg = f.package("mirror", "mirror", broken, 0o755);
    f.refused(&pkg, &["mirror.json:3:15", "invalid plugin manifest"]);
}

#[test]
fn a_name_that_does_not_match_is_refused() {
    let f = Fixture::new();
    let named = MANIFEST.replacen('{', r#"{"name": "other","#, 1);
    let pkg = f.package("mirror", "mirror", &named, 0o755);
    f.refused(&pkg, &["says its name is `other`", "installed as `mirror`"]);
    // The manifest's file is named after the plugin: another name finds none.
    let pkg = f.package("renamed", "mirror", MANIFEST, 0o755);
    f.refused(&pkg, &["no `renamed.json`"]);
}

#[test]
fn no_symbols_is_refused() {
    let f = Fixture::new();
    let empty = r#"{"version": "v1", "language": "rust", "executable": "mirror"}"#;
    let pkg = f.package("mirror", "mirror", empty, 0o755);
    f.refused(&pkg, &["declares no symbols", "sources"]);
}

#[test]
fn a_missing_executable_is_refused() {
    let f = Fixture::new();
    let other = MANIFEST.replace(r#""executable": "mirror""#, r#""executable": "bin/mirror""#);
    let pkg = f.package("mirror", "mirror", &other, 0o755);
    f.refused(&pkg, &["bin/mirror", "is not in the package"]);
    let zip = f.zip("mirror.zip", &[("mirror.json", MANIFEST, 0o644)]);
    f.refused(&zip, &["is not in the package"]);
}

#[test]
fn a_non_executable_executable_is_refused() {
    let f = Fixture::new();
    let pkg = f.package("mirror", "mirror", MANIFEST, 0o644);
    f.refused(&pkg, &["is not an executable file", "chmod +x"]);
    let zip = f.zip(
        "mirror.zip",
        &[
            ("mirror.json", MANIFEST, 0o644),
            ("mirror", "#!/bin/sh\n", 0o644),
        ],
    );
    f.refused(&zip, &["is not an executable file"]);
}

#[test]
fn a_zip_entry_that_escapes_is_refused() {
    for evil in ["../evil", "sub/../../evil", "/tmp/evil"] {
        let f = Fixture::new();
        let zip = f.zip(
            "mirror.zip",
            &[
                ("mirror.json", MANIFEST, 0o644),
                ("mirror", "#!/bin/sh\n", 0o755),
                (evil, "x", 0o644),
            ],
        );
        f.refused(
            &zip,
            &[&format!("entry `{evil}`"), "outside the plugin directory"],
        );
        assert!(!f.dir.path().join("evil").exists(), "{evil}");
        assert_eq!(entries(&f.work()), ["mirror.zip"], "{evil}");
    }
}

#[test]
fn a_file_that_is_not_a_zip_is_reported() {
    let f = Fixture::new();
    fs::create_dir_all(f.work()).unwrap();
    let path = f.work().join("mirror.zip");
    fs::write(&path, "not a zip").unwrap();
    f.refused(&path, &["cannot read zip", "complete zip archive"]);
}

#[test]
fn a_failed_update_keeps_the_installed_plugin() {
    let f = Fixture::new();
    let pkg = f.package("mirror", "mirror", MANIFEST, 0o755);
    f.ok(&["plugins", "install", pkg.to_str().unwrap()]);
    let bad = f.package(
        "v2/mirror",
        "mirror",
        &MANIFEST.replace("v1.0.0", "v2.0.0"),
        0o644,
    );
    f.fails(
        &["plugins", "update", "mirror", bad.to_str().unwrap()],
        &["is not an executable file"],
    );
    assert!(f.ok(&["plugins", "describe", "mirror"]).contains("v1.0.0"));
    assert_eq!(entries(&f.plugins()), ["mirror"]);
    let installed = f.plugins().join("mirror");
    assert_eq!(
        entries(&installed),
        ["mirror", "mirror.json", "sources"],
        "the old files are intact"
    );
}
