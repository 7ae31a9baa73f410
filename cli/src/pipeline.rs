//! The pipeline file `shmplug run` reads: TOML (`.toml`) or JSON (anything else). Every key and
//! default is in `docs/guide.md` ("Pipeline file reference"); relative paths in properties
//! resolve against the file's directory ([`Pipeline::base_dir`]), where the plugins run.
//!
//! ```toml
//! [source]
//! plugin = "mirror"
//! symbol = "random"
//! data_source = "demo"              # optional
//! properties = { interval = 10 }    # optional
//!
//! [[functions]]                     # zero or more, applied in order
//! plugin = "mirror"
//! symbol = "echo"
//! args = ["value"]                  # fields passed as arguments
//! output = "echoed"                 # field that receives the result
//! # window = 100                    # an aggregate function's count window (see below)
//!
//! [sink]
//! plugin = "mirror"
//! symbol = "file"
//! properties = { path = "out.txt" }  # beside this file
//! delivery = "at-least-once"        # optional (the default), or "at-most-once"
//!
//! [limits]                          # optional; Ctrl-C always stops
//! count = 100000
//! duration_secs = 10.0
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use shmplug_host::InstanceSpec;

use crate::error::{Error, Result};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub source: Stage,
    #[serde(default)]
    pub functions: Vec<Call>,
    pub sink: Stage,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub plugin: String,
    pub symbol: String,
    #[serde(default)]
    pub data_source: Option<String>,
    #[serde(default)]
    pub properties: serde_json::Map<String, serde_json::Value>,
    /// A sink's delivery: what happens to the tuples a killed process had not collected.
    #[serde(default)]
    pub delivery: Option<DeliveryChoice>,
}

/// `delivery` in the pipeline file.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryChoice {
    /// Written again to the restarted process (the default); duplicates possible and counted.
    AtLeastOnce,
    /// Dropped.
    AtMostOnce,
}

impl DeliveryChoice {
    pub fn delivery(self) -> shmplug_host::Delivery {
        match self {
            DeliveryChoice::AtLeastOnce => shmplug_host::Delivery::AtLeastOnce,
            DeliveryChoice::AtMostOnce => shmplug_host::Delivery::AtMostOnce,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub plugin: String,
    pub symbol: String,
    #[serde(default)]
    pub args: Vec<String>,
    pub output: String,
    #[serde(default)]
    pub properties: serde_json::Map<String, serde_json::Value>,
    /// For an aggregate function (and only for one): how many tuples make a window. The
    /// function is called once per window, each argument a list of the window's values, and
    /// one tuple goes on per window.
    #[serde(default)]
    pub window: Option<u64>,
}

/// The largest count window: the host keeps a window's argument values until it is full.
pub const MAX_WINDOW: u64 = 1_000_000;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub duration_secs: Option<f64>,
}

impl Stage {
    pub fn spec(&self) -> InstanceSpec {
        InstanceSpec {
            rule_id: "shmplug-run".into(),
            op_id: self.symbol.clone(),
            symbol: self.symbol.clone(),
            data_source: self.data_source.clone(),
            properties: self.properties.clone(),
            ring_capacity: None,
        }
    }
}

impl Call {
    /// The instance of the pipeline's call number `index` (0-based): its properties carry
    /// eKuiper's function id, `funcId` (the SDK's `FunctionContext::function_id`), set to
    /// `index` unless the file gives one.
    pub fn spec(&self, index: usize) -> InstanceSpec {
        let mut properties = self.properties.clone();
        properties
            .entry("funcId")
            .or_insert_with(|| serde_json::Value::from(index));
        InstanceSpec {
            rule_id: "shmplug-run".into(),
            op_id: self.output.clone(),
            symbol: self.symbol.clone(),
            data_source: None,
            properties,
            ring_capacity: None,
        }
    }
}

impl Pipeline {
    /// Reads and checks a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::io("reading pipeline", path, source))?;
        Pipeline::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Pipeline> {
        let invalid = |detail: String| Error::Pipeline {
            path: PathBuf::from(path),
            detail,
        };
        let pipeline: Pipeline = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(text).map_err(|e| invalid(format!("invalid TOML: {e}")))?
        } else {
            serde_json::from_str(text).map_err(|e| {
                invalid(format!(
                    "invalid JSON at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ))
            })?
        };
        for stage in [&pipeline.source, &pipeline.sink] {
            if stage.plugin.is_empty() || stage.symbol.is_empty() {
                return Err(invalid(
                    "`source` and `sink` each need a `plugin` and a `symbol`".into(),
                ));
            }
        }
        if pipeline.source.delivery.is_some() {
            return Err(invalid(
                "`delivery` is a sink's setting; remove it from `source`".into(),
            ));
        }
        for call in &pipeline.functions {
            if call.plugin.is_empty() || call.symbol.is_empty() || call.output.is_empty() {
                return Err(invalid(
                    "each `functions` entry needs `plugin`, `symbol` and `output`".into(),
                ));
            }
        }
        for call in &pipeline.functions {
            if let Some(n) = call.window
                && !(1..=MAX_WINDOW).contains(&n)
            {
                return Err(invalid(format!(
                    "`window` of the call that fills `{}` is {n}; give a number of tuples from 1 \
                     to {MAX_WINDOW}",
                    call.output
                )));
            }
        }
        if let Some(d) = pipeline.limits.duration_secs
            && !(d.is_finite() && d > 0.0)
        {
            return Err(invalid(format!(
                "`limits.duration_secs` is {d}; give a positive number of seconds"
            )));
        }
        Ok(pipeline)
    }

    /// The directory relative paths in the pipeline file at `path` resolve against: the
    /// file's own, made absolute. `shmplug run` starts its plugins there.
    pub fn base_dir(path: &Path) -> Result<PathBuf> {
        let absolute = std::path::absolute(path)
            .map_err(|source| Error::io("resolving the pipeline file's directory", path, source))?;
        Ok(absolute
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf))
    }

