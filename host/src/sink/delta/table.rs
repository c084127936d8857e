//! The Delta table of an output: found or created, its columns matched
//! with the output's schema (a nullable column the spec adds is added to
//! the table), and the Arrow form of its rows.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use deltalake_core::kernel::{DataType, PrimitiveType, StructField};
use deltalake_core::{DeltaTable, DeltaTableError};

use super::DeltaError;
use crate::sink::row::Cell;
use crate::spec::delta::DeltaSpec;
use crate::spec::parquet::{ColumnSpec, ColumnType};

/// The Delta type a column of `ty` is written as (timestamps in
/// microseconds, UTC, as Delta stores them).
fn delta_type(ty: ColumnType) -> DataType {
    DataType::Primitive(match ty {
        ColumnType::String => PrimitiveType::String,
        ColumnType::Int64 => PrimitiveType::Long,
        ColumnType::Float64 => PrimitiveType::Double,
        ColumnType::Bool => PrimitiveType::Boolean,
        ColumnType::TimestampMs => PrimitiveType::Timestamp,
    })
}

/// The column type of a table's column, if Sluice writes that type.
fn column_type(ty: &DataType) -> Option<ColumnType> {
    match ty {
        DataType::Primitive(PrimitiveType::String) => Some(ColumnType::String),
        DataType::Primitive(PrimitiveType::Long) => Some(ColumnType::Int64),
        DataType::Primitive(PrimitiveType::Double) => Some(ColumnType::Float64),
        DataType::Primitive(PrimitiveType::Boolean) => Some(ColumnType::Bool),
        DataType::Primitive(PrimitiveType::Timestamp) => Some(ColumnType::TimestampMs),
        _ => None,
    }
}

/// The Delta fields of columns.
pub(super) fn fields(columns: &[ColumnSpec]) -> Vec<StructField> {
    columns
        .iter()
        .map(|c| StructField::new(&c.name, delta_type(c.ty), c.nullable))
        .collect()
}

/// The columns an existing table takes, in the table's order, and the
/// columns of the spec it lacks (all nullable: to be added to it).
///
/// Without a spec schema, every column of the table (Sluice's types only).
/// With one, each spec column must be in the table with its type (or be
/// nullable, to be added), and each table column the spec leaves out must
/// be nullable (it is written null).
pub(super) fn match_columns(
    table: &DeltaTable,
    spec: &DeltaSpec,
) -> Result<(Vec<ColumnSpec>, Vec<ColumnSpec>), DeltaError> {
    let snapshot = table.snapshot().map_err(|e| DeltaError::table("read", e))?;
    let schema = snapshot.schema();
    let partitions = snapshot.metadata().partition_columns().to_vec();
    if !spec.partition_by.is_empty() && spec.partition_by != partitions {
        return Err(DeltaError::Table(format!(
            "partition_by: the table is partitioned by [{}], not [{}]",
            partitions.join(", "),
            spec.partition_by.join(", ")
        )));
    }
    let mut columns = Vec::new();
    for field in schema.fields() {
        let Some(ty) = column_type(field.data_type()) else {
            return Err(DeltaError::Table(format!(
                "the table's column \"{}\" has type {}, which Sluice does not write \
                 (string, long, double, boolean, timestamp)",
                field.name(),
                field.data_type()
            )));
        };
        let own = spec
            .schema
            .as_ref()
            .and_then(|s| s.iter().find(|c| c.name == *field.name()));
        let column = match own {
            None if spec.schema.is_some() && !field.is_nullable() => {
                return Err(DeltaError::Table(format!(
                    "the table's column \"{}\" is not nullable and not in the schema",
                    field.name()
                )));
            }
            None => ColumnSpec {
                name: field.name().clone(),
                ty,
                nullable: field.is_nullable(),
            },
            Some(c) if c.ty != ty => {
                return Err(DeltaError::Table(format!(
                    "schema: column \"{}\" is {} in the spec but {} in the table",
                    c.name,
                    c.ty.name(),
                    field.data_type()
                )));
            }
            Some(c) if c.nullable && !field.is_nullable() => {
                return Err(DeltaError::Table(format!(
                    "schema: column \"{}\" is nullable in the spec but not in the table",
                    c.name
                )));
            }
            Some(c) => c.clone(),
        };
        columns.push(column);
    }
    let mut missing = Vec::new();
    for c in spec.schema.iter().flatten() {
        if schema.field(&c.name).is_some() {
            continue;
        }
        if !c.nullable {
            return Err(DeltaError::Table(format!(
                "schema: column \"{}\" is not in the table; a column added to an existing \
                 table must be nullable",
                c.name
            )));
        }
        missing.push(c.clone());
    }
    Ok((columns, missing))
}

/// The Arrow schema of rows of `columns` (timestamps in microseconds).
pub(super) fn arrow_schema(columns: &[ColumnSpec]) -> SchemaRef {
    crate::sink::row::arrow_schema(columns, TimeUnit::Microsecond)
}

/// Rows (cells of `columns`' types, timestamps already in microseconds)
/// as one record batch.
pub(super) fn record_batch(
    schema: &SchemaRef,
    columns: &[ColumnSpec],
    rows: &[Vec<Cell>],
) -> Result<RecordBatch, DeltaTableError> {
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| -> ArrayRef {
            let cells = rows.iter().map(|r| &r[i]);
            match c.ty {
                ColumnType::String => Arc::new(StringArray::from_iter(cells.map(|x| match x {
                    Cell::Str(s) => Some(s.as_str()),
                    _ => None,
                }))),
                ColumnType::Int64 => Arc::new(Int64Array::from_iter(cells.map(int))),
                ColumnType::TimestampMs => Arc::new(
                    TimestampMicrosecondArray::from_iter(cells.map(int)).with_timezone("UTC"),
                ),
                ColumnType::Float64 => Arc::new(Float64Array::from_iter(cells.map(|x| match x {
                    Cell::F64(f) => Some(*f),
                    _ => None,
                }))),
                ColumnType::Bool => Arc::new(BooleanArray::from_iter(cells.map(|x| match x {
                    Cell::Bool(b) => Some(*b),
                    _ => None,
                }))),
            }
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

fn int(cell: &Cell) -> Option<i64> {
    match cell {
        Cell::I64(i) => Some(*i),
        _ => None,
    }
}
