//! Reading the properties the example symbols take.

use std::time::Duration;

use serde_json::Value as Json;
use shmplug_sdk::{PluginError, Props};

/// `props[name]` as a duration: a non-negative number of milliseconds (`500`, `"500"`), or a
/// string of numbers with units as Go's `time.ParseDuration` takes them (`"1.5s"`, `"1m30s"`,
/// `"250ms"`; units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`). `default` when absent.
pub(crate) fn duration(
    props: &Props,
    name: &str,
    default: Duration,
) -> Result<Duration, PluginError> {
    let bad = |value: &Json| {
        PluginError::property(
            name,
            format!(
                "expected milliseconds (like 1000) or a duration (like \"1s\" or \"250ms\"), \
                 got {value}"
            ),
        )
    };
    let Some(value) = props.get(name) else {
        return Ok(default);
    };
    match value {
        Json::Number(n) => n
            .as_f64()
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
            .ok_or_else(|| bad(value)),
        Json::String(s) => parse_duration(s).ok_or_else(|| bad(value)),
        _ => Err(bad(value)),
    }
}

/// Parses `"1m30s"`-style durations; a bare number is milliseconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(ms) = text.parse::<f64>() {
        return (ms.is_finite() && ms >= 0.0)
            .then(|| Duration::try_from_secs_f64(ms / 1000.0).ok())
            .flatten();
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

/// `props[name]` as a whole number at least `min`; `None` when absent.
pub(crate) fn integer(props: &Props, name: &str, min: i64) -> Result<Option<i64>, PluginError> {
    match props.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(value) => match value.as_i64() {
            Some(n) if n >= min => Ok(Some(n)),
            _ => Err(PluginError::property(
                name,
                format!("expected a whole number of at least {min}, got {value}"),
            )),
        },
    }
}

/// `props[name]` as a string; `None` when absent.
pub(crate) fn string<'p>(props: &'p Props, name: &str) -> Result<Option<&'p str>, PluginError> {
    match props.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(value) => Err(PluginError::property(
            name,
            format!("expected a string, got {value}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn props(value: Json) -> Props {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn durations_are_milliseconds_or_go_style_strings() {
        let d = |v: Json| duration(&props(json!({ "i": v })), "i", Duration::ZERO);
        assert_eq!(d(json!(250)).unwrap(), Duration::from_millis(250));
        assert_eq!(d(json!(0)).unwrap(), Duration::ZERO);
        assert_eq!(d(json!("1500")).unwrap(), Duration::from_millis(1500));
        assert_eq!(d(json!("1.5s")).unwrap(), Duration::from_millis(1500));
        assert_eq!(d(json!("1m30s")).unwrap(), Duration::from_secs(90));
        assert_eq!(d(json!("20us")).unwrap(), Duration::from_micros(20));
        for bad in [
            json!(-1),
            json!("soon"),
            json!("5 parsecs"),
            json!(true),
            json!(""),
        ] {
            let e = d(bad.clone()).unwrap_err().to_string();
            assert!(e.starts_with("property `i`: expected milliseconds"), "{e}");
            assert!(e.ends_with(&format!("got {bad}")), "{e}");
        }
        let absent = duration(&Props::new(), "i", Duration::from_secs(1)).unwrap();
        assert_eq!(absent, Duration::from_secs(1));
    }

    #[test]
    fn integers_and_strings() {
        let p = props(json!({"n": 5, "s": "x", "f": 1.5}));
        assert_eq!(integer(&p, "n", 1).unwrap(), Some(5));
        assert_eq!(integer(&p, "missing", 1).unwrap(), None);
        assert!(integer(&p, "n", 6).is_err());
        assert!(integer(&p, "f", 0).is_err());
        assert_eq!(string(&p, "s").unwrap(), Some("x"));
        assert_eq!(
            string(&p, "n").unwrap_err().to_string(),
            "property `n`: expected a string, got 5"
        );
    }
}
