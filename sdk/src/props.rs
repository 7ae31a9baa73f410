//! Typed readers of configuration properties: [`PropsExt`] on [`Props`].

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value as Json;

use crate::api::Props;
use crate::error::PluginError;
use crate::time::parse_timestamp;

/// Typed readers of [`Props`], each returning `Ok(None)` when the property is absent (or
/// JSON `null`), so that a default is `.unwrap_or(...)` and a required property is
/// `.ok_or_else(|| PluginError::missing(...))`. A property that is present but unusable is an
/// error that names the property, the value given and what would be accepted.
///
/// Numbers and booleans may also be given as strings (`"42"`, `"true"`), as eKuiper's
/// configuration files often hold them.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use serde_json::json;
/// use shmplug_sdk::{PluginError, Props, PropsExt};
///
/// let props: Props = json!({"interval": "1.5s", "retries": 3, "format": "CSV"})
///     .as_object().unwrap().clone();
/// let interval = props.duration("interval")?.unwrap_or(Duration::from_secs(1));
/// let retries = props.integer_in("retries", 0..=10)?.unwrap_or(5);
/// let format = props.one_of("format", &["json", "csv"])?.unwrap_or("json");
/// let path = props.string("path")?.ok_or_else(|| PluginError::missing("path", "the file to read"));
/// assert_eq!((interval, retries, format), (Duration::from_millis(1500), 3, "csv"));
/// assert_eq!(path.unwrap_err().to_string(), "property `path`: is required: the file to read");
///
/// let e = props.integer_in("retries", 5..=10).unwrap_err();
/// assert_eq!(e.to_string(), "property `retries`: expected a whole number from 5 to 10, got 3");
/// # Ok::<(), PluginError>(())
/// ```
pub trait PropsExt {
    /// The property as a string.
    ///
    /// # Errors
    /// A value that is not a string.
    fn string(&self, name: &str) -> Result<Option<&str>, PluginError>;

    /// The property as a whole number (`42` or `"42"`).
    ///
    /// # Errors
    /// A value that is not a whole number that fits an `i64`.
    fn integer(&self, name: &str) -> Result<Option<i64>, PluginError>;

    /// The property as a whole number within `range`.
    ///
    /// # Errors
    /// A value that is not a whole number in `range`.
    fn integer_in(
        &self,
        name: &str,
        range: RangeInclusive<i64>,
    ) -> Result<Option<i64>, PluginError>;

    /// The property as a finite number (`2.5`, `3` or `"2.5"`).
    ///
    /// # Errors
    /// A value that is not a finite number.
    fn float(&self, name: &str) -> Result<Option<f64>, PluginError>;

    /// The property as a boolean (`true`, `false`, `"true"`, `"false"`).
    ///
    /// # Errors
    /// Any other value.
    fn bool(&self, name: &str) -> Result<Option<bool>, PluginError>;

    /// The property as a duration: a non-negative number of milliseconds (`500`, `"500"`), or
    /// numbers with units as Go's `time.ParseDuration` reads them (`"1.5s"`, `"1m30s"`,
    /// `"250ms"`; units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`). See [`parse_duration`].
    ///
    /// # Errors
    /// Any other value.
    fn duration(&self, name: &str) -> Result<Option<Duration>, PluginError>;

    /// The property as one of `choices`, compared without regard to ASCII case; returns the
    /// choice as written in `choices`.
    ///
    /// # Errors
    /// A value that is not a string or not one of `choices`; the error lists them.
    fn one_of<'c>(&self, name: &str, choices: &[&'c str]) -> Result<Option<&'c str>, PluginError>;

    /// The property as an RFC 3339 timestamp (`"2026-12-03T14:00:00Z"`,
    /// `"2026-12-03T15:00:00.5+01:00"`), in nanoseconds since the Unix epoch, the unit of tuple
    /// timestamps. See [`parse_timestamp`].
    ///
    /// # Errors
    /// A value that is not such a string, or outside the years 1678 to 2262.
    fn timestamp(&self, name: &str) -> Result<Option<i64>, PluginError>;

    /// The property as a file system path, made absolute against the plugin's working
    /// directory. Under `shmplug run` that is the pipeline file's directory, so a relative
    /// path in a pipeline file means what its author sees beside the file.
    ///
    /// # Errors
    /// A value that is not a non-empty string, or a working directory that cannot be read.
    fn path(&self, name: &str) -> Result<Option<PathBuf>, PluginError>;
}

