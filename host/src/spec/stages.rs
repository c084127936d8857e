//! Stages: a pipeline run as tasks whose aggregate is keyed by something
//! other than the records' Kafka key, cut in two at a repartition topic.
//!
//! A task owns one partition number of its source (see
//! `pipeline::task`), so it can only aggregate keys that partition the
//! source. For any other key, as in Kafka Streams, the pipeline becomes two
//! stages joined by an internal topic:
//!
//! - the **front** stage reads the source topics, runs the steps before the
//!   aggregate, and then the aggregate guest's `extract` only: each record
//!   is written to the repartition topic with the aggregate key as its Kafka
//!   key (partition `murmur2(key) mod n`, like Kafka's own producers), and
//!   a `sluice.upstream` header naming its source partition; after each
//!   batch, a *watermark marker* (no key, no value, headers
//!   `sluice.upstream` and `sluice.watermark`) goes to every partition of
//!   the topic with the largest event time the batch keyed;
//! - the **back** stage reads the repartition topic, one task per
//!   partition, and runs the aggregate and the steps after it into the
//!   pipeline's outputs.
//!
//! Each stage is a pipeline of its own to the run loop (derived here from
//! the user's spec): its own tasks, checkpoints (the back stage's under
//! `<checkpoint.dir>/repartition-<step>/`) and exactly-once lineage, so the
//! topic in between is written exactly once per record and read like any
//! source. Event time crosses the topic per upstream task, as Flink's
//! watermarks cross an exchange: the back stage keeps a watermark per
//! (upstream task, partition), from the records and the markers, and takes
//! the minimum. A back task's watermark is thus the minimum over the source
//! partitions, as a whole pipeline's is: records of a slow source partition
//! are not made late by a fast one, and windows close as early as they
//! would in a whole run.

use serde::Deserialize;

use super::{DEFAULT_OUTPUT, OutputSpec, PipelineSpec, StartFrom};

/// The header carrying a repartitioned record's source partition.
pub const UPSTREAM_HEADER: &str = "sluice.upstream";
/// The header of a watermark marker: a record without key or value that
/// the front stage sends to every partition of the topic after each batch,
/// saying how far its source partition's event time has come (ms).
pub const WATERMARK_HEADER: &str = "sluice.watermark";

/// `repartition: true`, or `repartition: { topic: name }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repartition {
    /// The internal topic; default `<pipeline>-repartition-<step index>`.
    pub topic: Option<String>,
}

impl<'de> Deserialize<'de> for Repartition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Named {
            topic: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Named(Named),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("repartition must be `true` or `{ topic: <name> }`")
        })? {
            Raw::Flag(true) => Ok(Self { topic: None }),
            Raw::Flag(false) => Err(serde::de::Error::custom(
                "repartition: leave it out rather than `false`",
            )),
            Raw::Named(n) => Ok(Self {
                topic: Some(n.topic),
            }),
        }
    }
}

/// A pipeline cut at its repartition topic.
#[derive(Debug, Clone)]
pub struct Stages {
    /// Source topics to the repartition topic (its `default` output).
    pub front: PipelineSpec,
    /// The repartition topic to the pipeline's outputs.
    pub back: PipelineSpec,
    /// The repartition topic.
    pub topic: String,
    /// Index of the aggregate step in the user's spec.
    pub step: usize,
}

impl PipelineSpec {
    /// The step that repartitions, with its topic, if any.
    pub fn repartition(&self) -> Option<(usize, String)> {
        self.transforms
            .iter()
            .enumerate()
            .find_map(|(i, t)| Some((i, t.repartition.as_ref()?)))
            .map(|(i, r)| {
                let topic = r
                    .topic
                    .clone()
                    .unwrap_or_else(|| format!("{}-repartition-{i}", self.name));
                (i, topic)
            })
    }

