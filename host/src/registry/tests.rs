use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

const MANIFEST: &str = r#"{
  "version": "v1.0.0",
  "language": "rust",
  "executable": "mirror",
  "sources": ["random"],
  "sinks": ["file"],
  "functions": ["echo"]
}"#;

struct Fixture {
    _dir: tempfile::TempDir,
    registry: Registry,
    work: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().join("plugins")).unwrap();
    let work = dir.path().join("work");
    fs::create_dir(&work).unwrap();
    Fixture {
        _dir: dir,
        registry,
        work,
    }
}

/// Writes a package directory `work/{dir}` with a manifest and an executable.
fn package(f: &Fixture, dir: &str, manifest_name: &str, manifest: &str, exe_mode: u32) -> PathBuf {
    let pkg = f.work.join(dir);
    fs::create_dir_all(pkg.join("sources")).unwrap();
    fs::write(pkg.join(format!("{manifest_name}.json")), manifest).unwrap();
    fs::write(pkg.join("mirror"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(pkg.join("mirror"), fs::Permissions::from_mode(exe_mode)).unwrap();
    fs::write(pkg.join("sources/random.yaml"), "default: {}\n").unwrap();
    pkg
}

/// Writes a zip of `(name, contents, mode)` entries.
fn zip(f: &Fixture, file: &str, entries: &[(&str, &str, u32)]) -> PathBuf {
    let path = f.work.join(file);
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

/// The plugins directory holds exactly these entries (no staging left-overs).
fn assert_entries(f: &Fixture, expected: &[&str]) {
    let mut names: Vec<String> = fs::read_dir(f.registry.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, expected);
}

fn message(e: &Error) -> String {
    e.to_string()
}

#[test]
fn installs_from_a_directory_and_describes_lists_removes() {
    let f = fixture();
    let pkg = package(&f, "mirror", "mirror", MANIFEST, 0o755);
    let info = f
        .registry
        .install(&pkg, &InstallOptions::default())
        .unwrap();
    assert_eq!(info.name, "mirror");
    assert_eq!(info.manifest.sources, ["random"]);
    assert_eq!(info.executable, f.registry.root().join("mirror/mirror"));
    assert!(info.executable.is_absolute());
    assert!(info.dir.join("sources/random.yaml").is_file());
    assert_eq!(f.registry.describe("mirror").unwrap(), info);
    let listed = f.registry.list().unwrap();
    assert!(matches!(&listed[..], [Listed::Plugin(p)] if *p == info));
    f.registry.remove("mirror").unwrap();
    assert_entries(&f, &[]);
    assert!(matches!(
        f.registry.describe("mirror"),
        Err(Error::NotInstalled { .. })
    ));
    assert!(matches!(
        f.registry.remove("mirror"),
        Err(Error::NotInstalled { .. })
    ));
}

#[test]
fn installs_from_a_zip_keeping_permissions() {
    let f = fixture();
    let z = zip(
        &f,
        "mirror.zip",
        &[
            ("mirror.json", MANIFEST, 0o644),
            ("mirror", "#!/bin/sh\n", 0o755),
            ("sources/random.yaml", "default: {}\n", 0o644),
        ],
    );
    let info = f.registry.install(&z, &InstallOptions::default()).unwrap();
    assert_eq!(info.name, "mirror");
    let mode = fs::metadata(&info.executable).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    assert!(info.dir.join("sources/random.yaml").is_file());
    assert_entries(&f, &["mirror"]);
}

#[test]
fn an_existing_plugin_needs_force_and_update_replaces_it() {
    let f = fixture();
    let pkg = package(&f, "mirror", "mirror", MANIFEST, 0o755);
    f.registry
        .install(&pkg, &InstallOptions::default())
        .unwrap();
    let err = f
        .registry
        .install(&pkg, &InstallOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyInstalled { .. }), "{err}");
    assert!(message(&err).contains("--force"), "{err}");

    let v2 = MANIFEST.replace("v1.0.0", "v2.0.0");
    let pkg2 = package(&f, "mirror2", "mirror", &v2, 0o755);
    let options = InstallOptions {
        name: Some("mirror".into()),
        force: true,
    };
    let info = f.registry.install(&pkg2, &options).unwrap();
    assert_eq!(info.manifest.version, "v2.0.0");
    let v3 = MANIFEST.replace("v1.0.0", "v3.0.0");
    let pkg3 = package(&f, "mirror3", "mirror", &v3, 0o755);
    let info = f.registry.update("mirror", &pkg3).unwrap();
    assert_eq!(info.manifest.version, "v3.0.0");
    assert_eq!(
        f.registry.describe("mirror").unwrap().manifest.version,
        "v3.0.0"
    );
    assert_entries(&f, &["mirror"]);
    assert!(matches!(
        f.registry.update("other", &pkg3),
        Err(Error::NotInstalled { .. })
    ));
}

#[test]
fn a_failed_update_keeps_the_old_plugin() {
    let f = fixture();
    let pkg = package(&f, "mirror", "mirror", MANIFEST, 0o755);
    f.registry
        .install(&pkg, &InstallOptions::default())
        .unwrap();
    let bad = package(&f, "bad", "mirror", "{", 0o755);
    assert!(f.registry.update("mirror", &bad).is_err());
    assert_eq!(
        f.registry.describe("mirror").unwrap().manifest.version,
        "v1.0.0"
    );
    assert_entries(&f, &["mirror"]);
}

#[test]
fn invalid_json_names_line_and_column() {
    let f = fixture();
    let broken = "{\n  \"version\": \"v1\",\n  \"language\": rust\n}";
    let pkg = package(&f, "mirror", "mirror", broken, 0o755);
    let err = f
        .registry
        .install(&pkg, &InstallOptions::default())
        .unwrap_err();
    match &err {
        Error::InvalidManifest { line, column, .. } => {
            assert_eq!((*line, *column), (3, 15), "{err}");
        }
        other => panic!("{other}"),
    }
    let shown = format!("{}:3:15", pkg.join("mirror.json").display());
    assert!(
        message(&err).contains(&shown),
        "{err} does not name {shown}"
    );
    assert_entries(&f, &[]);
}

#[test]
fn a_manifest_that_is_not_utf8_is_invalid() {
    let f = fixture();
    let pkg = package(&f, "mirror", "mirror", MANIFEST, 0o755);
    let mut bytes = MANIFEST.as_bytes().to_vec();
    bytes.insert(3, 0xff);
    fs::write(pkg.join("mirror.json"), &bytes).unwrap();
    let err = f
        .registry
        .install(&pkg, &InstallOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidManifest { .. }), "{err}");
    assert!(message(&err).contains("not UTF-8"), "{err}");
    assert_entries(&f, &[]);
}

#[test]
fn missing_required_fields_are_reported() {
    let f = fixture();
    let pkg = package(
        &f,
        "mirror",
        "mirror",
        r#"{"version": "v1", "sources": ["a"]}"#,
        0o755,
    );
    let err = f
        .registry
        .install(&pkg, &InstallOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidManifest { .. }), "{err}");
    assert!(message(&err).contains("language"), "{err}");
    assert_entries(&f, &[]);
}

