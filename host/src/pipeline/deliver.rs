//! Handing a batch's results to the sink: outputs as the guests made them,
//! dead letters as the original source record plus why and where it failed.

use std::sync::Arc;

use rdkafka::error::KafkaError;

use super::chain::ChainOutput;
use crate::batch::Batch;
use crate::sink::{BatchAck, KafkaSink, headers};

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
    /// Topic of each configured output, in spec order.
    pub output_topics: Vec<String>,
    pub dead_letter_topic: String,
    /// Source topic names, indexed by `Batch::sources`.
    pub source_topics: Vec<String>,
    pub steps: Vec<StepInfo>,
}

/// Queues every output and dead-letter record of one batch under `ack`.
pub fn deliver(
    sink: &KafkaSink,
    ack: &Arc<BatchAck>,
    routing: &Routing,
    source: &Batch,
    out: &ChainOutput,
) -> Result<(), KafkaError> {
    for (routed, topic) in out.outputs.iter().zip(&routing.output_topics) {
        for record in routed.records.iter() {
            let h = headers(record.headers.iter(), &[]);
            sink.send(ack, topic, record.key, record.value, record.timestamp, h)?;
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
        let h = headers(record.headers.iter(), &extra);
        sink.send(
            ack,
            &routing.dead_letter_topic,
            record.key,
            record.value,
            record.timestamp,
            h,
        )?;
    }
    Ok(())
}
