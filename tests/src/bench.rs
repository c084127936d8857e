//! What the benchmarks share: facts about the machine they ran on, and
//! their plain-text tables.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sluice::batch::{Batch, Columns};
use sluice_sdk::__private::types::{Columns as WitColumns, InputBatch};

pub use sluice_bench::{Machine, loadavg};

/// The CPUs this process may use.
pub fn nproc() -> usize {
    Machine::read().nproc
}

/// The CPU's model name, from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    Machine::read().cpu
}

/// Prints a benchmark's title, the machine and its load average, with a
/// warning when the machine is busy; returns the load average at the
/// start.
pub fn announce(title: &str) -> String {
    let load = loadavg();
    println!("{title}");
    println!("machine: {} CPUs (nproc), {}", nproc(), cpu_model());
    println!("load average at start: {load}");
    let busy = load
        .split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok())
        .is_some_and(|l| l >= nproc() as f64 / 2.0);
    if busy {
        println!(
            "warning: the machine is busy; figures will be noisier and slower than on an idle one"
        );
    }
    load
}

/// The names given after `cargo bench --bench X --`: run only what matches
/// one of them (cargo itself passes `--bench`, hence flags are skipped).
pub fn name_filters() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect()
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_path_buf()
}

/// Writes a bench's figures to `target/bench/<file>` under the workspace
/// root and says where, with the bench's total time since `started`.
pub fn write_report(
    file: &str,
    report: &serde_json::Value,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    let path = workspace_root().join("target/bench").join(file);
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    std::fs::write(&path, serde_json::to_string_pretty(report)? + "\n")?;
    println!("figures written to {}", path.display());
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Moves a `Columns` into another struct of the same eleven fields (the
/// host's [`Columns`], the SDK's view of the WIT type): the one place the
/// benches spell the fields out, for both directions.
macro_rules! move_columns {
    ($columns:expr => $to:path) => {{
        let c = $columns;
        $to {
            keys: c.keys,
            key_offsets: c.key_offsets,
            values: c.values,
            value_offsets: c.value_offsets,
            flags: c.flags,
            timestamps: c.timestamps,
            header_offsets: c.header_offsets,
            header_names: c.header_names,
            header_name_offsets: c.header_name_offsets,
            header_values: c.header_values,
            header_value_offsets: c.header_value_offsets,
        }
    }};
}

/// The host's columns as a guest receives them.
pub fn to_wit_columns(columns: Columns) -> WitColumns {
    move_columns!(columns => WitColumns)
}

/// A guest's output columns as the host holds them.
pub fn from_wit_columns(columns: WitColumns) -> Columns {
    move_columns!(columns => Columns)
}

/// A host batch as a guest receives it (the SDK's view of the WIT types),
/// for driving a guest crate natively.
pub fn to_wit(batch: &Batch) -> InputBatch {
    InputBatch {
        records: to_wit_columns(batch.records.clone()),
        partitions: batch.partitions.clone(),
        offsets: batch.offsets.clone(),
    }
}

/// A plain-text table; columns in `left` are left-aligned, others right.
pub fn render<R: AsRef<[String]>>(header: &[&str], rows: &[R], left: &[usize]) -> String {
    let mut out = String::new();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r.as_ref()[c].len())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut line = |cells: &[&str]| {
        for (c, cell) in cells.iter().enumerate() {
            if left.contains(&c) {
                let _ = write!(out, "{cell:<w$}  ", w = widths[c]);
            } else {
                let _ = write!(out, "{cell:>w$}  ", w = widths[c]);
            }
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    line(header);
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    line(&rule.iter().map(String::as_str).collect::<Vec<_>>());
    for row in rows {
        line(&row.as_ref().iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn render_aligns_text_left_and_figures_right() {
        let rows = vec![
            vec!["filter".to_owned(), "1.5".to_owned()],
            vec!["map".to_owned(), "12.25".to_owned()],
        ];
        assert_eq!(
            super::render(&["case", "ns"], &rows, &[0]),
            "case       ns\n------  -----\nfilter    1.5\nmap     12.25\n"
        );
    }
}
