//! Schema inference from a record, and the partition directory of a row
//! (the rows themselves: `sink::row`).

use std::fmt::Write as _;

use chrono::format::Item;
use indexmap::IndexMap;
use serde_json::Value;

use super::config::{ColumnSpec, ColumnType};
pub(super) use crate::sink::row::{Cell, decode, parse_object};

/// Hive's name for the partition of a missing, null or empty value.
pub(super) const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// A schema from the top-level fields of a record, in the record's order:
/// strings, integers (that fit in `i64`), other numbers and booleans, all
/// nullable. Null, array and object fields are left out (their type is
/// unknown or has no column type); they are returned for the log.
pub(super) fn infer(
    value: Option<&[u8]>,
    partition_field: Option<&str>,
) -> Result<(Vec<ColumnSpec>, Vec<String>), String> {
    let bytes = value.ok_or_else(|| "parquet: the record has no value".to_owned())?;
    // Parsed again (the object form loses the field order): only until a
    // record gives a schema.
    let fields: IndexMap<String, Value> = serde_json::from_slice(bytes).map_err(|_| {
        "parquet: cannot infer the schema: the record is not a JSON object".to_owned()
    })?;
    let mut columns = Vec::new();
    let mut skipped = Vec::new();
    for (name, value) in fields {
        let ty = match &value {
            Value::String(_) => ColumnType::String,
            Value::Number(n) if n.is_i64() => ColumnType::Int64,
            Value::Number(_) => ColumnType::Float64,
            Value::Bool(_) => ColumnType::Bool,
            Value::Null | Value::Array(_) | Value::Object(_) => {
                skipped.push(name);
                continue;
            }
        };
        if name.is_empty() {
            skipped.push(name);
            continue;
        }
        columns.push(ColumnSpec {
            name,
            ty,
            nullable: true,
        });
    }
    if columns.is_empty() {
        return Err(
            "parquet: cannot infer the schema: the record has no string, number or bool field"
                .to_owned(),
        );
    }
    if let Some(field) = partition_field
        && !columns.iter().any(|c| c.name == field)
    {
        return Err(format!(
            "parquet: cannot infer the schema: the partition field \"{field}\" is missing or not a string, number or bool"
        ));
    }
    Ok((columns, skipped))
}

/// The `name=value` directory of a partition field's cell. The value is
/// percent-encoded (as Hive, Spark and pyarrow read it) except for ASCII
/// letters, digits, `-`, `_`, `.`, `~` and non-ASCII characters.
pub(super) fn field_dir(name: &str, cell: &Cell) -> String {
    let value = match cell {
        Cell::Null => return format!("{name}={DEFAULT_PARTITION}"),
        Cell::Str(s) if s.is_empty() => return format!("{name}={DEFAULT_PARTITION}"),
        Cell::Str(s) => s.clone(),
        Cell::I64(i) => i.to_string(),
        Cell::F64(x) => x.to_string(),
        Cell::Bool(b) => b.to_string(),
    };
    let mut dir = String::with_capacity(name.len() + 1 + value.len());
    dir.push_str(name);
    dir.push('=');
    for c in value.chars() {
        if !c.is_ascii() || c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~') {
            dir.push(c);
        } else {
            let _ = write!(dir, "%{:02X}", c as u32);
        }
    }
    dir
}

/// The directories of a time partition: `items` (a checked strftime
/// pattern) applied to the window start, or else the record timestamp, UTC.
pub(super) fn time_dir(
    items: &[Item<'static>],
    window_start: Option<i64>,
    timestamp: Option<i64>,
) -> Result<String, String> {
    let ms = window_start.or(timestamp).ok_or_else(|| {
        "parquet: the record has no window start or timestamp to partition by time".to_owned()
    })?;
    let time = chrono::DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| format!("parquet: time {ms} ms is out of range for partition_by.time"))?;
    let mut dir = String::new();
    write!(dir, "{}", time.format_with_items(items.iter()))
        .map_err(|_| "parquet: partition_by.time cannot format this time".to_owned())?;
    Ok(dir)
}
