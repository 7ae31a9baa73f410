//! The plugin manifest, `{name}.json`: eKuiper's portable-plugin fields, parsed and checked.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use shmplug_transport::control::Hello;

use crate::error::{Error, Result};

/// The contents of a plugin's `{name}.json`, with eKuiper's field names.
///
/// ```json
/// { "name": "mirror", "version": "v1.0.0", "language": "rust", "executable": "mirror",
///   "sources": ["random"], "sinks": ["file"], "functions": ["echo"] }
/// ```
/// Unknown fields (eKuiper's `virtualEnvType`, `env`, ...) are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginManifest {
    /// The plugin's name; optional, but when present it must equal the install name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The plugin's version, free text (eKuiper uses `v1.0.0`).
    #[serde(default)]
    pub version: String,
    /// The language the plugin is written in (informational: shmplug runs any executable).
    pub language: String,
    /// The executable, relative to the plugin's directory.
    pub executable: String,
    /// Source symbols.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Sink symbols.
    #[serde(default)]
    pub sinks: Vec<String>,
    /// Function symbols.
    #[serde(default)]
    pub functions: Vec<String>,
}

impl PluginManifest {
    /// Parses and checks the manifest of plugin `name` at `path` against the directory that
    /// holds it: the JSON (errors carry line and column), the `name` field, at least one
    /// symbol, and an executable file inside `dir`.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::InvalidManifest`], [`Error::NameMismatch`],
    /// [`Error::NoSymbols`], [`Error::MissingExecutable`], [`Error::NotExecutable`].
    pub fn load(name: &str, path: &Path, dir: &Path) -> Result<PluginManifest> {
        let bytes = std::fs::read(path).map_err(Error::io("reading manifest", path))?;
        PluginManifest::from_bytes(name, &bytes, path, dir)
    }

    /// Parses and checks the manifest of plugin `name` from the bytes of its file, as
    /// [`load`](Self::load) does once it has read them; `path` only names the file in errors.
    ///
    /// # Errors
    /// As [`load`](Self::load) (bytes that are not UTF-8 are an [`Error::InvalidManifest`]),
    /// except that reading `path` cannot fail.
    pub fn from_bytes(name: &str, bytes: &[u8], path: &Path, dir: &Path) -> Result<PluginManifest> {
        let text = std::str::from_utf8(bytes).map_err(|e| Error::InvalidManifest {
            path: path.to_owned(),
            line: 0,
            column: 0,
            detail: format!("not UTF-8: {e}"),
        })?;
        let manifest = PluginManifest::parse(text, path)?;
        manifest.check(name, path, dir)?;
        Ok(manifest)
    }

    /// Parses manifest text; `path` only names the file in errors.
    ///
    /// # Errors
    /// [`Error::InvalidManifest`] with the line and column of the problem.
    pub fn parse(text: &str, path: &Path) -> Result<PluginManifest> {
        serde_json::from_str(text).map_err(|e| Error::InvalidManifest {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            detail: e.to_string(),
        })
    }

    /// Every symbol the manifest declares, of any kind.
    pub fn symbol_count(&self) -> usize {
        self.sources.len() + self.sinks.len() + self.functions.len()
    }

    /// The executable's path inside `dir`.
    pub fn executable_in(&self, dir: &Path) -> PathBuf {
        dir.join(&self.executable)
    }

    fn check(&self, name: &str, path: &Path, dir: &Path) -> Result<()> {
        if let Some(found) = &self.name
            && found != name
        {
            return Err(Error::NameMismatch {
                path: path.to_owned(),
                expected: name.to_owned(),
                found: found.clone(),
            });
        }
        let field = |detail: String| Error::InvalidManifest {
            path: path.to_owned(),
            line: 0,
            column: 0,
            detail,
        };
        if self.language.trim().is_empty() {
            return Err(field("`language` is empty".into()));
        }
        let relative = Path::new(&self.executable);
        if self.executable.is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(field(format!(
                "`executable` is `{}`; it must be a path inside the plugin directory (no `..`, \
                 not absolute)",
                self.executable
            )));
        }
        if self.symbol_count() == 0 {
            return Err(Error::NoSymbols {
                name: name.to_owned(),
            });
        }
        for symbol in self
            .sources
            .iter()
            .chain(&self.sinks)
            .chain(&self.functions)
        {
            if symbol.trim().is_empty() {
                return Err(field("a symbol name is empty".into()));
            }
        }
        let exe = self.executable_in(dir);
        let meta = match std::fs::symlink_metadata(&exe) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingExecutable {
                    name: name.to_owned(),
                    path: exe,
                });
            }
            Err(e) => return Err(Error::io("inspecting executable", exe)(e)),
        };
        // A Python script is run by the interpreter (as eKuiper runs it): it needs no
        // executable bit, and eKuiper's zips often lack one.
        let needs_exec_bit = self.language != "python";
        if !meta.is_file() || (needs_exec_bit && meta.permissions().mode() & 0o111 == 0) {
            return Err(Error::NotExecutable {
                name: name.to_owned(),
                path: exe,
            });
        }
        Ok(())
    }
}

impl PluginManifest {
    /// Checks that the executable's `hello` announces exactly the manifest's symbols.
    ///
    /// # Errors
    /// [`Error::SymbolsMismatch`] naming each symbol one side lists and the other lacks.
    pub fn check_hello(&self, plugin: &str, hello: &Hello) -> Result<()> {
        let mut problems = Vec::new();
        for (kind, listed, offered) in [
            ("source", &self.sources, &hello.sources),
            ("sink", &self.sinks, &hello.sinks),
            ("function", &self.functions, &hello.functions),
        ] {
            for symbol in listed.iter().filter(|s| !offered.contains(s)) {
                problems.push(format!(
                    "the manifest lists {kind} `{symbol}`, which the executable does not offer"
                ));
            }
            for symbol in offered.iter().filter(|s| !listed.contains(s)) {
                problems.push(format!(
                    "the executable offers {kind} `{symbol}`, which the manifest does not list"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::SymbolsMismatch {
                plugin: plugin.to_owned(),
                detail: problems.join("; "),
            })
        }
    }
}
