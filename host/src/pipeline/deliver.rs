//! Handing a batch's results to the sink: outputs as the guests made them,
//! dead letters as the original source record plus why and where it failed.

use std::collections::HashSet;
use std::sync::Arc;

use rdkafka::error::KafkaError;
use smallvec::SmallVec;

use super::chain::ChainOutput;
use crate::batch::{Batch, Columns, RecordRef};
use crate::sink::{BatchAck, EOS_HEADER, KafkaSink, headers, write_eos_id};

/// Where each step's dead letters came from, for their headers.
#[derive(Debug, Clone)]
pub struct StepInfo {
    pub name: String,
    pub module: String,
    pub sha256: String,
}

/// Names and topics a delivery needs.
#[derive(Debug, Clone)]
pub struct Routing {
    pub pipeline: String,
    /// Name and Kafka topic (if it has one) of each configured output, in
    /// spec order.
    pub outputs: Vec<(String, Option<String>)>,
    pub dead_letter_topic: String,
    /// Source topic names, indexed by `Batch::sources`.
    pub source_topics: Vec<String>,
    pub steps: Vec<StepInfo>,
}

/// An output record a sink refused (a Parquet schema mismatch): it goes to
/// the dead-letter topic instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Index of the output in the spec.
    pub output: usize,
    /// Index of the record in that output's [`super::Routed`] records.
    pub record: u32,
    pub reason: String,
}

/// Exactly-once numbering of one batch's records.
#[derive(Debug, Clone, Copy)]
pub struct Eos<'a> {
    pub epoch: u64,
    /// Ids the broker already has (after a crash): not produced again.
    pub written: Option<&'a HashSet<(u64, u32)>>,
}

/// What [`deliver`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    pub produced: u64,
    /// Skipped because the broker already had them.
    pub skipped: u64,
}

/// Queues every output and dead-letter record of one batch under `ack`:
/// outputs in spec order, then the chain's dead letters (records, then
/// windows a guest could not finish: key, accumulator and window), then
/// records a sink rejected. With `eos`, each record carries its id and the ones
/// already written are skipped; the order is the numbering, so it must not
/// depend on anything but the batch.
pub fn deliver(
    sink: &KafkaSink,
    ack: &Arc<BatchAck>,
    routing: &Routing,
    source: &Batch,
    out: &ChainOutput,
    rejected: &[Rejected],
    eos: Option<Eos<'_>>,
) -> Result<Delivered, KafkaError> {
    let mut sender = Sender {
        sink,
        ack,
        pipeline: &routing.pipeline,
        eos,
        seq: 0,
        delivered: Delivered::default(),
        id: String::new(),
    };
    for (routed, (_, topic)) in out.outputs.iter().zip(&routing.outputs) {
        let Some(topic) = topic else { continue };
        for record in routed.records.iter() {
            sender.send(topic, record, &[])?;
        }
    }
    for dead in &out.dead_letters {
        let i = dead.origin as usize;
        let record = source.records.get(i);
        let step = &routing.steps[dead.step];
        let (partition, offset) = (
            source.partitions[i].to_string(),
            source.offsets[i].to_string(),
        );
        let extra: [(&str, &[u8]); 8] = [
            ("sluice.error", dead.reason.as_bytes()),
            ("sluice.pipeline", routing.pipeline.as_bytes()),
            ("sluice.step", step.name.as_bytes()),
            ("sluice.module", step.module.as_bytes()),
            ("sluice.module.sha256", step.sha256.as_bytes()),
            (
                "sluice.source.topic",
                routing.source_topics[source.sources[i] as usize].as_bytes(),
            ),
            ("sluice.source.partition", partition.as_bytes()),
            ("sluice.source.offset", offset.as_bytes()),
        ];
        sender.send(&routing.dead_letter_topic, record, &extra)?;
    }
    for (step, window) in &out.window_dead_letters {
        let step = &routing.steps[*step];
        let (start, end) = (window.start.to_string(), window.end.to_string());
        let parts = window
            .parts
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut extra: Vec<(&str, &[u8])> = vec![
            ("sluice.error", window.reason.as_bytes()),
            ("sluice.pipeline", routing.pipeline.as_bytes()),
            ("sluice.step", step.name.as_bytes()),
            ("sluice.module", step.module.as_bytes()),
            ("sluice.module.sha256", step.sha256.as_bytes()),
            ("sluice.window.start", start.as_bytes()),
            ("sluice.window.end", end.as_bytes()),
        ];
        if !parts.is_empty() {
            // Several accumulators, one after the other: where each starts.
            extra.push(("sluice.accumulator.offsets", parts.as_bytes()));
        }
        let mut record = Columns::default();
        record.push(
            Some(&window.key),
            Some(&window.accumulator),
            Some(window.end - 1),
            [],
        );
        sender.send(&routing.dead_letter_topic, record.get(0), &extra)?;
    }
    for r in rejected {
        let record = out.outputs[r.output].records.get(r.record as usize);
        let extra: [(&str, &[u8]); 3] = [
            ("sluice.error", r.reason.as_bytes()),
            ("sluice.pipeline", routing.pipeline.as_bytes()),
            ("sluice.output", routing.outputs[r.output].0.as_bytes()),
        ];
        sender.send(&routing.dead_letter_topic, record, &extra)?;
    }
    Ok(sender.delivered)
}

struct Sender<'a> {
    sink: &'a KafkaSink,
    ack: &'a Arc<BatchAck>,
    pipeline: &'a str,
    eos: Option<Eos<'a>>,
    seq: u32,
    delivered: Delivered,
    /// The current record's exactly-once id.
    id: String,
}

impl Sender<'_> {
    fn send(
        &mut self,
        topic: &str,
        record: RecordRef<'_>,
        extra: &[(&str, &[u8])],
    ) -> Result<(), KafkaError> {
        let seq = self.seq;
        self.seq += 1;
        // On the stack: at most the 8 headers of a dead letter, plus the id.
        let mut all: SmallVec<[(&str, &[u8]); 9]>;
        let extra = match self.eos {
            None => extra,
            Some(eos) => {
                if eos.written.is_some_and(|w| w.contains(&(eos.epoch, seq))) {
                    self.delivered.skipped += 1;
                    return Ok(());
                }
                write_eos_id(&mut self.id, self.pipeline, eos.epoch, seq);
                all = SmallVec::from_slice(extra);
                all.push((EOS_HEADER, self.id.as_bytes()));
                &all[..]
            }
        };
        let h = headers(record.headers.iter(), extra);
        self.sink.send(
            self.ack,
            topic,
            record.key,
            record.value,
            record.timestamp,
            h,
        )?;
        self.delivered.produced += 1;
        Ok(())
    }
}
