//! Handing a batch's results to the sink: outputs as the guests made them,
//! dead letters as the original source record plus why and where it failed.

use std::collections::HashSet;
use std::sync::Arc;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use smallvec::SmallVec;

use super::chain::{ChainOutput, NO_ORIGIN, ResultWindow};
use crate::batch::reason::Kind;
use crate::batch::{Batch, Columns, Reason, RecordRef};
use crate::checkpoint::Fence;
use crate::sink::{
    BatchAck, EOS_HEADER, EosId, KafkaSink, Quarantined, TooLarge, WINDOW_INPUT, headers,
    partition_for_key, wire_size, write_eos_id,
};
use crate::spec::{UPSTREAM_HEADER, WATERMARK_HEADER};

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
    /// Exactly-once: the checkpoint directory's lineage id, which starts
    /// every record's id (set once the directory is open).
    pub lineage: String,
    /// The output that is a repartition topic (the front stage's
    /// `default`, see `spec::Stages`), if any.
    pub exchange: Option<Exchange>,
    /// The task's generation, when the group assigns it (see
    /// `checkpoint::Fence`): its lease is looked at before each record, so
    /// that a process paused in the middle of a batch sends none of the
    /// rest once it lost the task.
    pub fence: Option<Arc<Fence>>,
}

/// An output written for another stage to read: each record goes to the
/// partition of its key (see [`partition_for_key`]) and says which source
/// partition it came from ([`UPSTREAM_HEADER`]).
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// Index of the output in the spec.
    pub output: usize,
    /// The topic's partition count.
    pub partitions: i32,
}

/// An output record a sink refused (a Parquet schema mismatch): it goes to
/// the dead-letter topic instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Index of the output in the spec.
    pub output: usize,
    /// Index of the record in that output's [`super::Routed`] records.
    pub record: u32,
    pub reason: Reason,
}

/// Exactly-once numbering of one batch's records.
#[derive(Debug, Clone, Copy)]
pub struct Eos<'a> {
    pub epoch: u64,
    /// Ids the broker already has (after a crash): not produced again.
    pub written: Option<&'a HashSet<EosId>>,
}

/// Numbers a batch's records by (input, index among that input's records),
/// so that whatever happens to one source record (a deadline that fires on
/// one run and not on the re-execution) changes only its own records' ids.
#[derive(Debug, Default)]
struct Numbering {
    /// Records numbered so far, per input position.
    per_input: Vec<u32>,
    window: u32,
}

impl Numbering {
    fn next(&mut self, epoch: u64, input: u32) -> EosId {
        let count = if input == WINDOW_INPUT {
            &mut self.window
        } else {
            let i = input as usize;
            if i >= self.per_input.len() {
                self.per_input.resize(i + 1, 0);
            }
            &mut self.per_input[i]
        };
        let index = *count;
        *count += 1;
        EosId {
            epoch,
            input,
            index,
        }
    }
}

/// What [`deliver`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    pub produced: u64,
    /// Skipped because the broker already had them.
    pub skipped: u64,
    /// Outputs too large to send, dead-lettered instead.
    pub too_large: u64,
    /// Records neither sent nor dead-lettered.
    pub quarantined: u64,
}

