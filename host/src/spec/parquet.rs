//! The `parquet` section of an output, and its validation.
//!
//! ```yaml
//! parquet:
//!   path: out/events              # relative to the spec file's directory
//!   schema:                       # optional: inferred from the first record if absent
//!     - { name: event_type, type: string }
//!     - { name: amount, type: float64, nullable: true }
//!     - { name: ts, type: timestamp_ms }
//!   partition_by:                 # optional: either key, or both (field first)
//!     field: event_type           #   -> event_type=click/
//!     time: "date=%Y-%m-%d/hour=%H"   # UTC, of the window start or the record timestamp
//!   max_file_size: 128MiB         # default
//!   max_file_age: 5m              # default
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use chrono::format::{Item, StrftimeItems};
use serde::{Deserialize, Serialize};

/// Where and how an output's records are written as Parquet files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSpec {
    /// Directory the files go to (created if missing). Relative paths are
    /// resolved by the caller.
    pub path: PathBuf,
    /// Columns, in file order. Absent: inferred from the first record's
    /// top-level JSON fields (in the record's order), then fixed; every
    /// inferred column is nullable.
    #[serde(default)]
    pub schema: Option<Vec<ColumnSpec>>,
    /// Hive-style partition directories.
    #[serde(default)]
    pub partition_by: Option<PartitionBy>,
    /// Roll to a new file once the open one reaches about this size
    /// (encoded bytes, checked every few thousand rows and after each batch).
    #[serde(default = "ParquetSpec::default_max_file_size")]
    pub max_file_size: ByteSize,
    /// Roll to a new file once the open one is this old. Files are also
    /// always closed at each checkpoint.
    #[serde(
        default = "ParquetSpec::default_max_file_age",
        with = "humantime_serde"
    )]
    pub max_file_age: Duration,
}

/// One column of the files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The top-level JSON field the column is read from.
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether the field may be missing or `null`.
    #[serde(default)]
    pub nullable: bool,
}

/// The type of a column, and which JSON values it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// A JSON string (UTF-8).
    String,
    /// A JSON integer in the range of `i64` (no fraction, no exponent).
    Int64,
    /// Any JSON number.
    Float64,
    /// `true` or `false`.
    Bool,
    /// Milliseconds since the Unix epoch, UTC: a JSON integer, or an
    /// RFC 3339 string such as `2024-05-01T12:00:00.250Z`.
    TimestampMs,
}

impl ColumnType {
    /// The name used in the spec and in rejection reasons.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Bool => "bool",
            ColumnType::TimestampMs => "timestamp_ms",
        }
    }
}

/// Hive-style partition directories, `field` first when both are given:
/// `{ field: event_type }` -> `event_type=click/`,
/// `{ time: "date=%Y-%m-%d/hour=%H" }` -> `date=2024-05-01/hour=13/`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionBy {
    /// A column of the schema; its value names the directory
    /// `<field>=<value>` (percent-encoded; missing, null or empty:
    /// `__HIVE_DEFAULT_PARTITION__`). The column stays in the files too.
    #[serde(default)]
    pub field: Option<String>,
    /// A strftime pattern (UTC) applied to the record's window start (the
    /// results of an aggregate step) or else its timestamp. `/` separates
    /// directories.
    #[serde(default)]
    pub time: Option<String>,
}

impl ParquetSpec {
    fn default_max_file_size() -> ByteSize {
        ByteSize::mib(128)
    }

    fn default_max_file_age() -> Duration {
        Duration::from_secs(5 * 60)
    }

    /// Rejects impossible settings; the message starts with the field it is
    /// about, relative to this section (`schema[2].name: ...`).
    pub fn validate(&self) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err("path: must not be empty".to_owned());
        }
        if let Some(schema) = &self.schema {
            validate_schema(schema)?;
        }
        if let Some(p) = &self.partition_by {
            if p.field.is_none() && p.time.is_none() {
                return Err("partition_by: needs `field`, `time`, or both".to_owned());
            }
            if let Some(field) = &p.field {
                validate_partition_field(field, self.schema.as_deref())?;
            }
            if let Some(pattern) = &p.time {
                time_items(pattern).map_err(|e| format!("partition_by.time: {e}"))?;
            }
        }
        if self.max_file_size.as_u64() == 0 {
            return Err("max_file_size: must be more than 0".to_owned());
        }
        if self.max_file_age.is_zero() {
            return Err("max_file_age: must be more than 0".to_owned());
        }
        Ok(())
    }
}

fn validate_schema(schema: &[ColumnSpec]) -> Result<(), String> {
    if schema.is_empty() {
        return Err(
            "schema: must list at least one column (or be left out to infer it)".to_owned(),
        );
    }
    for (i, column) in schema.iter().enumerate() {
        if column.name.is_empty() {
            return Err(format!("schema[{i}].name: must not be empty"));
        }
        if schema[..i].iter().any(|c| c.name == column.name) {
            return Err(format!(
                "schema[{i}].name: duplicate column \"{}\"",
                column.name
            ));
        }
    }
    Ok(())
}

fn validate_partition_field(field: &str, schema: Option<&[ColumnSpec]>) -> Result<(), String> {
    if field.is_empty() {
        return Err("partition_by.field: must not be empty".to_owned());
    }
    // Readers skip directories starting with `.` or `_`; `/` and `=` would
    // break the `name=value` directory.
    if field.starts_with(['.', '_']) || field.contains(['/', '\\', '=']) {
        return Err(format!(
            "partition_by.field: \"{field}\" cannot name a directory \
             (no leading `.` or `_`, no `/`, `\\` or `=`)"
        ));
    }
    if let Some(schema) = schema
        && !schema.iter().any(|c| c.name == field)
    {
        return Err(format!(
            "partition_by.field: \"{field}\" is not a column of the schema"
        ));
    }
    Ok(())
}

/// The parsed strftime pattern of `partition_by.time`, checked to make
/// relative directory names that readers do not skip.
pub(crate) fn time_items(pattern: &str) -> Result<Vec<Item<'static>>, String> {
    let items = StrftimeItems::new(pattern)
        .parse_to_owned()
        .map_err(|_| format!("\"{pattern}\" is not a valid strftime pattern"))?;
    let sample = chrono::DateTime::from_timestamp_millis(0).expect("the epoch is a valid time");
    let mut formatted = String::new();
    write!(formatted, "{}", sample.format_with_items(items.iter()))
        .map_err(|_| format!("\"{pattern}\" is not a valid strftime pattern"))?;
    for segment in formatted.split('/') {
        if segment.is_empty() || segment.starts_with(['.', '_']) || segment.contains('\\') {
            return Err(format!(
                "\"{pattern}\" makes the directory \"{formatted}\": each `/`-separated part \
                 must be non-empty and not start with `.` or `_`"
            ));
        }
    }
    Ok(items)
}
