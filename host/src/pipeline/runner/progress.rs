//! The progress document a controlled run publishes after every batch.

use std::time::SystemTime;

use super::{Runner, ms};
use crate::pipeline::control::{
    Control, EventTime, JoinInfo, JoinSideInfo, Progress, SourceProgress, StateInfo, Totals,
};
use crate::pipeline::{Step, Summary};

impl Runner<'_> {
    /// Publishes the progress after a batch of `rows` records.
    pub(super) fn publish(&self, control: &Control, rows: usize) {
        let since_previous = ms(self.last_batch_end.elapsed()) / 1000.0;
        let mut durations = self.durations;
        durations.total =
            durations.fetch + durations.transform + durations.sink + durations.checkpoint;
        let working = (durations.total - durations.fetch) / 1000.0;
        let rate = |seconds: f64| {
            if seconds > 0.0 {
                (rows as f64 / seconds * 10.0).round() / 10.0
            } else {
                0.0
            }
        };
        let windows = self.chain.aggregate().map(|a| a.engine().progress());
        let mut sources: Vec<SourceProgress> = self
            .read
            .iter()
            .map(|(&(s, partition), &offset)| SourceProgress {
                topic: self.spec.source.topics[s as usize].clone(),
                partition,
                offset,
                // Filled in when read (see `Control::progress`).
                end_offset: None,
                lag: None,
            })
            .collect();
        sources.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let mut totals = Totals {
            run: Summary {
                // The document has the event time and state of its own.
                windows: None,
                ..self.summary.clone()
            },
            late: windows.as_ref().map_or(0, |w| w.late_records),
            ..Totals::default()
        };
        for step in self.chain.steps() {
            let stats = match step {
                Step::Transform(t) => t.stats(),
                Step::Aggregate(a) => a.aggregator().stats(),
                Step::Rekey(r) => r.aggregator.stats(),
                Step::Join(j) => j.joiner().stats(),
            };
            totals.traps += stats.traps;
            totals.deadline_hits += stats.deadline_hits;
            totals.memory_hits += stats.memory_hits;
        }
        let now = SystemTime::now();
        let progress = Progress {
            batch_id: self.epoch,
            timestamp: humantime::format_rfc3339_millis(now).to_string(),
            num_input_rows: rows as u64,
            input_rows_per_second: rate(since_previous),
            processed_rows_per_second: rate(working),
            duration_ms: durations,
            event_time: windows.as_ref().map(|w| EventTime {
                min: w.partitions.iter().map(|p| p.min_event_time).min(),
                max: w.partitions.iter().map(|p| p.max_event_time).max(),
                watermark: w.watermark,
            }),
            state: windows.as_ref().map(|w| StateInfo {
                rows: w.state_rows as u64,
                bytes: w.state_bytes as u64,
            }),
            join: match self.chain.steps().first() {
                Some(Step::Join(j)) => {
                    let [left, right] = j.stats().map(|s| JoinSideInfo {
                        rows: s.rows as u64,
                        bytes: s.bytes as u64,
                        watermark: s.watermark,
                    });
                    Some(JoinInfo { left, right })
                }
                _ => None,
            },
            totals,
            sources,
            lag: None,
            tasks: Vec::new(),
        };
        let now_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        control.publish(
            self.task
                .as_ref()
                .map(|t| (super::super::Stage::of(self.spec), t.partition)),
            progress,
            now_ms,
        );
    }
}
