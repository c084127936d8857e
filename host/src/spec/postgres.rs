//! The `postgres` section of an output, and its validation.
//!
//! ```yaml
//! postgres:
//!   url: postgres://sluice:pw@db.internal:5432/analytics  # shown redacted
//!   table: public.event_counts      # [schema.]table
//!   mode: upsert                    # insert (default) | upsert
//!   key: [window_start, event_type] # the conflict target of `upsert`
//!   schema:                         # optional: the columns written; the table is
//!     - { name: event_type, type: string }      #   created from it when missing
//!     - { name: count, type: int64 }
//!   retry_for: 2m                   # how long an unreachable database is retried
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::parquet::ColumnSpec;

/// Where and how an output's records are written to a PostgreSQL table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSpec {
    /// A `postgres://` or `postgresql://` URL (libpq's URI form): user,
    /// host, port, database, password and options such as
    /// `connect_timeout`. Every read of a stored spec shows its password
    /// redacted.
    pub url: String,
    /// `table` or `schema.table` (unquoted identifiers: letters, digits,
    /// `_`, not starting with a digit; matched as PostgreSQL folds them,
    /// lowercased).
    pub table: String,
    #[serde(default)]
    pub mode: WriteMode,
    /// Columns of the conflict target of `upsert` (a primary key or unique
    /// constraint of the table).
    #[serde(default)]
    pub key: Vec<String>,
    /// The columns written. Absent: every column of the table that has no
    /// default, with the table's types and nullability. Present: these
    /// columns, checked against the table, which is created from them when
    /// it does not exist.
    #[serde(default)]
    pub schema: Option<Vec<ColumnSpec>>,
    /// How long a database that cannot be reached is retried (with
    /// back-off, the pipeline's offsets held) before the pipeline fails.
    #[serde(default = "PostgresSpec::default_retry_for", with = "humantime_serde")]
    pub retry_for: Duration,
}

/// How rows are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteMode {
    /// `INSERT`: every record is a new row (append-mode results).
    #[default]
    Insert,
    /// `INSERT ... ON CONFLICT (key) DO UPDATE`: a record replaces the row
    /// of its key (update-mode window results); of a batch's records of one
    /// key, the last wins.
    Upsert,
}

impl PostgresSpec {
    fn default_retry_for() -> Duration {
        Duration::from_secs(120)
    }

    /// The table's schema and name, as PostgreSQL folds unquoted names.
    pub fn table_name(&self) -> (String, String) {
        match self.table.split_once('.') {
            Some((schema, table)) => (schema.to_ascii_lowercase(), table.to_ascii_lowercase()),
            None => ("public".to_owned(), self.table.to_ascii_lowercase()),
        }
    }

