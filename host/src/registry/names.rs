//! Names and references of modules, as users write them.

use std::str::FromStr;

use super::StoreError;

/// Checks a module name: `^[a-z0-9][a-z0-9-]{0,62}$` (so it is a safe file
/// and URL path segment: no dots, slashes or upper case).
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let bytes = name.as_bytes();
    let valid = (1..=63).contains(&bytes.len())
        && bytes[0] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_owned()))
    }
}

/// Parses a version: a positive integer without sign or leading zeros.
pub fn parse_version(text: &str) -> Result<u32, StoreError> {
    let invalid = || StoreError::InvalidVersion(text.to_owned());
    if text.is_empty() || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    text.parse().map_err(|_| invalid())
}

/// `name` or `name@version`, as users write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRef {
    pub name: String,
    /// `None`: every version (or the latest, depending on the operation).
    pub version: Option<u32>,
}

impl FromStr for ModuleRef {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, StoreError> {
        let (name, version) = match text.split_once('@') {
            Some((name, version)) => (name, Some(parse_version(version)?)),
            None => (text, None),
        };
        validate_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            version,
        })
    }
}

impl std::fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Some(version) => write!(f, "{}@{version}", self.name),
            None => f.write_str(&self.name),
        }
    }
}