    /// Every plugin the pipeline uses, each once, in order of appearance.
    pub fn plugins(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let all = std::iter::once(&self.source.plugin)
            .chain(self.functions.iter().map(|f| &f.plugin))
            .chain(std::iter::once(&self.sink.plugin));
        for name in all {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[source]
plugin = "mirror"
symbol = "random"
properties = { interval = 10 }

[[functions]]
plugin = "mirror"
symbol = "echo"
args = ["value"]
output = "echoed"

[sink]
plugin = "files"
symbol = "file"
delivery = "at-most-once"

[limits]
count = 5
"#;

    #[test]
    fn parses_toml_and_json() {
        let p = Pipeline::parse(TOML, Path::new("p.toml")).unwrap();
        assert_eq!(p.functions[0].args, ["value"]);
        assert_eq!(p.limits.count, Some(5));
        assert_eq!(p.plugins(), ["mirror", "files"]);
        assert_eq!(p.source.spec().properties["interval"], 10);
        assert_eq!(p.sink.delivery, Some(DeliveryChoice::AtMostOnce));
        assert_eq!(p.source.delivery, None);
        assert_eq!(p.functions[0].spec(3).properties["funcId"], 3);
        let mut given = p.functions[0].clone();
        given.properties.insert("funcId".into(), 7.into());
        assert_eq!(given.spec(3).properties["funcId"], 7);
        let json = r#"{"source": {"plugin": "a", "symbol": "s"},
                       "sink": {"plugin": "a", "symbol": "k"}}"#;
        let p = Pipeline::parse(json, Path::new("p.json")).unwrap();
        assert!(p.functions.is_empty());
        assert_eq!(p.limits, Limits::default());
    }

    #[test]
    fn relative_paths_resolve_against_the_pipeline_files_directory() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            Pipeline::base_dir(Path::new("jobs/p.toml")).unwrap(),
            cwd.join("jobs")
        );
        assert_eq!(Pipeline::base_dir(Path::new("p.toml")).unwrap(), cwd);
        assert_eq!(
            Pipeline::base_dir(Path::new("/srv/jobs/p.toml")).unwrap(),
            Path::new("/srv/jobs")
        );
    }

    #[test]
    fn errors_say_where_and_what() {
        let err = Pipeline::parse("{\n \"source\": 1", Path::new("p.json")).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = Pipeline::parse("[source]\nplugin = \"a\"\n", Path::new("p.toml")).unwrap_err();
        assert!(err.to_string().contains("invalid TOML"), "{err}");
        let bad = TOML.replace("count = 5", "duration_secs = -1.0");
        let err = Pipeline::parse(&bad, Path::new("p.toml")).unwrap_err();
        assert!(err.to_string().contains("positive"), "{err}");
        let bad = TOML.replace("at-most-once", "exactly-once");
        assert!(Pipeline::parse(&bad, Path::new("p.toml")).is_err());
        let bad = TOML.replace(
            "interval = 10 }",
            "interval = 10 }\ndelivery = \"at-most-once\"",
        );
        let err = Pipeline::parse(&bad, Path::new("p.toml")).unwrap_err();
        assert!(err.to_string().contains("sink's setting"), "{err}");
        let bad = TOML.replace("output = \"echoed\"", "output = \"echoed\"\nwindow = 0");
        let err = Pipeline::parse(&bad, Path::new("p.toml")).unwrap_err();
        assert!(err.to_string().contains("from 1 to"), "{err}");
        let good = TOML.replace("output = \"echoed\"", "output = \"echoed\"\nwindow = 10");
        let p = Pipeline::parse(&good, Path::new("p.toml")).unwrap();
        assert_eq!(p.functions[0].window, Some(10));
        let unknown = TOML.replace("count = 5", "cuont = 5");
        assert!(Pipeline::parse(&unknown, Path::new("p.toml")).is_err());
    }
}
