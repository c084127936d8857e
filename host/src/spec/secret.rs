//! Secrets in a spec: config values marked `{ secret: "..." }`, and config
//! keys and Kafka properties whose names look secret. The guest gets a marked
//! value as its string; every read of a stored spec shows it redacted.

use serde_json::Value;

/// The inner string of a config value marked secret, `{ secret: "..." }`.
pub fn marked_secret(value: &Value) -> Option<&str> {
    match value.as_object() {
        Some(object) if object.len() == 1 => object.get("secret")?.as_str(),
        _ => None,
    }
}

/// Key fragments that make a config key or Kafka property a secret even
/// unmarked (compared lowercased).
pub const SECRET_KEYS: [&str; 11] = [
    "password",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "credential",
    "private",
    "jaas",
    "oauthbearer.config",
    "key.pem",
];

/// Whether config entry `key: value` is a secret: marked, or its key looks
/// like one.
pub fn is_secret_config(key: &str, value: &Value) -> bool {
    let key = key.to_ascii_lowercase();
    marked_secret(value).is_some() || SECRET_KEYS.iter().any(|s| key.contains(s))
}

/// The spec with its secrets replaced by `"<redacted>"`: the values of
/// secret-looking Kafka properties and transform config keys, and config
/// values marked `{ secret: "..." }` (shown `{ secret: "<redacted>" }`).
/// Reading the API needs no token.
pub fn redacted(mut spec: Value) -> Value {
    const REDACTED: &str = "<redacted>";
    for side in ["consumer", "producer"] {
        if let Some(Value::Object(properties)) = spec.pointer_mut(&format!("/kafka/{side}")) {
            for (key, value) in properties.iter_mut() {
                let key = key.to_ascii_lowercase();
                if SECRET_KEYS.iter().any(|s| key.contains(s)) {
                    *value = Value::String(REDACTED.into());
                }
            }
        }
    }
    if let Some(Value::Array(steps)) = spec.get_mut("transforms") {
        for step in steps {
            let Some(Value::Object(config)) = step.get_mut("config") else {
                continue;
            };
            for (key, value) in config.iter_mut() {
                if marked_secret(value).is_some() {
                    *value = serde_json::json!({ "secret": REDACTED });
                } else if is_secret_config(key, value) {
                    *value = Value::String(REDACTED.into());
                }
            }
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TransformSpec;

    #[test]
    fn a_marked_secret_reaches_the_guest_as_its_string() {
        let step: TransformSpec = serde_json::from_str(
            r#"{"module": "m.wasm",
                "config": {"url": {"secret": "s3"}, "n": 3, "o": {"secret": 1}, "key": "v"}}"#,
        )
        .unwrap();
        assert_eq!(
            step.config_pairs(),
            [
                ("url".to_owned(), "s3".to_owned()),
                ("n".to_owned(), "3".to_owned()),
                ("o".to_owned(), r#"{"secret":1}"#.to_owned()),
                ("key".to_owned(), "v".to_owned()),
            ]
        );
        assert!(is_secret_config("url", &step.config["url"]));
        assert!(is_secret_config("Client_Secret", &serde_json::json!("x")));
        assert!(!is_secret_config("key", &step.config["key"]));
    }
}
