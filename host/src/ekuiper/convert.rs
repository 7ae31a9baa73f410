//! eKuiper's JSON at the host's edge: source messages into tuples, sink records and function
//! calls out of them, using the transport's JSON mapping (integers stay integers, bytes go out
//! as base64, timestamps as RFC 3339 text; eKuiper's Go engine reads every number as a float64,
//! which writes back as the same JSON text).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value as Json;
use shmplug_transport::{Tuple, Value, ValueView};

/// Now, in nanoseconds since the Unix epoch (the tuple timestamp unit): a source tuple's
/// timestamp is its receive time, as in eKuiper.
pub(crate) fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A source message, `{"message": {...}, "meta": {...}}`, as a tuple stamped `timestamp`.
///
/// # Errors
/// Text for a message that is not JSON, not of that shape, or the plugin's `emit_error`
/// (`{"error": ...}`).
pub(crate) fn source_message(bytes: &[u8], timestamp: i64) -> Result<Tuple, String> {
    let json: Json = serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
    let Json::Object(mut object) = json else {
        return Err("not a JSON object with a `message`".into());
    };
    if let Some(error) = object.get("error") {
        return Err(format!("the source reported an error: {}", text_of(error)));
    }
    let message = object.remove("message").unwrap_or(Json::Null);
    let mut tuple =
        Tuple::from_json_message(&message, timestamp).map_err(|e| format!("its `message`: {e}"))?;
    match object.remove("meta") {
        None | Some(Json::Null) => {}
        Some(meta) => match Value::from_json(&meta).map_err(|e| format!("its `meta`: {e}"))? {
            Value::Map(map) => tuple.meta = map,
            _ => return Err("its `meta` is not an object".into()),
        },
    }
    Ok(tuple)
}

/// A sink acknowledgement: `{}` is success, `{"error": ...}` a failure to collect.
///
/// # Errors
/// The plugin's error text, or a description of an acknowledgement that is neither.
pub(crate) fn sink_ack(bytes: &[u8]) -> Result<(), String> {
    match serde_json::from_slice::<Json>(bytes) {
        Ok(Json::Object(object)) => match object.get("error") {
            None => Ok(()),
            Some(error) => Err(text_of(error)),
        },
        _ => Err(format!(
            "an acknowledgement that is not a JSON object: {}",
            String::from_utf8_lossy(bytes)
        )),
    }
}

/// Writes `{"func":"Exec","arg":[args..., "<function meta>"]}` into `out`.
pub(crate) fn exec_request<'a>(
    out: &mut Vec<u8>,
    args: impl Iterator<Item = ValueView<'a>>,
    func_meta: &str,
) {
    let mut arg: Vec<Json> = args.map(|a| a.to_json()).collect();
    arg.push(Json::String(func_meta.to_owned()));
    let request = serde_json::json!({"func": "Exec", "arg": arg});
    // Writing a `serde_json::Value` into a vector cannot fail.
    let _ = serde_json::to_writer(out, &request);
}

/// A function's answer, `{"state": bool, "result": any}`: the result, or the error text when
/// `state` is false.
///
/// # Errors
/// The plugin's error text, or a description of an answer of another shape.
pub(crate) fn exec_reply(bytes: &[u8]) -> Result<Value, String> {
    let json: Json = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "the function's answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )
    })?;
    let state = json.get("state").and_then(Json::as_bool);
    let result = json.get("result").unwrap_or(&Json::Null);
    match state {
        Some(true) => Value::from_json(result).map_err(|e| format!("the function's result: {e}")),
        Some(false) => Err(text_of(result)),
        None => Err("the function's answer has no boolean `state`".into()),
    }
}

fn text_of(json: &Json) -> String {
    match json {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmplug_transport::Value;

    #[test]
    fn source_messages_become_tuples_with_meta() {
        let tuple = source_message(
            br#"{"message":{"id":3,"x":1.5,"name":"a","l":[1,true,null]},"meta":{"topic":"t"}}"#,
            42,
        )
        .unwrap();
        assert_eq!(tuple.timestamp, 42);
        assert_eq!(tuple.fields["id"], Value::Int(3));
        assert_eq!(tuple.fields["x"], Value::Float(1.5));
        assert_eq!(tuple.fields["name"], Value::String("a".into()));
        assert_eq!(
            tuple.fields["l"],
            Value::List(vec![Value::Int(1), Value::Bool(true), Value::Null])
        );
        assert_eq!(tuple.meta["topic"], Value::String("t".into()));
        let bare = source_message(br#"{"message":{"a":1}}"#, 1).unwrap();
        assert!(bare.meta.is_empty());
    }

    #[test]
    fn bad_source_messages_are_errors() {
        assert!(
            source_message(b"not json", 0)
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(source_message(b"[1]", 0).is_err());
        assert!(source_message(br#"{"message":[1]}"#, 0).is_err());
        assert!(source_message(br#"{"message":{},"meta":3}"#, 0).is_err());
        let err = source_message(br#"{"error":"disk full"}"#, 0).unwrap_err();
        assert!(err.contains("disk full"), "{err}");
        let deep = format!(
            "{{\"message\":{{\"a\":{}1{}}}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(source_message(deep.as_bytes(), 0).is_err());
    }

    #[test]
    fn calls_and_answers() {
        let mut out = Vec::new();
        exec_request(
            &mut out,
            [ValueView::Int(2), ValueView::String("s")].into_iter(),
            r#"{"ruleId":"r","opId":"o","instanceId":0,"funcId":1}"#,
        );
        let json: Json = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["func"], "Exec");
        assert_eq!(json["arg"][0], 2);
        assert_eq!(json["arg"][1], "s");
        assert!(json["arg"][2].as_str().unwrap().contains("\"funcId\":1"));
        assert_eq!(
            exec_reply(br#"{"state":true,"result":{"a":[1]}}"#).unwrap(),
            Value::Map([("a".to_string(), Value::List(vec![Value::Int(1)]))].into())
        );
        assert_eq!(
            exec_reply(br#"{"state":false,"result":"boom"}"#).unwrap_err(),
            "boom"
        );
        assert!(exec_reply(br#"{"result":1}"#).is_err());
        assert!(exec_reply(b"\xff").is_err());
    }

    #[test]
    fn acknowledgements() {
        assert!(sink_ack(b"{}").is_ok());
        assert_eq!(sink_ack(br#"{"error":"full"}"#).unwrap_err(), "full");
        assert!(sink_ack(b"ok").is_err());
    }
}
