//! `meter`: the plugin of shmplug's plugin author's guide (`docs/guide.md`).
//!
//! | symbol | kind | what it does |
//! | --- | --- | --- |
//! | `csv` | source | emits one tuple per line of a CSV file, one field per column ([`Csv`]) |
//! | `power` | function | `power(voltage, current)`: their product ([`Power`]) |
//! | `summary` | sink | counts and sums one field per value of another, written to a file at the end ([`Summary`]) |
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use shmplug_sdk::{
    Arg, Emitter, Function, FunctionContext, PluginConfig, PluginError, Props, PropsExt, Sink,
    SinkContext, Source, SourceContext, TupleBuilder, TupleView, Value, ValueRef, ValueView,
};

/// The plugin: its name (as in `meter.json`) and a factory per symbol.
pub fn plugin_config() -> PluginConfig {
    PluginConfig::new("meter")
        .source("csv", Csv::default)
        .function("power", || Power)
        .sink("summary", Summary::default)
}

/// The `csv` source: the file's first line names the columns; each further line becomes a
/// tuple with one field per column, an integer, a float or else a string.
///
/// | property | default | meaning |
/// | --- | --- | --- |
/// | `path` | required | the CSV file (relative: to the pipeline file's directory) |
/// | `timestamp_column` | none | a column of RFC 3339 times that stamps each tuple; otherwise the time it is read |
/// | `interval` | `0` | a pause after each line (milliseconds or `"10ms"`, `"1s"`) |
#[derive(Debug, Default)]
pub struct Csv {
    path: PathBuf,
    timestamp_column: Option<String>,
    interval: Duration,
}

impl Source for Csv {
    fn configure(&mut self, _data_source: &str, props: &Props) -> Result<(), PluginError> {
        self.path = props
            .path("path")?
            .ok_or_else(|| PluginError::missing("path", "the CSV file to read"))?;
        self.timestamp_column = props.string("timestamp_column")?.map(str::to_owned);
        self.interval = props.duration("interval")?.unwrap_or(Duration::ZERO);
        Ok(())
    }

    fn open(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
        let file = File::open(&self.path)
            .map_err(|e| PluginError::new(format!("cannot open {}: {e}", self.path.display())))?;
        let mut input = BufReader::new(file);
        let mut line = String::new();
        input.read_line(&mut line)?;
        let columns: Vec<String> = line.trim_end().split(',').map(str::to_owned).collect();
        let stamp = match &self.timestamp_column {
            None => None,
            Some(name) => Some(columns.iter().position(|c| c == name).ok_or_else(|| {
                PluginError::property(
                    "timestamp_column",
                    format!("no column `{name}` in {}", self.path.display()),
                )
            })?),
        };
        // One field list for every line: its fields borrow `line`, which is read into again.
        let mut builder = TupleBuilder::with_capacity(columns.len());
        let mut number = 1;
        loop {
            line.clear();
            if input.read_line(&mut line)? == 0 {
                break;
            }
            number += 1;
            let cells: Vec<&str> = line.trim_end().split(',').collect();
            if cells.len() != columns.len() {
                tracing::warn!(
                    "skipping line {number}: {} cells, expected {}",
                    cells.len(),
                    columns.len()
                );
                continue;
            }
            let timestamp = match stamp {
                Some(i) => shmplug_sdk::parse_timestamp(cells[i])
                    .map_err(|e| PluginError::new(format!("line {number}: {e}")))?,
                None => shmplug_sdk::now_nanos(),
            };
            let mut tuple = builder.tuple(timestamp);
            for (name, cell) in columns.iter().zip(&cells) {
                tuple.field(name, cell_value(cell));
            }
            if self.interval.is_zero() {
                // Published in batches: cheaper than waking the host for every line.
                emitter.emit_deferred(&tuple.as_tuple_ref())?;
            } else {
                emitter.emit(&tuple.as_tuple_ref())?;
                ctx.sleep(self.interval)?;
            }
        }
        emitter.flush();
        tracing::info!(lines = number - 1, "read {}", self.path.display());
        Ok(())
    }
}

/// A CSV cell as an integer, a float or a string.
fn cell_value(cell: &str) -> ValueRef<'_> {
    if let Ok(i) = cell.parse() {
        ValueRef::Int(i)
    } else if let Ok(f) = cell.parse() {
        ValueRef::Float(f)
    } else {
        ValueRef::String(cell)
    }
}

/// `power(voltage, current)`: the product of two numbers, as a float.
#[derive(Debug)]
pub struct Power;

