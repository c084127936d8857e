//! The bench's results: rows, ratios, and their Markdown and JSON forms.

use std::fmt::Write as _;

use serde::Serialize;

use super::latency::Latency;
use super::measure::{Machine, Usage};
use super::setup::Input;
use sluice::pipeline::Summary;

/// The row every other row of the same input is compared with.
pub const RAW: &str = "raw passthrough";

/// One throughput row. `seconds` is the row's wall time: see the module
/// docs of the crate for what it includes.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    /// The kind of input it read (`events` or `readings`).
    pub input: &'static str,
    pub records: u64,
    /// Key + value bytes of the records read.
    pub bytes: u64,
    pub outputs: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    /// 10^6 bytes (key + value of the input) per second.
    pub mb_per_s: f64,
    /// Throughput relative to the raw passthrough of the same input.
    pub vs_raw: Option<f64>,
    /// records/s between 10% and 90% of the records done (acknowledged, or
    /// for pipelines processed, which waits on acknowledgements): the
    /// throughput without the row's start and end.
    pub steady_records_per_s: Option<f64>,
    pub steady_vs_raw: Option<f64>,
    /// The baseline: time from the start of the row to its first record.
    pub first_record_s: Option<f64>,
    /// Pipelines: the Wasm runtime and module start that the row includes.
    pub wasm_start_s: Option<f64>,
    pub usage: Usage,
    /// Pipelines: peak RSS of the same pipeline run alone in a `sluice run`
    /// process (MiB).
    pub host_rss_mib: Option<f64>,
    /// Pipelines: what `sluice run` would print.
    pub summary: Option<Summary>,
}

impl Row {
    pub fn new(name: &str, input: &Input, records: u64, usage: Usage) -> Self {
        let seconds = usage.wall_s;
        // Bytes of what was read: the whole input when it was all read.
        let bytes = if records == input.records {
            input.bytes
        } else {
            input.bytes * records / input.records.max(1)
        };
        Self {
            name: name.to_owned(),
            input: input.kind,
            records,
            bytes,
            outputs: 0,
            dead_lettered: 0,
            dropped: 0,
            seconds,
            records_per_s: records as f64 / seconds.max(f64::EPSILON),
            mb_per_s: bytes as f64 / 1e6 / seconds.max(f64::EPSILON),
            vs_raw: None,
            steady_records_per_s: None,
            steady_vs_raw: None,
            first_record_s: None,
            wasm_start_s: None,
            host_rss_mib: None,
            usage,
            summary: None,
        }
    }

    /// Takes the counts of a pipeline's summary.
    pub fn with_summary(mut self, summary: Summary) -> Self {
        self.outputs = summary.outputs.values().sum();
        self.dead_lettered = summary.dead_lettered;
        self.dropped = summary.dropped;
        self.summary = Some(summary);
        self
    }
}

/// One row's throughput against another's, with the project's bar.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub row: String,
    pub against: String,
    /// Of records/s over the whole rows.
    pub ratio: f64,
    /// Of steady-state records/s.
    pub steady_ratio: Option<f64>,
    pub bar: f64,
}

/// The latency phase and what it used.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    pub max_wait_ms: u64,
    pub seconds: u64,
    #[serde(flatten)]
    pub latency: Latency,
    pub usage: Usage,
}

/// Everything the bench prints and writes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub loadavg_end: String,
    pub config: serde_json::Value,
    pub inputs: Vec<Input>,
    pub rows: Vec<Row>,
    pub comparisons: Vec<Comparison>,
    pub latency: Option<LatencyRow>,
    pub notes: Vec<String>,
}

