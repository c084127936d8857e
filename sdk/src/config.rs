//! The configuration a transform is started with.

use std::fmt::Display;
use std::str::FromStr;

use crate::Error;

/// Key/value configuration from the `config` map of the transform's step in
/// the pipeline spec, in spec order. Values that are not strings in the spec
/// (numbers, booleans, lists, maps) arrive as JSON text.
///
/// ```
/// use sluice_sdk::Config;
///
/// let config: Config = [("threshold", "0.5"), ("field", "amount")].into_iter().collect();
/// assert_eq!(config.get("field"), Some("amount"));
/// assert_eq!(config.parse::<f64>("threshold").unwrap(), Some(0.5));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// The value of `key`, if present (the first one, if the key repeats).
    ///
    /// ```
    /// let config: sluice_sdk::Config = [("mode", "strict")].into_iter().collect();
    /// assert_eq!(config.get("mode"), Some("strict"));
    /// assert_eq!(config.get("other"), None);
    /// ```
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an error saying it is missing.
    ///
    /// ```
    /// let config = sluice_sdk::Config::default();
    /// assert_eq!(config.require("topic").unwrap_err().to_string(), "missing config key `topic`");
    /// ```
    pub fn require(&self, key: &str) -> Result<&str, Error> {
        self.get(key)
            .ok_or_else(|| format!("missing config key `{key}`").into())
    }

    /// The value of `key` parsed with [`FromStr`]: `Ok(None)` if the key is
    /// absent, an error naming the key and the value if it does not parse.
    ///
    /// ```
    /// let config: sluice_sdk::Config = [("limit", "ten")].into_iter().collect();
    /// let err = config.parse::<u32>("limit").unwrap_err();
    /// assert_eq!(err.to_string(), "invalid value `ten` for config key `limit`: invalid digit found in string");
    /// assert_eq!(config.parse::<u32>("absent").unwrap(), None);
    /// ```
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        value
            .parse()
            .map(Some)
            .map_err(|e| format!("invalid value `{value}` for config key `{key}`: {e}").into())
    }

    /// All `(key, value)` entries, in spec order.
    ///
    /// ```
    /// let config: sluice_sdk::Config = [("a", "1"), ("b", "2")].into_iter().collect();
    /// let entries: Vec<_> = config.iter().collect();
    /// assert_eq!(entries, [("a", "1"), ("b", "2")]);
    /// ```
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// All keys, in spec order.
    ///
    /// ```
    /// let config: sluice_sdk::Config = [("a", "1"), ("b", "2")].into_iter().collect();
    /// assert_eq!(config.keys().collect::<Vec<_>>(), ["a", "b"]);
    /// ```
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// Refuses a configuration with a key outside `known`: an error naming
    /// the first unknown key, in spec order, which [`Transform::init`] or
    /// [`Aggregate::init`] returns as it is. Pass `&[]` for a step that takes
    /// no configuration.
    ///
    /// [`Transform::init`]: crate::Transform::init
    /// [`Aggregate::init`]: crate::Aggregate::init
    ///
    /// ```
    /// let config: sluice_sdk::Config = [("field", "amount"), ("feild", "x")].into_iter().collect();
    /// assert!(config.deny_unknown(&["field", "feild"]).is_ok());
    /// let err = config.deny_unknown(&["field"]).unwrap_err();
    /// assert_eq!(err.to_string(), "unknown config key `feild`");
    /// let err = config.deny_unknown(&[]).unwrap_err();
    /// assert_eq!(err.to_string(), "unknown config key `field`");
    /// ```
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), Error> {
        match self.keys().find(|key| !known.contains(key)) {
            None => Ok(()),
            Some(key) => Err(format!("unknown config key `{key}`").into()),
        }
    }

    /// Whether there are no entries.
    ///
    /// ```
    /// assert!(sluice_sdk::Config::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Builds a configuration from the entries the host passes to `init`.
///
/// ```
/// let config = sluice_sdk::Config::from(vec![("k".to_string(), "v".to_string())]);
/// assert_eq!(config.get("k"), Some("v"));
/// ```
impl From<Vec<(String, String)>> for Config {
    fn from(entries: Vec<(String, String)>) -> Self {
        Self { entries }
    }
}

/// Builds a configuration from pairs, handy in tests.
///
/// ```
/// let config: sluice_sdk::Config = [("k", "v")].into_iter().collect();
/// assert!(!config.is_empty());
/// ```
impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Config {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keys: &[&str]) -> Config {
        keys.iter().map(|k| (*k, "v")).collect()
    }

    fn denied(keys: &[&str], known: &[&str]) -> Option<String> {
        config(keys)
            .deny_unknown(known)
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn deny_unknown_accepts_known_keys_in_any_order_and_number() {
        assert_eq!(denied(&[], &[]), None);
        assert_eq!(denied(&[], &["a", "b"]), None);
        assert_eq!(denied(&["b", "a"], &["a", "b"]), None);
        // A repeated key is still a known key.
        assert_eq!(denied(&["a", "a"], &["a"]), None);
    }

    #[test]
    fn deny_unknown_names_the_first_unknown_key_in_spec_order() {
        assert_eq!(denied(&["x"], &[]).unwrap(), "unknown config key `x`");
        assert_eq!(
            denied(&["a", "z", "y"], &["a"]).unwrap(),
            "unknown config key `z`"
        );
        // Keys are compared exactly: no trimming, no case folding.
        assert_eq!(denied(&["A"], &["a"]).unwrap(), "unknown config key `A`");
        assert_eq!(
            denied(&["trig ger"], &["trigger"]).unwrap(),
            "unknown config key `trig ger`"
        );
    }
}
