//! The `delta` section of an output, and its validation.
//!
//! ```yaml
//! delta:
//!   path: lake/event_counts         # relative to the spec file's directory
//!   mode: merge                     # append (default) | merge
//!   key: [window_start, event_type] # the columns `merge` matches rows on
//!   schema:                         # optional: inferred from the first record if absent;
//!     - { name: event_type, type: string }     #   a nullable column added here is
//!     - { name: count, type: int64 }           #   added to an existing table
//!   partition_by: [event_type]      # optional, when the table is created
//!   target_file_size: 128MiB        # default
//!   optimize_every: 100             # compact small files every N commits (0: never)
//! ```

use std::path::PathBuf;

use bytesize::ByteSize;
use serde::Deserialize;

use super::parquet::ColumnSpec;

/// Where and how an output's records are written to a Delta Lake table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaSpec {
    /// The table's directory (created with the table if missing), or
    /// `s3://bucket/prefix` in S3-compatible object storage (reached with
    /// the checkpoint's `s3` settings). Relative paths are resolved by the
    /// caller.
    pub path: PathBuf,
    #[serde(default)]
    pub mode: DeltaMode,
    /// The columns `merge` matches a record to a row on.
    #[serde(default)]
    pub key: Vec<String>,
    /// The columns written. Absent: the table's, or (for a new table)
    /// inferred from the first record, every column nullable. Present:
    /// checked against an existing table, whose missing nullable columns
    /// are added to it.
    #[serde(default)]
    pub schema: Option<Vec<ColumnSpec>>,
    /// Partition columns of a table this output creates.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// About the size of the data files written (a file rolls once it
    /// reaches it) and of those compaction makes.
    #[serde(default = "DeltaSpec::default_target_file_size")]
    pub target_file_size: ByteSize,
    /// Compacts the table's small files (Delta's `OPTIMIZE`) after every
    /// this many commits of this output; 0 never does.
    #[serde(default = "DeltaSpec::default_optimize_every")]
    pub optimize_every: u32,
}

/// How records become rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeltaMode {
    /// Every record is a new row (append-mode results).
    #[default]
    Append,
    /// A record replaces the row of its key, or is inserted (update-mode
    /// window results): Delta's `MERGE`. Of the records of one key between
    /// two commits, the last wins.
    Merge,
}

impl DeltaSpec {
    fn default_target_file_size() -> ByteSize {
        ByteSize::mib(128)
    }

    fn default_optimize_every() -> u32 {
        100
    }

    /// `s3://bucket/prefix` when the table is in S3.
    pub fn s3_url(&self) -> Option<&str> {
        self.path
            .to_str()
            .filter(|p| p.starts_with(super::S3_SCHEME))
    }

    /// Rejects impossible settings; the message starts with the field it is
    /// about, relative to this section.
    pub fn validate(&self) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err("path: must not be empty".to_owned());
        }
        if let Some(url) = self.path.to_str().filter(|p| p.contains("://")) {
            let bucket = url
                .strip_prefix(super::S3_SCHEME)
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default();
            if bucket.is_empty() {
                return Err("path: must be a directory or an s3://bucket/prefix URL".to_owned());
            }
        }
        let columns = self.schema.as_deref();
        if let Some(schema) = columns {
            if schema.is_empty() {
                return Err("schema: must list at least one column (or be left out)".to_owned());
            }
            for (i, c) in schema.iter().enumerate() {
                if !is_column_name(&c.name) {
                    return Err(format!(
                        "schema[{i}].name: \"{}\" is not a column name (letters, digits and `_`, \
                         not starting with a digit)",
                        c.name
                    ));
                }
                if schema[..i].iter().any(|o| o.name == c.name) {
                    return Err(format!("schema[{i}].name: duplicate column \"{}\"", c.name));
                }
            }
        }
        for (field, names) in [("key", &self.key), ("partition_by", &self.partition_by)] {
            for (i, k) in names.iter().enumerate() {
                if !is_column_name(k) {
                    return Err(format!("{field}[{i}]: \"{k}\" is not a column name"));
                }
                if names[..i].contains(k) {
                    return Err(format!("{field}[{i}]: \"{k}\" is listed twice"));
                }
                if let Some(schema) = columns
                    && !schema.iter().any(|c| &c.name == k)
                {
                    return Err(format!(
                        "{field}[{i}]: \"{k}\" is not a column of the schema"
                    ));
                }
            }
        }
        match self.mode {
            DeltaMode::Merge if self.key.is_empty() => {
                return Err("key: `mode: merge` needs the key columns to merge on".to_owned());
            }
            DeltaMode::Append if !self.key.is_empty() => {
                return Err("key: only `mode: merge` uses a key".to_owned());
            }
            _ => {}
        }
        if self.target_file_size.as_u64() < 1024 * 1024 {
            return Err("target_file_size: must be at least 1MiB".to_owned());
        }
        Ok(())
    }
}

/// A column name that needs no quoting in a predicate or a reader's SQL.
fn is_column_name(s: &str) -> bool {
    super::postgres::is_identifier(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<DeltaSpec, String> {
        let spec: DeltaSpec = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        spec.validate().map(|()| spec)
    }

    #[test]
    fn a_minimal_section_appends_in_128_mib_files_compacted_every_100_commits() {
        let s = spec("{ path: lake/t }").unwrap();
        assert_eq!(s.mode, DeltaMode::Append);
        assert_eq!(s.target_file_size, ByteSize::mib(128));
        assert_eq!(s.optimize_every, 100);
        assert!(s.partition_by.is_empty());
    }

    #[test]
    fn impossible_settings_are_refused_with_the_field() {
        let cases = [
            ("{ path: '' }", "path: must not be empty"),
            (
                "{ path: 'gs://b/t' }",
                "path: must be a directory or an s3://bucket/prefix URL",
            ),
            (
                "{ path: 's3:///t' }",
                "path: must be a directory or an s3://bucket/prefix URL",
            ),
            (
                "{ path: t, mode: merge }",
                "key: `mode: merge` needs the key columns to merge on",
            ),
            (
                "{ path: t, key: [a] }",
                "key: only `mode: merge` uses a key",
            ),
            (
                "{ path: t, mode: merge, key: [a, a] }",
                "key[1]: \"a\" is listed twice",
            ),
            (
                "{ path: t, partition_by: ['a b'] }",
                "partition_by[0]: \"a b\" is not a column name",
            ),
            (
                "{ path: t, partition_by: [c], schema: [{ name: a, type: string }] }",
                "partition_by[0]: \"c\" is not a column of the schema",
            ),
            (
                "{ path: t, schema: [{ name: \"x'y\", type: string }] }",
                "schema[0].name: \"x'y\" is not a column name (letters, digits and `_`, not \
                 starting with a digit)",
            ),
            (
                "{ path: t, schema: [] }",
                "schema: must list at least one column (or be left out)",
            ),
            (
                "{ path: t, target_file_size: 1KiB }",
                "target_file_size: must be at least 1MiB",
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(spec(yaml).unwrap_err(), want, "{yaml}");
        }
    }
}