impl Report {
    /// Fills in each row's ratio to the raw passthrough of its input.
    pub fn compute_ratios(&mut self) {
        let raw: Vec<(&'static str, f64, Option<f64>)> = self
            .rows
            .iter()
            .filter(|r| r.name == RAW)
            .map(|r| (r.input, r.records_per_s, r.steady_records_per_s))
            .collect();
        for row in &mut self.rows {
            let Some(&(_, rps, steady)) = raw.iter().find(|(input, ..)| *input == row.input) else {
                continue;
            };
            row.vs_raw = Some(row.records_per_s / rps);
            row.steady_vs_raw = row.steady_records_per_s.zip(steady).map(|(a, b)| a / b);
        }
    }

    /// Adds a comparison of two rows, if both ran.
    pub fn compare(&mut self, row: &str, against: &str, bar: f64) {
        let find = |name: &str| self.rows.iter().find(|r| r.name == name);
        if let (Some(a), Some(b)) = (find(row), find(against)) {
            let steady_ratio = a
                .steady_records_per_s
                .zip(b.steady_records_per_s)
                .map(|(a, b)| a / b);
            self.comparisons.push(Comparison {
                row: row.to_owned(),
                against: against.to_owned(),
                ratio: a.records_per_s / b.records_per_s,
                steady_ratio,
                bar,
            });
        }
    }

    /// The whole report as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(s, "machine: {}", m.describe(&self.loadavg_end));
        for input in &self.inputs {
            let _ = writeln!(
                s,
                "input `{}` ({}): {} records, {:.1} MB key+value, produced and acknowledged in {:.2} s",
                input.topic,
                input.kind,
                thousands(input.records),
                input.bytes as f64 / 1e6,
                input.produce_s
            );
        }
        s.push('\n');
        s.push_str(&throughput_table(&self.rows));
        for c in &self.comparisons {
            let verdict = |x: f64| if x >= c.bar { "met" } else { "missed" };
            let _ = write!(
                s,
                "\n{} vs {}: {:.2}x over the whole rows ({})",
                c.row,
                c.against,
                c.ratio,
                verdict(c.ratio)
            );
            if let Some(x) = c.steady_ratio {
                let _ = write!(s, ", {x:.2}x steady ({})", verdict(x));
            }
            let _ = writeln!(s, "; bar >= {}x", c.bar);
        }
        if let Some(l) = &self.latency {
            s.push('\n');
            s.push_str(&latency_table(l));
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }
}

/// The throughput rows as a Markdown table.
pub fn throughput_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| row | input | records | out | dead letters | seconds | records/s | MB/s | vs raw | steady records/s | steady vs raw | host CPU s | host CPU µs/record | broker CPU s | peak (start) RSS MiB | host alone peak RSS MiB |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.2} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.input,
            thousands(r.records),
            thousands(r.outputs),
            thousands(r.dead_lettered),
            r.seconds,
            thousands(r.records_per_s.round() as u64),
            r.mb_per_s,
            ratio(r.vs_raw),
            r.steady_records_per_s
                .map_or("n/a".to_owned(), |x| thousands(x.round() as u64)),
            ratio(r.steady_vs_raw),
            opt(r.usage.cpu_s, 1),
            opt(r.usage.cpu_s.map(|c| c * 1e6 / r.records.max(1) as f64), 2),
            opt(r.usage.broker_cpu_s, 1),
            rss(&r.usage),
            opt(r.host_rss_mib, 0),
        );
    }
    s
}

/// Peak RSS and, in parentheses, RSS at the start.
fn rss(u: &Usage) -> String {
    format!("{} ({})", opt(u.peak_rss_mib, 0), opt(u.start_rss_mib, 0))
}