#[test]
fn a_name_that_does_not_match_is_refused() {
    let f = fixture();
    let named = MANIFEST.replacen('{', r#"{"name": "other","#, 1);
    let pkg = package(&f, "mirror", "mirror", &named, 0o755);
    let err = f
        .registry
        .install(&pkg, &InstallOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, Error::NameMismatch { expected, found, .. } if expected == "mirror" && found == "other"),
        "{err}"
    );
    assert_entries(&f, &[]);
}

#[test]
fn a_manifest_under_another_name_gets_a_hint() {
    let f = fixture();
    let pkg = package(&f, "mirror", "mirror2", MANIFEST, 0o755);
    let err = f
        .registry
        .install(&pkg, &InstallOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::NoManifest { .. }), "{err}");
    assert!(message(&err).contains("mirror2.json"), "{err}");
    assert!(message(&err).contains("--name"), "{err}");
    assert_entries(&f, &[]);
}

#[test]
fn a_zip_with_a_top_level_folder_gets_a_hint() {
    let f = fixture();
    let z = zip(
        &f,
        "mirror.zip",
        &[
            ("mirror/mirror.json", MANIFEST, 0o644),
            ("mirror/mirror", "#!/bin/sh\n", 0o755),
        ],
    );
    let err = f
        .registry
        .install(&z, &InstallOptions::default())
        .unwrap_err();
    assert!(
        message(&err).contains("inside the folder `mirror/`"),
        "{err}"
    );
    assert_entries(&f, &[]);
}

