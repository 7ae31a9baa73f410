//! `shmplug plugins new NAME`: a new plugin crate in `./NAME` with a source, a sink and a
//! function, its manifest and tests through the SDK's harness, which builds and passes
//! `cargo test` as generated.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The SDK of the checkout this command was built from: the dependency a new crate gets until
/// the shmplug crates are published.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

/// Writes the crate `dir/name` (which must not exist) depending on the SDK at `sdk` (default:
/// this checkout's), and returns the files written, relative to it.
pub fn new_plugin(name: &str, dir: &Path, sdk: Option<&Path>) -> Result<(PathBuf, Vec<String>)> {
    check_name(name)?;
    let sdk = sdk_path(sdk)?;
    let root = dir.join(name);
    if root.exists() {
        return Err(Error::New(format!(
            "{} already exists; choose another name or remove it",
            root.display()
        )));
    }
    let files = files(name, &sdk);
    for (path, text) in &files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|source| Error::io("creating the plugin crate", parent, source))?;
        }
        std::fs::write(&path, text)
            .map_err(|source| Error::io("writing the plugin crate", &path, source))?;
    }
    Ok((root, files.into_iter().map(|(path, _)| path).collect()))
}

/// A plugin name: a lowercase letter, then lowercase letters, digits and underscores (a crate
/// name, a Rust identifier and a file name at once).
fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(Error::New(format!(
            "`{name}` cannot name a plugin: use a lowercase letter, then lowercase letters, \
             digits or `_` (at most 64), such as `meter` or `csv_reader`"
        )))
    }
}

/// The SDK directory, absolute, checked to be the SDK's.
fn sdk_path(given: Option<&Path>) -> Result<PathBuf> {
    let path = given.map_or_else(|| PathBuf::from(BUILT_SDK), Path::to_path_buf);
    let manifest = path.join("Cargo.toml");
    let is_sdk = std::fs::read_to_string(&manifest)
        .is_ok_and(|text| text.contains("name = \"shmplug-sdk\""));
    if !is_sdk {
        return Err(Error::New(format!(
            "{} is not the shmplug SDK (no Cargo.toml of `shmplug-sdk` there); pass --sdk with \
             the `sdk` directory of a shmplug checkout",
            path.display()
        )));
    }
    path.canonicalize()
        .map_err(|source| Error::io("resolving the SDK's directory", &path, source))
}

fn files(name: &str, sdk: &Path) -> Vec<(String, String)> {
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{sdk}}", &sdk.display().to_string())
    };
    vec![
        ("Cargo.toml".to_owned(), fill(CARGO_TOML)),
        (format!("{name}.json"), fill(MANIFEST)),
        ("src/main.rs".to_owned(), fill(MAIN)),
        ("src/lib.rs".to_owned(), fill(LIB)),
        ("tests/symbols.rs".to_owned(), fill(TESTS)),
        (".gitignore".to_owned(), "/target\n".to_owned()),
    ]
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
rust-version = "1.88"
publish = false

[dependencies]
# The shmplug SDK, by path, until the shmplug crates are published: this is the `sdk` directory
# of the checkout `shmplug plugins new` was built from. Point it at your own checkout, or, once
# published, write `shmplug-sdk = "0.1"`.
shmplug-sdk = { path = "{{sdk}}" }
tracing = "0.1"

[dev-dependencies]
serde_json = "1"

[profile.release]
codegen-units = 1
lto = "thin"

# A workspace of its own; remove this to make the crate a member of an enclosing workspace.
[workspace]
"#;

const MANIFEST: &str = r#"{
  "version": "v0.1.0",
  "language": "rust",
  "executable": "{{name}}",
  "sources": ["counter"],
  "sinks": ["log"],
  "functions": ["double"]
}
"#;

const MAIN: &str = r#"//! The `{{name}}` plugin executable, started by the shmplug host.

fn main() {
    shmplug_sdk::start(std::env::args(), {{name}}::plugin_config())
}
"#;

const LIB: &str = r#"//! The `{{name}}` shmplug plugin: source `counter`, function `double`, sink `log`.
//!
//! Keep `{{name}}.json` (the manifest) listing exactly the symbols of [`plugin_config`].

use std::time::Duration;

use shmplug_sdk::{
    Arg, Emitter, Function, FunctionContext, PluginConfig, PluginError, Props, PropsExt, Sink,
    SinkContext, Source, SourceContext, TupleBuilder, TupleView, Value, ValueRef, ValueView,
};

/// The plugin: its name, as in `{{name}}.json`, and a factory per symbol.
pub fn plugin_config() -> PluginConfig {
    PluginConfig::new("{{name}}")
        .source("counter", Counter::default)
        .function("double", || Double)
        .sink("log", Log::default)
}

/// Source `counter`: emits `{"n": 0}`, `{"n": 1}`, ...
///
/// | property | default | meaning |
/// | --- | --- | --- |
/// | `count` | unlimited | how many tuples, then the stream ends |
/// | `interval` | `"1s"` | the pause between tuples (milliseconds or `"250ms"`, `"1s"`) |
#[derive(Debug, Default)]
pub struct Counter {
    count: Option<i64>,
    interval: Duration,
}