    /// Rejects impossible settings; the message starts with the field it is
    /// about, relative to this section.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err("url: must be a postgres:// or postgresql:// URL".to_owned());
        }
        let config: tokio_postgres::Config = self.url.parse().map_err(|e| format!("url: {e}"))?;
        // A socket path would reach the server's file system.
        if config
            .get_hosts()
            .iter()
            .any(|h| !matches!(h, tokio_postgres::config::Host::Tcp(_)))
        {
            return Err("url: only TCP hosts are allowed, not Unix socket paths".to_owned());
        }
        let parts: Vec<&str> = self.table.split('.').collect();
        if parts.len() > 2 || parts.iter().any(|p| !is_identifier(p)) {
            return Err(format!(
                "table: \"{}\" is not `table` or `schema.table` of unquoted identifiers \
                 (letters, digits and `_`, not starting with a digit)",
                self.table
            ));
        }
        for (i, k) in self.key.iter().enumerate() {
            if !is_identifier(k) {
                return Err(format!("key[{i}]: \"{k}\" is not an unquoted identifier"));
            }
            if self.key[..i].contains(k) {
                return Err(format!("key[{i}]: \"{k}\" is listed twice"));
            }
        }
        match self.mode {
            WriteMode::Upsert if self.key.is_empty() => {
                return Err("key: `mode: upsert` needs the key columns to upsert on".to_owned());
            }
            WriteMode::Insert if !self.key.is_empty() => {
                return Err("key: only `mode: upsert` uses a key".to_owned());
            }
            _ => {}
        }
        if let Some(schema) = &self.schema {
            if schema.is_empty() {
                return Err("schema: must list at least one column (or be left out)".to_owned());
            }
            for (i, c) in schema.iter().enumerate() {
                if !is_identifier(&c.name) {
                    return Err(format!(
                        "schema[{i}].name: \"{}\" is not an unquoted identifier",
                        c.name
                    ));
                }
                if schema[..i].iter().any(|o| o.name == c.name) {
                    return Err(format!("schema[{i}].name: duplicate column \"{}\"", c.name));
                }
            }
            for (i, k) in self.key.iter().enumerate() {
                if !schema.iter().any(|c| &c.name == k) {
                    return Err(format!("key[{i}]: \"{k}\" is not a column of the schema"));
                }
            }
        }
        if self.retry_for > Duration::from_secs(24 * 3600) {
            return Err("retry_for: must be at most 24h".to_owned());
        }
        Ok(())
    }
}

/// An unquoted SQL identifier of at most 63 bytes (PostgreSQL's limit),
/// lowercase-folded by the database: safe to put in statements unquoted.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<PostgresSpec, String> {
        let spec: PostgresSpec = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        spec.validate().map(|()| spec)
    }

    #[test]
    fn a_minimal_section_inserts_into_a_public_table() {
        let s = spec("{ url: 'postgres://u@h/db', table: Counts }").unwrap();
        assert_eq!(s.mode, WriteMode::Insert);
        assert_eq!(s.table_name(), ("public".to_owned(), "counts".to_owned()));
        assert_eq!(s.retry_for, Duration::from_secs(120));
    }

    #[test]
    fn impossible_settings_are_refused_with_the_field() {
        let cases = [
            (
                "{ url: 'mysql://h/db', table: t }",
                "url: must be a postgres:// or postgresql:// URL",
            ),
            (
                "{ url: 'postgres://h/db', table: 't; drop table x' }",
                "table: \"t; drop table x\" is not `table` or `schema.table` of unquoted \
                 identifiers (letters, digits and `_`, not starting with a digit)",
            ),
            (
                "{ url: 'postgres://h/db', table: a.b.c }",
                "table: \"a.b.c\" is not `table` or `schema.table` of unquoted identifiers \
                 (letters, digits and `_`, not starting with a digit)",
            ),
            (
                "{ url: 'postgres://u@%2Frun%2Fpostgresql/db', table: t }",
                "url: only TCP hosts are allowed, not Unix socket paths",
            ),
            (
                "{ url: 'postgres://u@h/db?host=/tmp', table: t }",
                "url: only TCP hosts are allowed, not Unix socket paths",
            ),
            (
                "{ url: 'postgres://h/db', table: t, mode: upsert }",
                "key: `mode: upsert` needs the key columns to upsert on",
            ),
            (
                "{ url: 'postgres://h/db', table: t, key: [a] }",
                "key: only `mode: upsert` uses a key",
            ),
            (
                "{ url: 'postgres://h/db', table: t, mode: upsert, key: [a, \"b\\\"\"] }",
                "key[1]: \"b\"\" is not an unquoted identifier",
            ),
            (
                "{ url: 'postgres://h/db', table: t, mode: upsert, key: [a], schema: [{ name: b, type: string }] }",
                "key[0]: \"a\" is not a column of the schema",
            ),
            (
                "{ url: 'postgres://h/db', table: t, schema: [{ name: b, type: string }, { name: b, type: int64 }] }",
                "schema[1].name: duplicate column \"b\"",
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(spec(yaml).unwrap_err(), want, "{yaml}");
        }
    }
}
