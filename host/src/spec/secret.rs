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
    if let Some(Value::Object(outputs)) = spec.get_mut("outputs") {
        for output in outputs.values_mut() {
            if let Some(Value::String(url)) = output.pointer_mut("/postgres/url") {
                *url = redacted_url(url);
            }
        }
    }
    spec
}

/// A database URL with the password of its user part (`user:password@`)
/// and any `password=` option replaced by `<redacted>`.
pub fn redacted_url(url: &str) -> String {
    const REDACTED: &str = "<redacted>";
    let mut out = url.to_owned();
    if let Some(scheme) = out.find("://") {
        let rest = scheme + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@')
            && let Some(colon) = out[rest..rest + at].find(':')
        {
            out.replace_range(rest + colon + 1..rest + at, REDACTED);
        }
    }
    if let Some(q) = out.find('?') {
        let query: Vec<String> = out[q + 1..]
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={REDACTED}"),
                _ => pair.to_owned(),
            })
            .collect();
        out.replace_range(q + 1.., &query.join("&"));
    }
    out
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

    #[test]
    fn database_passwords_are_redacted_wherever_the_url_has_them() {
        let cases = [
            (
                "postgres://u:pw@h:5432/db",
                "postgres://u:<redacted>@h:5432/db",
            ),
            ("postgres://u:p@ss@h/db", "postgres://u:<redacted>@h/db"),
            (
                "postgres://u@h/db?password=x&sslmode=disable",
                "postgres://u@h/db?password=<redacted>&sslmode=disable",
            ),
            ("postgres://h/db", "postgres://h/db"),
        ];
        for (url, want) in cases {
            assert_eq!(redacted_url(url), want, "{url}");
        }
        let spec = serde_json::json!({"outputs": {"default": {"postgres": {"url": "postgres://u:pw@h/db", "table": "t"}}}});
        assert_eq!(
            redacted(spec)["outputs"]["default"]["postgres"]["url"],
            "postgres://u:<redacted>@h/db"
        );
    }
}