impl Source for Counter {
    fn configure(&mut self, _data_source: &str, props: &Props) -> Result<(), PluginError> {
        self.count = props.integer_in("count", 0..=i64::MAX)?;
        self.interval = props
            .duration("interval")?
            .unwrap_or(Duration::from_secs(1));
        Ok(())
    }

    fn open(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
        let mut builder = TupleBuilder::new();
        let mut n = 0;
        while self.count.is_none_or(|count| n < count) {
            let mut tuple = builder.tuple(shmplug_sdk::now_nanos());
            tuple.field("n", ValueRef::Int(n));
            emitter.emit(&tuple.as_tuple_ref())?;
            n += 1;
            // Returns Err(Cancelled) when the host stops the instance: a normal end.
            ctx.sleep(self.interval)?;
        }
        Ok(())
    }
}

/// Function `double(x)`: twice a number.
#[derive(Debug)]
pub struct Double;

impl Function for Double {
    /// Checked once when a pipeline is loaded: one argument.
    fn validate_args(&self, args: &[Arg<'_>]) -> Result<(), PluginError> {
        match args {
            [_] => Ok(()),
            _ => Err(PluginError::new(format!(
                "double takes one argument, got {}",
                args.len()
            ))),
        }
    }

    /// Checked before each call: one number.
    fn validate(&self, args: &[ValueView<'_>]) -> Result<(), PluginError> {
        match args {
            [ValueView::Int(_) | ValueView::Float(_)] => Ok(()),
            _ => Err(PluginError::new(format!(
                "double takes one number, got {args:?}"
            ))),
        }
    }

    fn exec(&mut self, _: &FunctionContext, args: &[ValueView<'_>]) -> Result<Value, PluginError> {
        // `validate` has run: one number.
        Ok(match args[0] {
            ValueView::Int(i) => Value::Int(i.saturating_mul(2)),
            ValueView::Float(f) => Value::Float(2.0 * f),
            _ => Value::Null,
        })
    }
}

/// Sink `log`: logs each tuple's fields as JSON at `level` (`info` by default).
#[derive(Debug, Default)]
pub struct Log {
    debug: bool,
    /// How many tuples it has logged.
    pub logged: u64,
}

impl Sink for Log {
    fn configure(&mut self, props: &Props) -> Result<(), PluginError> {
        self.debug = props.one_of("level", &["info", "debug"])? == Some("debug");
        Ok(())
    }

    fn collect(&mut self, _: &SinkContext, tuple: &TupleView<'_>) -> Result<(), PluginError> {
        let message = tuple.to_json_message();
        if self.debug {
            tracing::debug!("{message}");
        } else {
            tracing::info!("{message}");
        }
        self.logged += 1;
        Ok(())
    }
}
"#;

const TESTS: &str = r#"//! The symbols of `{{name}}`, run through the SDK's test harness (real rings, no host).

use std::time::Duration;

use serde_json::json;
use shmplug_sdk::{Arg, Function, Tuple, Value, testing};
use {{name}}::{Counter, Double, Log};

#[test]
fn counter_emits_count_tuples() {
    let props = json!({"count": 3, "interval": 0});
    let tuples =
        testing::run_source(Counter::default(), "", props, 10, Duration::from_secs(10)).unwrap();
    let ns: Vec<Value> = tuples.iter().map(|t| t.fields["n"].clone()).collect();
    assert_eq!(ns, [Value::Int(0), Value::Int(1), Value::Int(2)]);
}

#[test]
fn counter_names_a_bad_property() {
    let error = testing::run_source(
        Counter::default(),
        "",
        json!({"interval": "soon"}),
        1,
        Duration::from_secs(10),
    )
    .unwrap_err();
    assert!(
        error.to_string().starts_with("property `interval`"),
        "{error}"
    );
}

#[test]
fn double_doubles_numbers_and_refuses_the_rest() {
    assert_eq!(
        testing::call_function(&mut Double, &[Value::Int(21)]).unwrap(),
        Value::Int(42)
    );
    assert_eq!(
        testing::call_function(&mut Double, &[Value::Float(1.5)]).unwrap(),
        Value::Float(3.0)
    );
    assert!(testing::call_function(&mut Double, &[Value::from("x")]).is_err());
    // The argument list, as a pipeline gives it, is checked before anything runs.
    assert!(Double.validate_args(&[Arg::Field("n")]).is_ok());
    assert!(Double.validate_args(&[]).is_err());
}

#[test]
fn log_takes_every_tuple() {
    let mut sink = Log::default();
    let tuples: Vec<Tuple> = (0..5i64)
        .map(|n| Tuple::new(n).with_field("n", n))
        .collect();
    testing::feed_sink(&mut sink, json!({"level": "debug"}), &tuples).unwrap();
    assert_eq!(sink.logged, 5);
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["meter", "csv_reader", "a1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Meter", "1meter", "my-plugin", "../x", "a b"] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains("cannot name a plugin"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_directory_that_is_not_the_sdk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = sdk_path(Some(dir.path())).unwrap_err().to_string();
        assert!(
            e.contains("is not the shmplug SDK") && e.contains("--sdk"),
            "{e}"
        );
        assert!(sdk_path(None).is_ok());
    }
}
