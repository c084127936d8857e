//! Tasks: how a pipeline with `parallelism` other than 1 is cut up.
//!
//! A task is one source partition number: partition `p` of every source
//! topic (topics read together are co-partitioned, as in a Kafka Streams
//! task). It is the unit of work, state and recovery: a task has its own
//! chain of guest instances, window state and watermark, epoch log and
//! checkpoints (in `<checkpoint.dir>/tasks/<p>/`), Parquet files (named
//! `part-t<p>-...`) and exactly-once lineage, so that it can run on any
//! worker, and later on any process, without the others. Only the
//! compiled modules and the producer are shared.
//!
//! A task's checkpoints record the partition counts of the source topics
//! they were cut from: a key's partition depends on them, so a task's state
//! is refused under another layout rather than misread. The checkpoint of
//! a whole pipeline (parallelism 1) and those of tasks are not converted
//! into each other: each mode refuses the other's directory, saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::checkpoint::TaskLayout;
use crate::spec::PipelineSpec;

/// Which topics a task reads: its pipeline's source topics, or the
/// repartition topic of a pipeline cut in two (see `spec::Stages`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    #[default]
    Source,
    Repartition,
}

impl Stage {
    /// The stage a (derived) spec runs.
    pub fn of(spec: &PipelineSpec) -> Self {
        if spec.source.upstream_tasks.is_some() {
            Self::Repartition
        } else {
            Self::Source
        }
    }
}

/// Whether the consumer group assigns `spec`'s tasks (to this process's
/// workers and to other processes of the pipeline), as it does a plain
/// consumer's partitions: a source of one topic. A task of several topics
/// needs partition `p` of each together, which the group's assignors do
/// not promise; those tasks are dealt out to this process's workers, and
/// the pipeline runs in one process.
pub fn grouped(spec: &PipelineSpec) -> bool {
    spec.source.topics.len() == 1
}

/// The subdirectory of the checkpoint directory that holds the tasks'.
const TASKS_DIR: &str = "tasks";

/// The checkpoint directory of the task of partition `partition`.
pub fn dir(root: &Path, partition: i32) -> PathBuf {
    root.join(TASKS_DIR).join(format!("{partition:05}"))
}

/// The tasks of a source whose topics have these partitions (index into
/// the source topics, partition): one per partition number, in order.
pub fn layouts(spec: &PipelineSpec, partitions: &[(u16, i32)]) -> Vec<TaskLayout> {
    let mut counts: BTreeMap<u16, i32> = BTreeMap::new();
    for &(source, _) in partitions {
        *counts.entry(source).or_default() += 1;
    }
    let topics: Vec<(String, i32)> = counts
        .into_iter()
        .map(|(source, n)| (spec.source.topics[source as usize].clone(), n))
        .collect();
    let mut numbers: Vec<i32> = partitions.iter().map(|&(_, p)| p).collect();
    numbers.sort_unstable();
    numbers.dedup();
    numbers
        .into_iter()
        .map(|partition| TaskLayout {
            partition,
            topics: topics.clone(),
        })
        .collect()
}

/// Refuses a checkpoint directory written in the other mode: per-task
/// checkpoints when the pipeline runs whole (`tasks` false), or a whole
/// pipeline's checkpoint when it runs as tasks.
pub fn check_mode(spec: &PipelineSpec, tasks: bool) -> anyhow::Result<()> {
    let Some(checkpoint) = &spec.checkpoint else {
        return Ok(());
    };
    let root = &checkpoint.dir;
    let (whole, per_task) = match checkpoint.s3_url() {
        Some(url) => {
            let dir = crate::checkpoint::ObjectDir::open(url, &checkpoint.s3)?;
            (dir.has_lineage()?, dir.has_below(TASKS_DIR)?)
        }
        None => (
            checkpoint.holds_whole_pipeline(),
            root.join(TASKS_DIR)
                .read_dir()
                .is_ok_and(|mut entries| entries.next().is_some()),
        ),
    };
    if tasks && whole {
        anyhow::bail!(
            "the checkpoint directory {} holds checkpoints of the whole pipeline (written with \
             parallelism 1); a pipeline with parallelism other than 1 keeps one per task, and the \
             whole pipeline's state cannot be split between tasks: set `parallelism: 1` to \
             continue from it, or remove the directory to start over",
            root.display()
        );
    }
    let tasks_dir = root.join(TASKS_DIR);
    if !tasks && per_task {
        anyhow::bail!(
            "the checkpoint directory {} holds per-task checkpoints (written with parallelism \
             other than 1) under {}; they cannot be joined into one for parallelism 1: set \
             `parallelism` as before to continue from them, or remove the directory to start over",
            root.display(),
            tasks_dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_per_partition_number_with_every_topics_count() {
        let spec = crate::spec::parse(
            "name: t\nkafka: { brokers: b }\nsource: { topics: [a, b] }\n\
             outputs: { default: { topic: o } }\ndead_letter: { topic: d }\n",
            Path::new("/"),
        )
        .unwrap();
        let tasks = layouts(&spec, &[(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]);
        let topics = vec![("a".to_owned(), 2), ("b".to_owned(), 3)];
        assert_eq!(
            tasks,
            [0, 1, 2].map(|partition| TaskLayout {
                partition,
                topics: topics.clone(),
            })
        );
        assert_eq!(dir(Path::new("/cp"), 2), Path::new("/cp/tasks/00002"));
    }
}
