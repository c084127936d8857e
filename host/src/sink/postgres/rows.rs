//! A batch's rows as the insert statement takes them: one array per
//! column, and of several rows with one key, the last.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tokio_postgres::types::ToSql;

use crate::sink::row::Cell;
use crate::spec::parquet::{ColumnSpec, ColumnType};

/// Of several rows with the same key, the last (in order).
pub(super) fn last_per_key(rows: Vec<(u32, Vec<Cell>)>, key: &[usize]) -> Vec<(u32, Vec<Cell>)> {
    let mut last: HashMap<Vec<KeyCell>, usize> = HashMap::with_capacity(rows.len());
    for (i, (_, cells)) in rows.iter().enumerate() {
        last.insert(key.iter().map(|&k| KeyCell::of(&cells[k])).collect(), i);
    }
    if last.len() == rows.len() {
        return rows;
    }
    rows.into_iter()
        .enumerate()
        .filter(|(i, (_, cells))| {
            last[&key
                .iter()
                .map(|&k| KeyCell::of(&cells[k]))
                .collect::<Vec<_>>()]
                == *i
        })
        .map(|(_, r)| r)
        .collect()
}

/// A cell as a hashable key part (floats by their bits).
#[derive(Debug, PartialEq, Eq, Hash)]
enum KeyCell {
    Null,
    Str(String),
    I64(i64),
    F64(u64),
    Bool(bool),
}

impl KeyCell {
    fn of(cell: &Cell) -> Self {
        match cell {
            Cell::Null => KeyCell::Null,
            Cell::Str(s) => KeyCell::Str(s.clone()),
            Cell::I64(i) => KeyCell::I64(*i),
            Cell::F64(x) => KeyCell::F64(x.to_bits()),
            Cell::Bool(b) => KeyCell::Bool(*b),
        }
    }
}

/// A batch's rows as one array per column.
enum Values {
    Str(Vec<Option<String>>),
    I64(Vec<Option<i64>>),
    F64(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Time(Vec<Option<SystemTime>>),
}

pub(super) struct Arrays(Vec<Values>);

impl Arrays {
    pub fn of(columns: &[ColumnSpec], rows: &[(u32, Vec<Cell>)]) -> Self {
        let arrays = columns
            .iter()
            .enumerate()
            .map(|(c, column)| {
                let cells = rows.iter().map(|(_, r)| &r[c]);
                match column.ty {
                    ColumnType::String => Values::Str(
                        cells
                            .map(|v| match v {
                                Cell::Str(s) => Some(s.clone()),
                                _ => None,
                            })
                            .collect(),
                    ),
                    ColumnType::Int64 => Values::I64(
                        cells
                            .map(|v| match v {
                                Cell::I64(i) => Some(*i),
                                _ => None,
                            })
                            .collect(),
                    ),
                    ColumnType::Float64 => Values::F64(
                        cells
                            .map(|v| match v {
                                Cell::F64(x) => Some(*x),
                                _ => None,
                            })
                            .collect(),
                    ),
                    ColumnType::Bool => Values::Bool(
                        cells
                            .map(|v| match v {
                                Cell::Bool(b) => Some(*b),
                                _ => None,
                            })
                            .collect(),
                    ),
                    ColumnType::TimestampMs => Values::Time(
                        cells
                            .map(|v| match v {
                                Cell::I64(ms) => Some(time_of(*ms)),
                                _ => None,
                            })
                            .collect(),
                    ),
                }
            })
            .collect();
        Self(arrays)
    }

    /// Row `i` alone.
    pub fn row(&self, i: usize) -> Self {
        Self(
            self.0
                .iter()
                .map(|v| match v {
                    Values::Str(a) => Values::Str(vec![a[i].clone()]),
                    Values::I64(a) => Values::I64(vec![a[i]]),
                    Values::F64(a) => Values::F64(vec![a[i]]),
                    Values::Bool(a) => Values::Bool(vec![a[i]]),
                    Values::Time(a) => Values::Time(vec![a[i]]),
                })
                .collect(),
        )
    }

    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|v| -> &(dyn ToSql + Sync) {
                match v {
                    Values::Str(a) => a,
                    Values::I64(a) => a,
                    Values::F64(a) => a,
                    Values::Bool(a) => a,
                    Values::Time(a) => a,
                }
            })
            .collect()
    }
}

/// Milliseconds since the Unix epoch as a time.
fn time_of(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_rows_with_one_key_the_last_is_kept_in_order() {
        let row = |i: u32, k: &str, v: i64| (i, vec![Cell::Str(k.to_owned()), Cell::I64(v)]);
        let rows = vec![
            row(0, "a", 1),
            row(1, "b", 2),
            row(2, "a", 3),
            row(3, "c", 4),
        ];
        let kept = last_per_key(rows, &[0]);
        assert_eq!(kept, vec![row(1, "b", 2), row(2, "a", 3), row(3, "c", 4)]);
    }

    #[test]
    fn times_before_1970_are_kept() {
        assert_eq!(
            time_of(-1500),
            SystemTime::UNIX_EPOCH - Duration::from_millis(1500)
        );
    }
}