/// The latency phase as a Markdown table.
pub fn latency_table(l: &LatencyRow) -> String {
    let x = &l.latency;
    let mut s = format!(
        "latency: filter-heartbeats, batch.max_wait {} ms, offered {} records/s for {} s (achieved {} records/s); \
         host CPU {} s, broker CPU {} s, peak (start) RSS {} MiB\n\n\
         | path | measured / expected | p50 ms | p90 ms | p99 ms | max ms |\n\
         |---|--:|--:|--:|--:|--:|\n",
        l.max_wait_ms,
        thousands(x.offered_per_s),
        l.seconds,
        thousands(x.achieved_per_s.round() as u64),
        opt(l.usage.cpu_s, 1),
        opt(l.usage.broker_cpu_s, 1),
        rss(&l.usage),
    );
    for (path, p) in [
        ("end to end (input -> pipeline -> output)", &x.end_to_end),
        ("broker only (input topic, for reference)", &x.broker_only),
    ] {
        let _ = writeln!(
            s,
            "| {path} | {} / {} | {} | {} | {} | {} |",
            thousands(p.measured),
            thousands(p.expected),
            opt(p.p50_ms, 1),
            opt(p.p90_ms, 1),
            opt(p.p99_ms, 1),
            opt(p.max_ms, 1),
        );
    }
    s
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(x: Option<f64>) -> String {
    x.map_or("n/a".to_owned(), |x| format!("{x:.2}x"))
}

/// A figure with `decimals` decimals, or `n/a`.
pub fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or("n/a".to_owned(), |x| format!("{x:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(kind: &'static str) -> Input {
        Input {
            kind,
            topic: format!("bench-x-{kind}"),
            records: 1_000_000,
            bytes: 112_000_000,
            produce_s: 5.0,
        }
    }

    fn usage(wall_s: f64, cpu_s: f64) -> Usage {
        Usage {
            wall_s,
            cpu_s: Some(cpu_s),
            broker_cpu_s: None,
            peak_rss_mib: Some(95.4),
            peak_rss_reset: true,
            start_rss_mib: Some(40.2),
        }
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(143_250), "143,250");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn table_rows_ratios_and_comparisons() {
        let events = input("events");
        let mut report = Report {
            machine: Machine {
                nproc: 2,
                cpu: "Test CPU".into(),
                memory_gib: 23.4,
                loadavg_start: "0.10 0.20 0.30".into(),
            },
            loadavg_end: "1.00 0.50 0.40".into(),
            config: serde_json::Value::Null,
            inputs: vec![events.clone()],
            rows: vec![
                Row {
                    outputs: 1_000_000,
                    steady_records_per_s: Some(150_000.0),
                    ..Row::new(RAW, &events, 1_000_000, usage(8.0, 6.0))
                },
                Row {
                    steady_records_per_s: Some(120_000.4),
                    host_rss_mib: Some(61.4),
                    ..Row::new("filter-heartbeats", &events, 1_000_000, usage(10.0, 9.31))
                        .with_summary(Summary {
                            outputs: [("default".to_owned(), 800_000)].into(),
                            dropped: 200_000,
                            ..Summary::default()
                        })
                },
            ],
            comparisons: Vec::new(),
            latency: None,
            notes: vec!["a note".into()],
        };
        report.compute_ratios();
        report.compare("filter-heartbeats", RAW, 0.9);
        assert_eq!(report.rows[1].vs_raw, Some(0.8));
        assert_eq!(
            report.markdown(),
            "machine: 2 CPUs (nproc), Test CPU, 23.4 GiB RAM; load average 0.10 0.20 0.30 at start, 1.00 0.50 0.40 at end\n\
             input `bench-x-events` (events): 1,000,000 records, 112.0 MB key+value, produced and acknowledged in 5.00 s\n\
             \n\
             | row | input | records | out | dead letters | seconds | records/s | MB/s | vs raw | steady records/s | steady vs raw | host CPU s | host CPU µs/record | broker CPU s | peak (start) RSS MiB | host alone peak RSS MiB |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n\
             | raw passthrough | events | 1,000,000 | 1,000,000 | 0 | 8.00 | 125,000 | 14.0 | 1.00x | 150,000 | 1.00x | 6.0 | 6.00 | n/a | 95 (40) | n/a |\n\
             | filter-heartbeats | events | 1,000,000 | 800,000 | 0 | 10.00 | 100,000 | 11.2 | 0.80x | 120,000 | 0.80x | 9.3 | 9.31 | n/a | 95 (40) | 61 |\n\
             \n\
             filter-heartbeats vs raw passthrough: 0.80x over the whole rows (missed), 0.80x steady (missed); bar >= 0.9x\n\
             \n\
             - a note\n"
        );
    }
}
