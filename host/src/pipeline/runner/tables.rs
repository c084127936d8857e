//! The table sinks of a run: each batch's outputs appended to their
//! Parquet files and Delta tables and written to their PostgreSQL tables,
//! with the records they refuse returned for the dead-letter topic; the
//! Delta tables' commits at checkpoints.

use anyhow::Context;

use super::Runner;
use crate::batch::Reason;
use crate::batch::reason::Kind;
use crate::pipeline::ChainOutput;
use crate::pipeline::chain::Routed;
use crate::pipeline::deliver::Rejected;
use crate::sink::TableRecord;

impl Runner<'_> {
    /// Appends each output's records to its Parquet sink; returns the
    /// records that do not fit its schema.
    pub(super) fn write_parquet(&mut self, out: &ChainOutput) -> anyhow::Result<Vec<Rejected>> {
        let mut rejected = Vec::new();
        for (i, (sink, routed)) in self.parquet.iter_mut().zip(&out.outputs).enumerate() {
            let Some(sink) = sink else { continue };
            let records = table_records(routed);
            let refused = sink.write(self.epoch, &records).with_context(|| {
                format!("outputs.{}: cannot write Parquet", self.output_names[i])
            })?;
            rejected.extend(refused.into_iter().map(|(record, reason)| Rejected {
                output: i,
                record,
                reason: Reason::new(Kind::Parquet, reason),
            }));
        }
        Ok(rejected)
    }

    /// Writes each output's records to its Delta table (committed at the
    /// next checkpoint); returns the records that do not fit.
    pub(super) fn write_delta(&mut self, out: &ChainOutput) -> anyhow::Result<Vec<Rejected>> {
        let mut rejected = Vec::new();
        for (i, (sink, routed)) in self.delta.iter_mut().zip(&out.outputs).enumerate() {
            let Some(sink) = sink else { continue };
            let records = table_records(routed);
            let refused = sink.write(self.epoch, &records).with_context(|| {
                format!("outputs.{}: cannot write to Delta", self.output_names[i])
            })?;
            self.summary
                .delta
                .insert(self.output_names[i].clone(), sink.stats().clone());
            rejected.extend(refused.into_iter().map(|(record, reason)| Rejected {
                output: i,
                record,
                reason: Reason::new(Kind::Delta, reason),
            }));
        }
        Ok(rejected)
    }

    /// Commits what each Delta output wrote since the last checkpoint, as
    /// of the current epoch: under exactly-once once every epoch in it is
    /// durable in the log, and only while this process owns the task.
    pub(super) fn commit_delta(&mut self) -> anyhow::Result<()> {
        if self.delta.iter().all(Option::is_none) {
            return Ok(());
        }
        if self.exactly_once
            && let Some(c) = &mut self.checkpoints
        {
            c.wait_logged()?;
        }
        if let Some(fence) = &self.fence {
            fence.check()?;
        }
        for (i, sink) in self.delta.iter_mut().enumerate() {
            let Some(sink) = sink else { continue };
            sink.commit(self.epoch).with_context(|| {
                format!("outputs.{}: cannot commit to Delta", self.output_names[i])
            })?;
            self.summary
                .delta
                .insert(self.output_names[i].clone(), sink.stats().clone());
        }
        Ok(())
    }

    /// Writes each output's records to its PostgreSQL table, one
    /// transaction per output (under exactly-once, once the epoch is
    /// durable in the log); returns the records refused.
    pub(super) fn write_postgres(&mut self, out: &ChainOutput) -> anyhow::Result<Vec<Rejected>> {
        let mut rejected = Vec::new();
        if self.postgres.iter().all(Option::is_none) {
            return Ok(rejected);
        }
        if self.exactly_once
            && let Some(c) = &mut self.checkpoints
        {
            c.wait_logged()?;
        }
        for (i, (sink, routed)) in self.postgres.iter_mut().zip(&out.outputs).enumerate() {
            let Some(sink) = sink else { continue };
            let records = table_records(routed);
            let refused = sink.write(self.epoch, &records).with_context(|| {
                format!(
                    "outputs.{}: cannot write to PostgreSQL",
                    self.output_names[i]
                )
            })?;
            self.summary
                .postgres
                .insert(self.output_names[i].clone(), sink.stats().clone());
            rejected.extend(refused.into_iter().map(|(record, reason)| Rejected {
                output: i,
                record,
                reason: Reason::new(Kind::Postgres, reason),
            }));
        }
        Ok(rejected)
    }
}

/// An output's records as a table sink takes them, with their windows.
fn table_records(routed: &Routed) -> Vec<TableRecord<'_>> {
    routed
        .records
        .iter()
        .zip(routed.record_windows())
        .enumerate()
        .map(|(j, (r, window))| TableRecord {
            index: j as u32,
            value: r.value,
            timestamp: r.timestamp,
            window_start: window.map(|w| w.start),
        })
        .collect()
}