#[test]
fn no_symbols_is_refused() {
    let f = fixture();
    let empty = r#"{"version": "v1", "language": "rust", "executable": "mirror"}"#;
    let pkg = package(&f, "mirror", "mirror", empty, 0o755);
    let err = f
        .registry
        .install(&pkg, &InstallOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::NoSymbols { .. }), "{err}");
    assert_entries(&f, &[]);
}

#[test]
fn a_missing_executable_is_refused() {
    let f = fixture();
    let other = MANIFEST.replace(
        "\"executable\": \"mirror\"",
        "\"executable\": \"bin/mirror\"",
    );
    let pkg = package(&f, "mirror", "mirror", &other, 0o755);
    let err = f
        .registry
        .install(&pkg, &InstallOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::MissingExecutable { .. }), "{err}");
    assert!(message(&err).contains("bin/mirror"), "{err}");
    assert_entries(&f, &[]);
}

#[test]
fn an_executable_outside_the_package_is_refused() {
    let f = fixture();
    let other = MANIFEST.replace("\"executable\": \"mirror\"", "\"executable\": \"../sh\"");
    let pkg = package(&f, "mirror", "mirror", &other, 0o755);
    let err = f
        .registry
        .install(&pkg, &InstallOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidManifest { .. }), "{err}");
    assert_entries(&f, &[]);
}

#[test]
fn a_non_executable_file_is_refused() {
    let f = fixture();
    let pkg = package(&f, "mirror", "mirror", MANIFEST, 0o644);
    let err = f
        .registry
        .install(&pkg, &InstallOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::NotExecutable { .. }), "{err}");
    assert!(message(&err).contains("chmod +x"), "{err}");
    let shown = format!("`{}`", pkg.join("mirror").display());
    assert!(
        message(&err).contains(&shown),
        "{err} does not name {shown}"
    );
    assert_entries(&f, &[]);
}

#[test]
fn zip_entries_that_escape_are_refused() {
    for evil in ["../evil", "/etc/evil", "sub/../../evil", "..\\evil"] {
        let f = fixture();
        let z = zip(
            &f,
            "mirror.zip",
            &[
                ("mirror.json", MANIFEST, 0o644),
                ("mirror", "#!/bin/sh\n", 0o755),
                (evil, "x", 0o644),
            ],
        );
        let err = f
            .registry
            .install(&z, &InstallOptions::default())
            .unwrap_err();
        assert!(
            matches!(&err, Error::UnsafeZipEntry { entry, .. } if entry == evil),
            "{evil}: {err}"
        );
        assert_entries(&f, &[]);
        assert!(!f.work.join("evil").exists() && !f.registry.root().join("evil").exists());
    }
}

#[test]
fn a_file_that_is_not_a_zip_is_reported() {
    let f = fixture();
    let path = f.work.join("mirror.zip");
    fs::write(&path, "not a zip").unwrap();
    let err = f
        .registry
        .install(&path, &InstallOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::Zip { .. }), "{err}");
    assert_entries(&f, &[]);
}

#[test]
fn bad_names_are_refused() {
    let f = fixture();
    for bad in ["", ".hidden", "a/b", "..", "x y"] {
        assert!(
            matches!(f.registry.describe(bad), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn list_reports_broken_directories() {
    let f = fixture();
    let pkg = package(&f, "mirror", "mirror", MANIFEST, 0o755);
    f.registry
        .install(&pkg, &InstallOptions::default())
        .unwrap();
    fs::create_dir(f.registry.root().join("junk")).unwrap();
    fs::create_dir(f.registry.root().join(".staging-x")).unwrap();
    let listed = f.registry.list().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        matches!(&listed[0], Listed::Broken { name, error: Error::NoManifest { .. } } if name == "junk")
    );
    assert!(matches!(&listed[1], Listed::Plugin(p) if p.name == "mirror"));
}

#[test]
fn entry_paths() {
    use package::entry_path;
    assert_eq!(entry_path("a/./b"), Some(Path::new("a/b").to_owned()));
    assert_eq!(entry_path("a/b/"), Some(Path::new("a/b").to_owned()));
    assert_eq!(entry_path("C:/x"), None);
    assert_eq!(entry_path("a/../b"), None);
}