/// Queues every output and dead-letter record of one batch under `ack`:
/// outputs in spec order, then the chain's dead letters (records, then
/// windows a guest could not finish: key, accumulator and window), then
/// records a sink rejected. With `eos`, each record carries its id (see
/// [`Numbering`]) and the ones already written are skipped; the order of one
/// input's records is part of the numbering, so it must not depend on
/// anything but the batch.
///
/// An output larger than the producer's `message.max.bytes` is replaced at
/// once by its source record's dead letter (`output record too large: N
/// bytes, the producer's limit is M`); a dead letter that does not fit
/// either (and a window result that does not fit, having no source record)
/// is quarantined (see [`crate::sink::Quarantine`]). Neither is retried.
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
        fence: routing.fence.as_deref(),
        pipeline: &routing.pipeline,
        lineage: &routing.lineage,
        eos,
        numbering: Numbering::default(),
        delivered: Delivered::default(),
        id: String::new(),
    };
    let mut upstream = String::new();
    for (o, (routed, (name, topic))) in out.outputs.iter().zip(&routing.outputs).enumerate() {
        let Some(topic) = topic else { continue };
        let exchange = routing.exchange.filter(|e| e.output == o);
        let records = routed.records.iter().zip(&routed.origins);
        for ((record, &input), window) in records.zip(routed.record_windows()) {
            let window = window.map(WindowHeaders::new);
            let headers = window.as_ref().map(WindowHeaders::headers);
            let mut extra = headers.as_ref().map_or(&[][..], |h| &h[..]);
            let mut partition = None;
            let exchanged: [(&str, &[u8]); 1];
            if let Some(e) = exchange
                && input != NO_ORIGIN
            {
                partition = Some(partition_for_key(
                    record.key.unwrap_or_default(),
                    e.partitions,
                ));
                upstream.clear();
                upstream.push_str(&source.partitions[input as usize].to_string());
                exchanged = [(UPSTREAM_HEADER, upstream.as_bytes())];
                extra = &exchanged;
            }
            let Err(too_large) = sender.send(topic, partition, record, extra, input)? else {
                continue;
            };
            let reason = format!(
                "{}: {} bytes, the producer's limit is {}",
                Kind::TooLarge.label(),
                too_large.bytes,
                too_large.limit
            );
            match input {
                NO_ORIGIN => sender.quarantine(topic, None, record, &reason, too_large),
                i => {
                    sender.delivered.too_large += 1;
                    sink.note_too_large();
                    let output = [("sluice.output", name.as_bytes())];
                    let dead = DeadRecord {
                        source,
                        i: i as usize,
                        reason: &reason,
                        step: None,
                    };
                    dead.send(&mut sender, routing, &output)?;
                }
            }
        }
        if let Some(e) = exchange {
            send_markers(&mut sender, topic, e.partitions, &out.exchange_times)?;
        }
    }
    for dead in &out.dead_letters {
        let step = &routing.steps[dead.step];
        let record = DeadRecord {
            source,
            i: dead.origin as usize,
            reason: &dead.reason.text,
            step: Some(step),
        };
        record.send(&mut sender, routing, &[])?;
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
            ("sluice.error", window.reason.text.as_bytes()),
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
        let topic = &routing.dead_letter_topic;
        if let Err(too_large) = sender.send(topic, None, record.get(0), &extra, WINDOW_INPUT)? {
            sender.quarantine(topic, None, record.get(0), &window.reason.text, too_large);
        }
    }
    // Records a join made or held that a step refused: no source record of
    // this batch, so they go as they are (numbered like window results).
    for (j, (step, reason)) in out.held_reasons.iter().enumerate() {
        let step = &routing.steps[*step];
        let record = out.held_dead.get(j);
        let extra: [(&str, &[u8]); 5] = [
            ("sluice.error", reason.text.as_bytes()),
            ("sluice.pipeline", routing.pipeline.as_bytes()),
            ("sluice.step", step.name.as_bytes()),
            ("sluice.module", step.module.as_bytes()),
            ("sluice.module.sha256", step.sha256.as_bytes()),
        ];
        let topic = &routing.dead_letter_topic;
        if let Err(too_large) = sender.send(topic, None, record, &extra, WINDOW_INPUT)? {
            sender.quarantine(topic, None, record, &reason.text, too_large);
        }
    }
    for r in rejected {
        let routed = &out.outputs[r.output];
        let record = routed.records.get(r.record as usize);
        let input = routed.origins[r.record as usize];
        let extra: [(&str, &[u8]); 3] = [
            ("sluice.error", r.reason.text.as_bytes()),
            ("sluice.pipeline", routing.pipeline.as_bytes()),
            ("sluice.output", routing.outputs[r.output].0.as_bytes()),
        ];
        let topic = &routing.dead_letter_topic;
        if let Err(too_large) = sender.send(topic, None, record, &extra, input)? {
            sender.quarantine(topic, None, record, &r.reason.text, too_large);
        }
    }
    Ok(sender.delivered)
}