impl PropsExt for Props {
    fn string(&self, name: &str) -> Result<Option<&str>, PluginError> {
        match present(self, name) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(s)),
            Some(value) => Err(expected(name, "a string", value)),
        }
    }

    fn integer(&self, name: &str) -> Result<Option<i64>, PluginError> {
        let Some(value) = present(self, name) else {
            return Ok(None);
        };
        let n = match value {
            Json::Number(n) => n.as_i64(),
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        n.map(Some)
            .ok_or_else(|| expected(name, "a whole number", value))
    }

    fn integer_in(
        &self,
        name: &str,
        range: RangeInclusive<i64>,
    ) -> Result<Option<i64>, PluginError> {
        let what = match (*range.start(), *range.end()) {
            (i64::MIN, i64::MAX) => "a whole number".to_owned(),
            (min, i64::MAX) => format!("a whole number of at least {min}"),
            (i64::MIN, max) => format!("a whole number of at most {max}"),
            (min, max) => format!("a whole number from {min} to {max}"),
        };
        let Some(value) = present(self, name) else {
            return Ok(None);
        };
        match self.integer(name) {
            Ok(Some(n)) if range.contains(&n) => Ok(Some(n)),
            _ => Err(expected(name, &what, value)),
        }
    }

    fn float(&self, name: &str) -> Result<Option<f64>, PluginError> {
        let Some(value) = present(self, name) else {
            return Ok(None);
        };
        let f = match value {
            Json::Number(n) => n.as_f64(),
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        f.filter(|f: &f64| f.is_finite())
            .map(Some)
            .ok_or_else(|| expected(name, "a number", value))
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, PluginError> {
        match present(self, name) {
            None => Ok(None),
            Some(Json::Bool(b)) => Ok(Some(*b)),
            Some(Json::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Json::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(value) => Err(expected(name, "true or false", value)),
        }
    }

    fn duration(&self, name: &str) -> Result<Option<Duration>, PluginError> {
        let Some(value) = present(self, name) else {
            return Ok(None);
        };
        let d = match value {
            Json::Number(n) => n.as_f64().and_then(millis),
            Json::String(s) => parse_duration(s),
            _ => None,
        };
        d.map(Some).ok_or_else(|| {
            expected(
                name,
                "milliseconds (like 1000) or a duration (like \"1s\" or \"250ms\")",
                value,
            )
        })
    }

    fn one_of<'c>(&self, name: &str, choices: &[&'c str]) -> Result<Option<&'c str>, PluginError> {
        let Some(value) = present(self, name) else {
            return Ok(None);
        };
        let chosen = value
            .as_str()
            .and_then(|s| choices.iter().find(|c| c.eq_ignore_ascii_case(s)));
        chosen.map(|c| Some(*c)).ok_or_else(|| {
            let list: Vec<String> = choices.iter().map(|c| format!("`{c}`")).collect();
            expected(name, &format!("one of {}", list.join(", ")), value)
        })
    }

    fn timestamp(&self, name: &str) -> Result<Option<i64>, PluginError> {
        match self.string(name) {
            Ok(None) => Ok(None),
            Ok(Some(s)) => parse_timestamp(s)
                .map(Some)
                .map_err(|e| PluginError::property(name, e.to_string())),
            Err(_) => Err(expected(
                name,
                "an RFC 3339 timestamp such as \"2026-12-03T14:00:00Z\"",
                &self[name],
            )),
        }
    }

    fn path(&self, name: &str) -> Result<Option<PathBuf>, PluginError> {
        let path = match present(self, name) {
            None => return Ok(None),
            Some(Json::String(s)) if !s.is_empty() => PathBuf::from(s),
            Some(value) => return Err(expected(name, "a file path", value)),
        };
        std::path::absolute(&path).map(Some).map_err(|e| {
            PluginError::property(
                name,
                format!(
                    "cannot resolve {} against the working directory: {e}",
                    path.display()
                ),
            )
        })
    }
}

/// `props[name]` unless absent or null.
fn present<'p>(props: &'p Props, name: &str) -> Option<&'p Json> {
    props.get(name).filter(|v| !v.is_null())
}

fn expected(name: &str, what: &str, got: &Json) -> PluginError {
    PluginError::property(name, format!("expected {what}, got {got}"))
}

