//! From a record's JSON value to a row of typed cells, for the sinks that
//! write tables (Parquet, PostgreSQL): schema checks with the reasons a
//! record is refused, each starting with the sink's name.
//!
//! Fields of the record that are not columns are ignored, so that a
//! transform can add fields without breaking its table outputs.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::spec::parquet::{ColumnSpec, ColumnType};

/// One value of a row, already of its column's type (`I64` for both
/// `int64` and `timestamp_ms`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Str(String),
    I64(i64),
    F64(f64),
    Bool(bool),
}

/// Parses a record's value as a JSON object.
pub(crate) fn parse_object(sink: &str, value: Option<&[u8]>) -> Result<Map<String, Value>, String> {
    let bytes = value.ok_or_else(|| format!("{sink}: the record has no value"))?;
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!(
            "{sink}: expected a JSON object, got {}",
            kind(&other)
        )),
        Err(e) => Err(format!("{sink}: not JSON: {e}")),
    }
}

/// The row of `object` under `schema`, or why it does not fit.
pub(crate) fn decode(
    sink: &str,
    schema: &[ColumnSpec],
    mut object: Map<String, Value>,
) -> Result<Vec<Cell>, String> {
    schema
        .iter()
        .map(|column| {
            decode_value(column, object.remove(&column.name))
                .map_err(|e| format!("{sink}: field \"{}\": {e}", column.name))
        })
        .collect()
}

fn decode_value(column: &ColumnSpec, value: Option<Value>) -> Result<Cell, String> {
    let value = match value {
        None | Some(Value::Null) if column.nullable => return Ok(Cell::Null),
        None => return Err("missing (the column is not nullable)".to_owned()),
        Some(v) => v,
    };
    let ty = column.ty;
    let mismatch = |v: &Value| format!("expected {}, got {}", ty.name(), kind(v));
    match (ty, value) {
        (ColumnType::String, Value::String(s)) => Ok(Cell::Str(s)),
        (ColumnType::Int64 | ColumnType::TimestampMs, Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Cell::I64(i)),
            None if n.is_u64() => Err(format!(
                "expected {}, got an integer out of its range",
                ty.name()
            )),
            None => Err(mismatch(&Value::Number(n))),
        },
        (ColumnType::Float64, Value::Number(n)) => n
            .as_f64()
            .map(Cell::F64)
            .ok_or_else(|| "expected float64, got a number out of its range".to_owned()),
        (ColumnType::Bool, Value::Bool(b)) => Ok(Cell::Bool(b)),
        (ColumnType::TimestampMs, Value::String(s)) => chrono::DateTime::parse_from_rfc3339(&s)
            .map(|t| Cell::I64(t.timestamp_millis()))
            .map_err(|_| {
                "expected timestamp_ms (integer milliseconds or an RFC 3339 string), \
                 got a string that is not RFC 3339"
                    .to_owned()
            }),
        (_, v) => Err(mismatch(&v)),
    }
}

/// A schema from the top-level fields of a record, in the record's order:
/// strings, integers (that fit in `i64`), other numbers and booleans, all
/// nullable. Null, array and object fields are left out (their type is
/// unknown or has no column type); they are returned for the log.
pub(crate) fn infer(
    sink: &str,
    value: Option<&[u8]>,
    required: &[&str],
) -> Result<(Vec<ColumnSpec>, Vec<String>), String> {
    let bytes = value.ok_or_else(|| format!("{sink}: the record has no value"))?;
    // Parsed again (the object form loses the field order): only until a
    // record gives a schema.
    let fields: IndexMap<String, Value> = serde_json::from_slice(bytes)
        .map_err(|_| format!("{sink}: cannot infer the schema: the record is not a JSON object"))?;
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
        return Err(format!(
            "{sink}: cannot infer the schema: the record has no string, number or bool field"
        ));
    }
    if let Some(field) = required
        .iter()
        .find(|&&f| !columns.iter().any(|c| c.name == f))
    {
        return Err(format!(
            "{sink}: cannot infer the schema: the field \"{field}\" is missing or not a string, number or bool"
        ));
    }
    Ok((columns, skipped))
}

/// The Arrow schema of rows of `columns`, timestamps (UTC) in `unit`.
pub(crate) fn arrow_schema(columns: &[ColumnSpec], unit: TimeUnit) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| {
            let ty = match c.ty {
                ColumnType::String => DataType::Utf8,
                ColumnType::Int64 => DataType::Int64,
                ColumnType::Float64 => DataType::Float64,
                ColumnType::Bool => DataType::Boolean,
                ColumnType::TimestampMs => DataType::Timestamp(unit, Some("UTC".into())),
            };
            Field::new(&c.name, ty, c.nullable)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The JSON kind of a value, as named in rejection reasons.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One output record handed to a table sink.
#[derive(Debug, Clone, Copy)]
pub struct TableRecord<'a> {
    /// Returned with the reason when the record is refused.
    pub index: u32,
    /// A JSON object.
    pub value: Option<&'a [u8]>,
    /// Event time, ms since the Unix epoch.
    pub timestamp: Option<i64>,
    /// Start of the window of an aggregate result, ms since the Unix epoch;
    /// preferred over `timestamp` by Parquet's `partition_by.time`.
    pub window_start: Option<i64>,
}