/// After a batch's records in a repartition topic: a watermark marker per
/// source partition that had records keyed (`times`) to each of the
/// topic's `partitions` (see `spec::Stages`). Numbered like window
/// results: their order depends on the batch alone.
fn send_markers(
    sender: &mut Sender<'_>,
    topic: &str,
    partitions: i32,
    times: &[(i32, i64)],
) -> Result<(), KafkaError> {
    let mut marker = Columns::default();
    marker.push(None, None, None, []);
    for &(upstream, time) in times {
        let (upstream, time) = (upstream.to_string(), time.to_string());
        let headers = [
            (UPSTREAM_HEADER, upstream.as_bytes()),
            (WATERMARK_HEADER, time.as_bytes()),
        ];
        for q in 0..partitions {
            // A marker is a few bytes: never too large.
            let _ = sender.send(topic, Some(q), marker.get(0), &headers, WINDOW_INPUT)?;
        }
    }
    Ok(())
}

/// A window result's `sluice.window.start`, `.end` and `.final` headers.
struct WindowHeaders {
    start: String,
    end: String,
    is_final: bool,
}

impl WindowHeaders {
    fn new(window: ResultWindow) -> Self {
        Self {
            start: window.start.to_string(),
            end: window.end.to_string(),
            is_final: window.is_final,
        }
    }

    fn headers(&self) -> [(&str, &[u8]); 3] {
        [
            ("sluice.window.start", self.start.as_bytes()),
            ("sluice.window.end", self.end.as_bytes()),
            (
                "sluice.window.final",
                if self.is_final { b"true" } else { b"false" },
            ),
        ]
    }
}

/// The dead letter of source record `i`: the record as it came, plus why
/// and where it failed.
struct DeadRecord<'a> {
    source: &'a Batch,
    i: usize,
    reason: &'a str,
    /// The step that refused it; `None` when it was its output that could
    /// not be sent.
    step: Option<&'a StepInfo>,
}

impl DeadRecord<'_> {
    fn send(
        &self,
        sender: &mut Sender<'_>,
        routing: &Routing,
        more: &[(&str, &[u8])],
    ) -> Result<(), KafkaError> {
        let (source, i) = (self.source, self.i);
        let record = source.records.get(i);
        let topic = &routing.source_topics[source.sources[i] as usize];
        let (partition, offset) = (
            source.partitions[i].to_string(),
            source.offsets[i].to_string(),
        );
        let mut extra: SmallVec<[(&str, &[u8]); 9]> = SmallVec::new();
        extra.push(("sluice.error", self.reason.as_bytes()));
        extra.push(("sluice.pipeline", routing.pipeline.as_bytes()));
        if let Some(step) = self.step {
            extra.push(("sluice.step", step.name.as_bytes()));
            extra.push(("sluice.module", step.module.as_bytes()));
            extra.push(("sluice.module.sha256", step.sha256.as_bytes()));
        }
        extra.extend_from_slice(more);
        extra.push(("sluice.source.topic", topic.as_bytes()));
        extra.push(("sluice.source.partition", partition.as_bytes()));
        extra.push(("sluice.source.offset", offset.as_bytes()));
        if let Err(too_large) =
            sender.send(&routing.dead_letter_topic, None, record, &extra, i as u32)?
        {
            let at = Some((source.partitions[i], source.offsets[i]));
            sender.quarantine(topic, at, record, self.reason, too_large);
        }
        Ok(())
    }
}

struct Sender<'a> {
    sink: &'a KafkaSink,
    ack: &'a Arc<BatchAck>,
    fence: Option<&'a Fence>,
    pipeline: &'a str,
    lineage: &'a str,
    eos: Option<Eos<'a>>,
    numbering: Numbering,
    delivered: Delivered,
    /// The current record's exactly-once id.
    id: String,
}