/// Non-negative finite milliseconds as a duration.
fn millis(ms: f64) -> Option<Duration> {
    (ms.is_finite() && ms >= 0.0)
        .then(|| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .flatten()
}

/// Parses a duration as Go's `time.ParseDuration` writes them (`"1.5s"`, `"1m30s"`,
/// `"250ms"`, `"20us"`; units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), or a bare number of
/// milliseconds (`"500"`). `None` for anything else, negative durations included.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmplug_sdk::parse_duration;
///
/// assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
/// assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_duration("soon"), None);
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(ms) = text.parse::<f64>() {
        return millis(ms);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(Duration::try_from_secs_f64(number * seconds_per_unit).ok()?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn props(value: Json) -> Props {
        value.as_object().unwrap().clone()
    }

    fn error(r: Result<impl std::fmt::Debug, PluginError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn durations_are_milliseconds_or_go_style_strings() {
        let d = |v: Json| props(json!({ "i": v })).duration("i");
        assert_eq!(d(json!(250)).unwrap(), Some(Duration::from_millis(250)));
        assert_eq!(d(json!(0)).unwrap(), Some(Duration::ZERO));
        assert_eq!(d(json!("1500")).unwrap(), Some(Duration::from_millis(1500)));
        assert_eq!(d(json!("1.5s")).unwrap(), Some(Duration::from_millis(1500)));
        assert_eq!(d(json!("1m30s")).unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(d(json!("20µs")).unwrap(), Some(Duration::from_micros(20)));
        assert_eq!(d(json!(null)).unwrap(), None);
        for bad in [
            json!(-1),
            json!("soon"),
            json!("5 parsecs"),
            json!(true),
            json!(""),
        ] {
            let e = error(d(bad.clone()));
            assert!(e.starts_with("property `i`: expected milliseconds"), "{e}");
            assert!(e.ends_with(&format!("got {bad}")), "{e}");
        }
        assert_eq!(Props::new().duration("i").unwrap(), None);
    }

    #[test]
    fn numbers_strings_and_booleans() {
        let p = props(json!({"n": 5, "ns": " 7", "f": 1.5, "s": "x", "b": "TRUE", "no": false}));
        assert_eq!(p.integer("n").unwrap(), Some(5));
        assert_eq!(p.integer("ns").unwrap(), Some(7));
        assert_eq!(p.integer("missing").unwrap(), None);
        assert_eq!(
            error(p.integer("f")),
            "property `f`: expected a whole number, got 1.5"
        );
        assert_eq!(p.integer_in("n", 1..=i64::MAX).unwrap(), Some(5));
        assert_eq!(
            error(p.integer_in("n", 6..=i64::MAX)),
            "property `n`: expected a whole number of at least 6, got 5"
        );
        assert_eq!(
            error(p.integer_in("s", i64::MIN..=0)),
            "property `s`: expected a whole number of at most 0, got \"x\""
        );
        assert_eq!(p.float("f").unwrap(), Some(1.5));
        assert_eq!(p.float("n").unwrap(), Some(5.0));
        assert_eq!(
            error(p.float("s")),
            "property `s`: expected a number, got \"x\""
        );
        assert_eq!(p.string("s").unwrap(), Some("x"));
        assert_eq!(
            error(p.string("n")),
            "property `n`: expected a string, got 5"
        );
        assert_eq!(p.bool("b").unwrap(), Some(true));
        assert_eq!(p.bool("no").unwrap(), Some(false));
        assert_eq!(
            error(p.bool("n")),
            "property `n`: expected true or false, got 5"
        );
    }

    #[test]
    fn one_of_lists_the_choices() {
        let p = props(json!({"format": "Json", "bad": "xml", "n": 1}));
        assert_eq!(p.one_of("format", &["json", "csv"]).unwrap(), Some("json"));
        assert_eq!(p.one_of("none", &["json"]).unwrap(), None);
        assert_eq!(
            error(p.one_of("bad", &["json", "csv"])),
            "property `bad`: expected one of `json`, `csv`, got \"xml\""
        );
        assert!(error(p.one_of("n", &["json"])).ends_with("got 1"));
    }

    #[test]
    fn timestamps_and_paths() {
        let p = props(
            json!({"t": "1970-01-01T00:00:01.5+00:00", "bad": "yesterday", "n": 3,
                             "rel": "data/in.csv", "empty": ""}),
        );
        assert_eq!(p.timestamp("t").unwrap(), Some(1_500_000_000));
        let e = error(p.timestamp("bad"));
        assert!(
            e.starts_with("property `bad`: expected an RFC 3339 timestamp"),
            "{e}"
        );
        assert!(e.contains("\"yesterday\""), "{e}");
        assert!(error(p.timestamp("n")).ends_with("got 3"));
        let rel = p.path("rel").unwrap().unwrap();
        assert_eq!(rel, std::env::current_dir().unwrap().join("data/in.csv"));
        assert_eq!(
            error(p.path("empty")),
            "property `empty`: expected a file path, got \"\""
        );
    }
}