    /// The two stages of a pipeline run as tasks with a repartitioned
    /// aggregate; `None` when it runs as one stage.
    pub fn stages(&self) -> Option<Stages> {
        if !self.parallelism.tasks() {
            return None;
        }
        let (step, topic) = self.repartition()?;

        let mut front = self.clone();
        front.transforms.truncate(step + 1);
        let rekey = &mut front.transforms[step];
        rekey.rekey = true;
        rekey.repartition = None;
        front.outputs.insert(
            DEFAULT_OUTPUT.to_owned(),
            OutputSpec {
                topic: Some(topic.clone()),
                parquet: None,
                postgres: None,
                delta: None,
            },
        );

        let mut back = self.clone();
        back.transforms.drain(..step);
        back.transforms[0].repartition = None;
        back.source.topics = vec![topic.clone()];
        back.source.start = StartFrom::Earliest;
        back.source.upstream_tasks = Some(Vec::new());
        if let Some(checkpoint) = &mut back.checkpoint {
            checkpoint.dir = checkpoint.dir.join(format!("repartition-{step}"));
        }
        Some(Stages {
            front,
            back,
            topic,
            step,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The spec with `extra` lines in its aggregate step, read from a
    /// directory (`/x` in the paths it shows) that holds its modules.
    fn spec(extra: &str) -> Result<PipelineSpec, crate::spec::SpecError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("m")).unwrap();
        for module in ["map", "agg"] {
            std::fs::write(dir.path().join(format!("m/{module}.wasm")), b"").unwrap();
        }
        let mut spec = crate::spec::parse(
            &format!(
                "name: per-type\nkafka: {{ brokers: b }}\nsource: {{ topics: [events] }}\n\
                 transforms:\n  - {{ module: m/map.wasm }}\n  - module: m/agg.wasm\n{extra}\
                 \x20   aggregate: {{ window: {{ tumbling: 1m }}, watermark: {{ max_out_of_orderness: 5s }} }}\n\
                 outputs: {{ default: {{ topic: counts }}, alerts: {{ topic: alerts }} }}\n\
                 dead_letter: {{ topic: dlq }}\ncheckpoint: {{ dir: cp }}\nparallelism: 4\n"
            ),
            dir.path(),
        )?;
        if let Some(checkpoint) = &mut spec.checkpoint {
            checkpoint.dir = Path::new("/x").join(checkpoint.dir.strip_prefix(dir.path()).unwrap());
        }
        Ok(spec)
    }

    #[test]
    fn a_repartitioned_aggregate_cuts_the_pipeline_at_its_topic() {
        let stages = spec("    repartition: true\n").unwrap().stages().unwrap();
        assert_eq!(stages.topic, "per-type-repartition-1");
        assert_eq!(stages.step, 1);
        let front = &stages.front;
        assert_eq!(front.source.topics, ["events"]);
        assert_eq!(front.transforms.len(), 2);
        assert!(!front.transforms[0].rekey && front.transforms[1].rekey);
        assert_eq!(
            front.outputs[DEFAULT_OUTPUT].topic.as_deref(),
            Some("per-type-repartition-1")
        );
        assert_eq!(front.outputs["alerts"].topic.as_deref(), Some("alerts"));
        assert_eq!(
            front.checkpoint.as_ref().unwrap().dir,
            Path::new("/x/cp"),
            "the front keeps the pipeline's checkpoint directory"
        );
        let back = &stages.back;
        assert_eq!(back.source.topics, ["per-type-repartition-1"]);
        assert_eq!(back.transforms.len(), 1);
        assert!(back.transforms[0].aggregate.is_some() && !back.transforms[0].rekey);
        assert_eq!(
            back.outputs[DEFAULT_OUTPUT].topic.as_deref(),
            Some("counts")
        );
        assert_eq!(
            back.checkpoint.as_ref().unwrap().dir,
            Path::new("/x/cp/repartition-1")
        );
        assert_eq!(back.group_id(), front.group_id(), "one consumer group");
    }

    #[test]
    fn the_topic_can_be_named_and_parallelism_one_runs_whole() {
        let named = spec("    repartition: { topic: by-type }\n").unwrap();
        assert_eq!(named.stages().unwrap().topic, "by-type");
        let mut whole = named.clone();
        whole.parallelism = crate::spec::Parallelism::default();
        assert!(whole.stages().is_none());
        assert!(spec("").unwrap().stages().is_none());
    }

    #[test]
    fn a_bad_repartition_is_refused_with_its_field() {
        let error = |extra: &str| spec(extra).unwrap_err().to_string();
        assert!(
            error("    repartition: false\n").contains("leave it out"),
            "{}",
            error("    repartition: false\n")
        );
        assert!(error("    repartition: 3\n").contains("`true` or `{ topic: <name> }`"));
        assert!(
            error("    repartition: { topic: events }\n")
                .contains("transforms[1].repartition.topic: `events` is also"),
            "{}",
            error("    repartition: { topic: events }\n")
        );
        assert!(
            error("    repartition: { topic: 'a b' }\n")
                .contains("transforms[1].repartition.topic"),
            "{}",
            error("    repartition: { topic: 'a b' }\n")
        );
    }
}