impl Function for Power {
    /// Two arguments, checked when a pipeline is loaded (before any tuple flows).
    fn validate_args(&self, args: &[Arg<'_>]) -> Result<(), PluginError> {
        match args {
            [_, _] => Ok(()),
            _ => Err(PluginError::new(format!(
                "power takes two arguments (voltage, current), got {}",
                args.len()
            ))),
        }
    }

    fn validate(&self, args: &[ValueView<'_>]) -> Result<(), PluginError> {
        match args {
            [a, b] if number(a).is_some() && number(b).is_some() => Ok(()),
            _ => Err(PluginError::new(format!(
                "power takes two numbers (voltage, current), got {args:?}"
            ))),
        }
    }

    fn exec(&mut self, _: &FunctionContext, args: &[ValueView<'_>]) -> Result<Value, PluginError> {
        // `validate` has run: two numbers.
        let product = number(&args[0]).unwrap_or(0.0) * number(&args[1]).unwrap_or(0.0);
        Ok(Value::Float(product))
    }
}

fn number(value: &ValueView<'_>) -> Option<f64> {
    match *value {
        ValueView::Int(i) => Some(i as f64),
        ValueView::Float(f) => Some(f),
        _ => None,
    }
}

/// The `summary` sink: per value of the `key` field, how many tuples and the sum of their
/// `value` field, written as `KEY COUNT SUM` lines (or a JSON object) when the sink closes.
///
/// | property | default | meaning |
/// | --- | --- | --- |
/// | `path` | required | the file to write (relative: to the pipeline file's directory); its directory is created |
/// | `key` | `"site"` | the field to group by |
/// | `value` | `"power"` | the numeric field to sum |
/// | `format` | `"text"` | `text` or `json` |
#[derive(Debug, Default)]
pub struct Summary {
    path: PathBuf,
    key: String,
    value: String,
    json: bool,
    /// Count and sum per key.
    pub totals: BTreeMap<String, (u64, f64)>,
}

impl Sink for Summary {
    fn configure(&mut self, props: &Props) -> Result<(), PluginError> {
        self.path = props
            .path("path")?
            .ok_or_else(|| PluginError::missing("path", "the file to write the summary to"))?;
        self.key = props.string("key")?.unwrap_or("site").to_owned();
        self.value = props.string("value")?.unwrap_or("power").to_owned();
        self.json = props.one_of("format", &["text", "json"])? == Some("json");
        Ok(())
    }

    fn collect(&mut self, _: &SinkContext, tuple: &TupleView<'_>) -> Result<(), PluginError> {
        let key = tuple
            .get(&self.key)
            .and_then(|k| k.as_str())
            .ok_or_else(|| {
                PluginError::new(format!("the tuple has no string field `{}`", self.key))
            })?;
        let value = tuple
            .get(&self.value)
            .as_ref()
            .and_then(number)
            .ok_or_else(|| {
                PluginError::new(format!("the tuple has no numeric field `{}`", self.value))
            })?;
        match self.totals.get_mut(key) {
            Some((count, sum)) => {
                *count += 1;
                *sum += value;
            }
            None => {
                self.totals.insert(key.to_owned(), (1, value));
            }
        }
        Ok(())
    }

    fn close(&mut self, _: &SinkContext) -> Result<(), PluginError> {
        let text = if self.json {
            let totals: serde_json::Map<String, serde_json::Value> = self
                .totals
                .iter()
                .map(|(k, (n, s))| (k.clone(), serde_json::json!({"count": n, "sum": s})))
                .collect();
            format!("{}\n", serde_json::Value::Object(totals))
        } else {
            self.totals
                .iter()
                .map(|(k, (n, s))| format!("{k} {n} {s:.3}\n"))
                .collect()
        };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            File::create(&self.path)?.write_all(text.as_bytes())
        };
        write().map_err(|e| PluginError::new(format!("cannot write {}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use shmplug_sdk::{Tuple, Value, testing};

    use super::*;

    #[test]
    fn csv_emits_one_typed_tuple_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, "time,site,v\n1970-01-01T00:00:01Z,north,230\n1970-01-01T00:00:02Z,south,1.5\nbad line\n").unwrap();
        let props = json!({"path": path, "timestamp_column": "time"});
        let tuples =
            testing::run_source(Csv::default(), "", props, 10, Duration::from_secs(10)).unwrap();
        assert_eq!(tuples.len(), 2);
        assert_eq!(tuples[0].timestamp, 1_000_000_000);
        assert_eq!(tuples[0].fields["site"], Value::from("north"));
        assert_eq!(tuples[0].fields["v"], Value::Int(230));
        assert_eq!(tuples[1].fields["v"], Value::Float(1.5));
    }

    #[test]
    fn csv_names_a_missing_path() {
        let e = testing::run_source(Csv::default(), "", json!({}), 1, Duration::from_secs(10));
        assert_eq!(
            e.unwrap_err().to_string(),
            "property `path`: is required: the CSV file to read"
        );
    }

    #[test]
    fn power_multiplies_two_numbers() {
        let p = testing::call_function(&mut Power, &[Value::Int(230), Value::Float(2.5)]).unwrap();
        assert_eq!(p, Value::Float(575.0));
        let e = testing::call_function(&mut Power, &[Value::from("x")]).unwrap_err();
        assert!(e.to_string().starts_with("power takes two numbers"), "{e}");
    }

    #[test]
    fn summary_counts_and_sums_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/summary.txt");
        let tuple = |site: &str, power: f64| {
            Tuple::new(0)
                .with_field("site", site)
                .with_field("power", power)
        };
        let tuples = [
            tuple("north", 1.0),
            tuple("south", 2.0),
            tuple("north", 0.5),
        ];
        testing::feed_sink(Summary::default(), json!({"path": path}), &tuples).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "north 2 1.500\nsouth 1 2.000\n"
        );
    }
}
