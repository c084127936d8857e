//! Schema inference from a record, and the partition directory of a row
//! (the rows themselves: `sink::row`).

use std::fmt::Write as _;

use chrono::format::Item;

pub(super) use crate::sink::row::{Cell, decode, infer, parse_object};

/// Hive's name for the partition of a missing, null or empty value.
pub(super) const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

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