impl Sender<'_> {
    /// Queues `record`, which came from source record `input`, with its
    /// headers plus `extra`, or says it is too large to (it keeps its id all
    /// the same, so that the numbering depends on the batch alone).
    fn send(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        record: RecordRef<'_>,
        extra: &[(&str, &[u8])],
        input: u32,
    ) -> Result<Result<(), TooLarge>, KafkaError> {
        // On the stack: at most the 9 headers of a dead letter, plus the id.
        let mut all: SmallVec<[(&str, &[u8]); 10]>;
        let extra = match self.eos {
            None => extra,
            Some(eos) => {
                let id = self.numbering.next(eos.epoch, input);
                if eos.written.is_some_and(|w| w.contains(&id)) {
                    self.delivered.skipped += 1;
                    return Ok(Ok(()));
                }
                write_eos_id(&mut self.id, self.lineage, id);
                all = SmallVec::from_slice(extra);
                all.push((EOS_HEADER, self.id.as_bytes()));
                &all[..]
            }
        };
        let bytes = wire_size(
            record.key.map_or(0, <[u8]>::len),
            record.value.map_or(0, <[u8]>::len),
            record
                .headers
                .iter()
                .map(|(n, v)| (n.len(), v.len()))
                .chain(extra.iter().map(|(n, v)| (n.len(), v.len()))),
        );
        if bytes > self.sink.limit() {
            return Ok(Err(TooLarge {
                bytes,
                limit: self.sink.limit(),
            }));
        }
        if let Some(fence) = self.fence
            && let Err(fenced) = fence.check_lease()
        {
            tracing::warn!(error = %fenced, "fenced off in the middle of a batch");
            return Err(KafkaError::MessageProduction(RDKafkaErrorCode::Fenced));
        }
        let h = headers(record.headers.iter(), extra);
        let sent = self.sink.send(
            self.ack,
            topic,
            partition,
            record.key,
            record.value,
            record.timestamp,
            h,
            bytes,
        )?;
        if sent.is_ok() {
            self.delivered.produced += 1;
        }
        Ok(sent)
    }

    /// Skips a record that cannot be sent even as a dead letter.
    fn quarantine(
        &mut self,
        topic: &str,
        at: Option<(i32, i64)>,
        record: RecordRef<'_>,
        reason: &str,
        too_large: TooLarge,
    ) {
        self.delivered.quarantined += 1;
        self.sink.quarantine().record(&Quarantined {
            pipeline: self.pipeline,
            topic,
            partition: at.map(|a| a.0),
            offset: at.map(|a| a.1),
            reason,
            bytes: too_large.bytes,
            limit: too_large.limit,
            key: record.key,
            value: record.value,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids given to records of inputs `inputs`, in the order sent.
    fn number(inputs: &[u32]) -> Vec<(u32, u32)> {
        let mut numbering = Numbering::default();
        inputs
            .iter()
            .map(|&i| {
                let id = numbering.next(7, i);
                assert_eq!(id.epoch, 7);
                (id.input, id.index)
            })
            .collect()
    }

    #[test]
    fn a_record_whose_fate_changes_changes_only_its_own_ids() {
        // First run: input 1 made two outputs; inputs 0, 2 and 3 one each;
        // a window result; then input 4 was dead-lettered.
        let first = number(&[0, 1, 1, 2, 3, WINDOW_INPUT, 4]);
        // Re-execution: input 1 hit its deadline and is dead-lettered
        // (after every output), input 4 is not.
        let again = number(&[0, 2, 3, 4, WINDOW_INPUT, 1]);
        assert_eq!(
            first,
            vec![
                (0, 0),
                (1, 0),
                (1, 1),
                (2, 0),
                (3, 0),
                (WINDOW_INPUT, 0),
                (4, 0)
            ]
        );
        assert_eq!(
            again,
            vec![(0, 0), (2, 0), (3, 0), (4, 0), (WINDOW_INPUT, 0), (1, 0)]
        );
        // Every record of inputs 0, 2 and 3 and the window result keep their ids.
        for id in [(0, 0), (2, 0), (3, 0), (WINDOW_INPUT, 0)] {
            assert!(first.contains(&id) && again.contains(&id), "{id:?}");
        }
    }
}
