//! Reading a spec from YAML (or JSON, which YAML accepts) and checking what
//! types alone cannot.

use std::path::Path;
use std::time::Duration;

use super::{Confinement, DEFAULT_OUTPUT, Parallelism, PipelineSpec};

/// A spec that cannot be used, with the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// Dotted path of the field, e.g. `transforms[0].limits.memory`; `spec`
    /// for the document as a whole.
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Reads and validates the spec at `path`. Module paths are resolved relative
/// to the file's directory.
pub fn load(path: &Path) -> Result<PipelineSpec, SpecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::new("spec", format!("cannot read {}: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base)
}

/// Like [`load`], without checking that the module files exist yet (for
/// `sluice dev`, which builds them).
pub fn load_unbuilt(path: &Path) -> Result<PipelineSpec, SpecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::new("spec", format!("cannot read {}: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_with(
        &text,
        Paths::Trusted {
            base,
            check_modules: false,
        },
    )
}

/// Parses and validates a spec an operator wrote. Relative paths are
/// joined to `base`.
pub fn parse(text: &str, base: &Path) -> Result<PipelineSpec, SpecError> {
    parse_with(
        text,
        Paths::Trusted {
            base,
            check_modules: true,
        },
    )
}

/// Parses and validates a spec sent to the server: every path must lie
/// where `confinement` allows, and module files are not looked at (the
/// server resolved them to its store).
pub fn parse_confined(text: &str, confinement: &Confinement) -> Result<PipelineSpec, SpecError> {
    parse_with(text, Paths::Confined(confinement))
}

/// How a spec's paths are resolved.
enum Paths<'a> {
    /// Taken as written, relative ones joined to `base`.
    Trusted {
        base: &'a Path,
        check_modules: bool,
    },
    Confined(&'a Confinement),
}

fn parse_with(text: &str, paths: Paths<'_>) -> Result<PipelineSpec, SpecError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let mut spec: PipelineSpec = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            "spec".to_owned()
        } else {
            field
        };
        let message = e.into_inner().to_string();
        // The YAML library prefixes its own, shorter path: keep only ours.
        let message = match message.split_once(": ") {
            Some((head, rest))
                if !head.contains(char::is_whitespace) && field.starts_with(head) =>
            {
                rest.to_owned()
            }
            _ => message,
        };
        SpecError::new(field, message)
    })?;
    let check_modules = match paths {
        Paths::Trusted {
            base,
            check_modules,
        } => {
            resolve_trusted(&mut spec, base);
            check_modules
        }
        Paths::Confined(confinement) => {
            resolve_confined(&mut spec, confinement)?;
            false
        }
    };
    join_sources(&mut spec)?;
    if spec.parallelism == Parallelism::Unset {
        spec.parallelism = Parallelism::default_for(&spec);
    }
    validate(&spec, check_modules)?;
    Ok(spec)
}

/// A pipeline that starts with a join reads its sides' topics: they become
/// the source topics (left ones first), which the spec must leave out.
fn join_sources(spec: &mut PipelineSpec) -> Result<(), SpecError> {
    for (i, t) in spec.transforms.iter().enumerate() {
        let Some(join) = &t.join else { continue };
        let field = |f: &str| format!("transforms[{i}].join{f}");
        join.validate()
            .map_err(|(f, message)| SpecError::new(field(&format!(".{f}")), message))?;
        if i != 0 {
            return Err(SpecError::new(
                field(""),
                "a join step must be the first transform of the chain (it reads the source)",
            ));
        }
        if t.aggregate.is_some() {
            return Err(SpecError::new(
                field(""),
                "a step is a join or an aggregate, not both",
            ));
        }
        if let Some(k) = spec.transforms.iter().position(|t| t.aggregate.is_some()) {
            return Err(SpecError::new(
                format!("transforms[{k}].aggregate"),
                "an aggregate after a join is not supported yet: write the joined records to a \
                 topic and aggregate them in a second pipeline",
            ));
        }
        if !spec.source.topics.is_empty() {
            return Err(SpecError::new(
                "source.topics",
                "leave it out when the first step is a join: the join's `left.topics` and \
                 `right.topics` are the topics read",
            ));
        }
        spec.source.topics = join.topics();
    }
    Ok(())
}

fn resolve_trusted(spec: &mut PipelineSpec, base: &Path) {
    for t in &mut spec.transforms {
        if t.module.is_relative() {
            t.module = base.join(&t.module);
        }
    }
    if let Some(c) = &mut spec.checkpoint
        && c.dir.is_relative()
        && c.s3_url().is_none()
    {
        c.dir = base.join(&c.dir);
    }
    for output in spec.outputs.values_mut() {
        if let Some(p) = &mut output.parquet
            && p.path.is_relative()
        {
            p.path = base.join(&p.path);
        }
        if let Some(d) = &mut output.delta
            && d.path.is_relative()
            && d.s3_url().is_none()
        {
            d.path = base.join(&d.path);
        }
    }
}

fn resolve_confined(spec: &mut PipelineSpec, confinement: &Confinement) -> Result<(), SpecError> {
    for (i, t) in spec.transforms.iter_mut().enumerate() {
        t.module = confinement.module(&format!("transforms[{i}].module"), &t.module)?;
    }
    if let Some(c) = &mut spec.checkpoint {
        c.dir = match c.s3_url() {
            Some(url) => confinement.place_url("checkpoint.dir", url)?.into(),
            None => confinement.place("checkpoint.dir", &c.dir)?,
        };
    }
    for (name, output) in &mut spec.outputs {
        if let Some(p) = &mut output.parquet {
            p.path = confinement.place(&format!("outputs.{name}.parquet.path"), &p.path)?;
        }
        if let Some(d) = &mut output.delta {
            let field = format!("outputs.{name}.delta.path");
            d.path = match d.s3_url() {
                Some(url) => confinement.place_url(&field, url)?.into(),
                None => confinement.place(&field, &d.path)?,
            };
        }
    }
    Ok(())
}

const MAX_BATCH_RECORDS: usize = 1_000_000;
const MAX_BATCH_BYTES: u64 = 256 << 20;
const MIN_MEMORY: u64 = 1 << 20;
const MAX_MEMORY: u64 = 4 << 30;
const MAX_DEADLINE: Duration = Duration::from_secs(600);

fn validate(spec: &PipelineSpec, check_modules: bool) -> Result<(), SpecError> {
    check_name("name", &spec.name)?;
    if spec.kafka.brokers.trim().is_empty() {
        return Err(SpecError::new(
            "kafka.brokers",
            "must list at least one host:port",
        ));
    }
    super::kafka_props::check_all(&spec.kafka)?;
    if spec.source.topics.is_empty() {
        return Err(SpecError::new(
            "source.topics",
            "must name at least one topic",
        ));
    }
    for (i, topic) in spec.source.topics.iter().enumerate() {
        check_topic(&format!("source.topics[{i}]"), topic)?;
        if spec.source.topics[..i].contains(topic) {
            return Err(SpecError::new(
                format!("source.topics[{i}]"),
                format!("`{topic}` is listed twice"),
            ));
        }
        if spec.sink_topics().contains(&topic.as_str()) {
            return Err(SpecError::new(
                format!("source.topics[{i}]"),
                format!(
                    "`{topic}` is also an output or dead-letter topic; the pipeline would read its own output"
                ),
            ));
        }
    }
    if let Some(group) = &spec.source.group
        && group.trim().is_empty()
    {
        return Err(SpecError::new("source.group", "must not be empty"));
    }

    let batch = &spec.batch;
    if !(1..=MAX_BATCH_RECORDS).contains(&batch.max_records) {
        return Err(SpecError::new(
            "batch.max_records",
            format!(
                "must be between 1 and {MAX_BATCH_RECORDS}, got {}",
                batch.max_records
            ),
        ));
    }
    if !(1024..=MAX_BATCH_BYTES).contains(&batch.max_bytes.as_u64()) {
        return Err(SpecError::new(
            "batch.max_bytes",
            format!("must be between 1 KiB and 256 MiB, got {}", batch.max_bytes),
        ));
    }
    if batch.max_wait.is_zero() || batch.max_wait > Duration::from_secs(3600) {
        return Err(SpecError::new(
            "batch.max_wait",
            "must be between 1ms and 1h",
        ));
    }

    let mut names: Vec<String> = Vec::new();
    for (i, t) in spec.transforms.iter().enumerate() {
        let field = |f: &str| format!("transforms[{i}].{f}");
        let name = t.step_name();
        check_name(&field("name"), &name)?;
        if names.contains(&name) {
            return Err(SpecError::new(
                field("name"),
                format!("step name `{name}` is used twice; give one of them a `name`"),
            ));
        }
        names.push(name);
        match std::fs::metadata(&t.module) {
            _ if !check_modules => {}
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(SpecError::new(
                    field("module"),
                    format!("{} is not a file", t.module.display()),
                ));
            }
            Err(e) => {
                return Err(SpecError::new(
                    field("module"),
                    format!("cannot read {}: {e}", t.module.display()),
                ));
            }
        }
        let memory = t.limits.memory.as_u64();
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&memory) {
            return Err(SpecError::new(
                field("limits.memory"),
                format!("must be between 1 MiB and 4 GiB, got {}", t.limits.memory),
            ));
        }
        if t.limits.deadline < Duration::from_millis(1) || t.limits.deadline > MAX_DEADLINE {
            return Err(SpecError::new(
                field("limits.deadline"),
                "must be between 1ms and 10m",
            ));
        }
        if let Some(aggregate) = &t.aggregate {
            aggregate
                .validate()
                .map_err(|e| SpecError::new(field("aggregate"), e))?;
            if i + 1 != spec.transforms.len() {
                return Err(SpecError::new(
                    field("aggregate"),
                    "an aggregate step must be the last transform of the chain",
                ));
            }
        }
        if t.repartition.is_some() {
            if t.aggregate.is_none() {
                return Err(SpecError::new(
                    field("repartition"),
                    "only an aggregate step repartitions (by its key)",
                ));
            }
            let (_, topic) = spec.repartition().expect("this step repartitions");
            let at = field("repartition.topic");
            check_topic(&at, &topic)?;
            if spec.source.topics.contains(&topic) || spec.sink_topics().contains(&topic.as_str()) {
                return Err(SpecError::new(
                    at,
                    format!(
                        "`{topic}` is also a source, output or dead-letter topic; the repartition \
                         topic is the pipeline's own"
                    ),
                ));
            }
        }
    }

    if !spec.outputs.contains_key(DEFAULT_OUTPUT) {
        return Err(SpecError::new(
            "outputs",
            "must have a `default` output: it receives the last transform's default output",
        ));
    }
    for (name, output) in &spec.outputs {
        check_name(&format!("outputs.{name}"), name)?;
        if let Some(topic) = &output.topic {
            check_topic(&format!("outputs.{name}.topic"), topic)?;
        }
        if output.topic.is_none()
            && output.parquet.is_none()
            && output.postgres.is_none()
            && output.delta.is_none()
        {
            return Err(SpecError::new(
                format!("outputs.{name}"),
                "needs a `topic`, a `parquet`, `postgres` or `delta` section, or several",
            ));
        }
        if let Some(parquet) = &output.parquet {
            parquet
                .validate()
                .map_err(|e| SpecError::new(format!("outputs.{name}.parquet"), e))?;
        }
        if let Some(postgres) = &output.postgres {
            postgres
                .validate()
                .map_err(|e| SpecError::new(format!("outputs.{name}.postgres"), e))?;
        }
        if let Some(delta) = &output.delta {
            delta
                .validate()
                .map_err(|e| SpecError::new(format!("outputs.{name}.delta"), e))?;
        }
    }
    check_topic("dead_letter.topic", &spec.dead_letter.topic)?;

    if let Some(c) = &spec.checkpoint {
        if c.interval < Duration::from_millis(10) || c.interval > Duration::from_secs(24 * 3600) {
            return Err(SpecError::new(
                "checkpoint.interval",
                "must be between 10ms and 24h",
            ));
        }
        if !(1..=100).contains(&c.keep) {
            return Err(SpecError::new(
                "checkpoint.keep",
                format!("must be between 1 and 100, got {}", c.keep),
            ));
        }
    }
    if spec.checkpoint.is_none() {
        for (name, output) in &spec.outputs {
            let needs = [
                (
                    output.parquet.is_some(),
                    "parquet",
                    "Parquet files become visible",
                ),
                (output.delta.is_some(), "delta", "Delta commits are made"),
            ];
            if let Some((_, section, what)) = needs.iter().find(|n| n.0) {
                return Err(SpecError::new(
                    format!("outputs.{name}.{section}"),
                    format!("{what} at checkpoints: add a `checkpoint` section"),
                ));
            }
        }
    }
    if spec.delivery == super::Delivery::ExactlyOnce && spec.checkpoint.is_none() {
        return Err(SpecError::new(
            "delivery",
            "exactly-once needs a `checkpoint` section (a directory for checkpoints and the epoch log)",
        ));
    }
    Ok(())
}

fn check_name(field: &str, name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!("`{name}` is not a valid name: use 1-100 lower-case letters, digits and `-`"),
        ))
    }
}

/// Kafka's own rule for topic names.
fn check_topic(field: &str, topic: &str) -> Result<(), SpecError> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!("`{topic}` is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory holding `m.wasm`, so module checks pass.
    fn base() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.wasm"), b"\0asm").unwrap();
        dir
    }

    const GOOD: &str = r#"
name: demo
kafka: { brokers: "127.0.0.1:9092", producer: { linger.ms: 5 } }
source: { topics: [events] }
batch: { max_records: 500, max_bytes: 2 MiB, max_wait: 20ms }
transforms:
  - module: m.wasm
    config: { threshold: 30, field: event_type }
    limits: { memory: 16 MiB, deadline: 250ms }
outputs:
  default: { topic: clean }
  alerts: { topic: alerts }
dead_letter: { topic: dlq }
"#;

    fn err(yaml: &str) -> String {
        let dir = base();
        parse(yaml, dir.path()).unwrap_err().to_string()
    }

    #[test]
    fn parallelism_defaults_to_auto_unless_the_pipeline_must_run_whole() {
        let dir = base();
        assert_eq!(
            parse(GOOD, dir.path()).unwrap().parallelism,
            Parallelism::Auto
        );
        let window = "    aggregate: { window: { tumbling: 1m }, watermark: { max_out_of_orderness: 1s } }\n";
        let aggregate = GOOD.replace("    limits: { memory: 16 MiB, deadline: 250ms }\n", window);
        assert_eq!(
            parse(&aggregate, dir.path()).unwrap().parallelism,
            Parallelism::default(),
            "an aggregate's key may not be the Kafka key"
        );
        let repartitioned = aggregate.replace(window, &format!("    repartition: true\n{window}"));
        assert_eq!(
            parse(&repartitioned, dir.path()).unwrap().parallelism,
            Parallelism::Auto
        );
        let checkpointed = format!("{GOOD}checkpoint: {{ dir: cp }}\n");
        assert_eq!(
            parse(&checkpointed, dir.path()).unwrap().parallelism,
            Parallelism::Auto
        );
        std::fs::create_dir(dir.path().join("cp")).unwrap();
        std::fs::write(dir.path().join("cp/LINEAGE"), "l").unwrap();
        assert_eq!(
            parse(&checkpointed, dir.path()).unwrap().parallelism,
            Parallelism::default(),
            "a whole pipeline's checkpoints carry on whole"
        );
        let explicit = format!("{checkpointed}parallelism: 2\n");
        assert!(parse(&explicit, dir.path()).unwrap().parallelism.tasks());
    }

    #[test]
    fn parallelism_is_a_worker_count_or_auto() {
        use crate::spec::Parallelism;
        let dir = base();
        let with = |value: &str| parse(&format!("{GOOD}parallelism: {value}\n"), dir.path());
        assert!(!Parallelism::default().tasks());
        let four = with("4").unwrap().parallelism;
        assert!(four.tasks());
        assert_eq!(
            (four.workers(16), four.workers(3), four.workers(0)),
            (4, 3, 1)
        );
        let auto = with("auto").unwrap().parallelism;
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(auto.workers(1000), cores);
        for bad in ["0", "257", "-1", "2.5", "many"] {
            let shown = if bad == "many" {
                "\"many\"".to_owned()
            } else {
                bad.to_owned()
            };
            let error = with(bad).unwrap_err().to_string();
            assert!(
                error.contains(&format!(
                    "parallelism must be `auto` or a number from 1 to 256, not {shown}"
                )),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn parses_a_full_spec_with_defaults_and_resolved_paths() {
        let dir = base();
        let spec = parse(GOOD, dir.path()).unwrap();
        assert_eq!(spec.group_id(), "sluice-demo");
        assert_eq!(spec.batch.max_records, 500);
        assert_eq!(spec.batch.max_bytes.as_u64(), 2 << 20);
        assert_eq!(spec.batch.max_wait, Duration::from_millis(20));
        assert_eq!(spec.transforms[0].module, dir.path().join("m.wasm"));
        assert_eq!(spec.transforms[0].step_name(), "m");
        assert_eq!(
            spec.transforms[0].config_pairs(),
            vec![
                ("threshold".into(), "30".into()),
                ("field".into(), "event_type".into())
            ]
        );
        assert_eq!(
            spec.transforms[0].limits.deadline,
            Duration::from_millis(250)
        );
        assert_eq!(spec.kafka.producer["linger.ms"].to_string(), "5");
        assert_eq!(spec.sink_topics(), vec!["alerts", "clean", "dlq"]);
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let e = err(&GOOD.replace("    config:", "    confg:"));
        assert!(
            e.starts_with("transforms[0].confg: unknown field `confg`, expected one of"),
            "{e}"
        );
        let e = err(&GOOD.replace("max_wait: 20ms", "max_wait: 20ms, max_recs: 1"));
        assert!(
            e.starts_with("batch.max_recs: unknown field `max_recs`"),
            "{e}"
        );
    }

    #[test]
    fn bad_durations_and_sizes_name_the_field() {
        let e = err(&GOOD.replace("deadline: 250ms", "deadline: soon"));
        assert!(e.starts_with("transforms[0].limits.deadline: "), "{e}");
        let e = err(&GOOD.replace("max_bytes: 2 MiB", "max_bytes: lots"));
        assert!(e.starts_with("batch.max_bytes: "), "{e}");
        let e = err(&GOOD.replace("memory: 16 MiB", "memory: 16 KiB"));
        assert_eq!(
            e,
            "transforms[0].limits.memory: must be between 1 MiB and 4 GiB, got 16.0 KiB"
        );
    }

    #[test]
    fn semantic_errors_name_the_field() {
        assert_eq!(
            err(&GOOD.replace("module: m.wasm", "module: missing.wasm"))
                .split(": cannot read")
                .next()
                .unwrap(),
            "transforms[0].module"
        );
        assert_eq!(
            err(&GOOD.replace("default: { topic: clean }", "main: { topic: clean }")),
            "outputs: must have a `default` output: it receives the last transform's default output"
        );
        assert_eq!(
            err(&GOOD.replace("topics: [events]", "topics: [dlq]")),
            "source.topics[0]: `dlq` is also an output or dead-letter topic; the pipeline would read its own output"
        );
        assert_eq!(
            err(&GOOD.replace("name: demo", "name: Demo")),
            "name: `Demo` is not a valid name: use 1-100 lower-case letters, digits and `-`"
        );
        assert_eq!(
            err(&GOOD.replace("max_records: 500", "max_records: 0")),
            "batch.max_records: must be between 1 and 1000000, got 0"
        );
        assert_eq!(
            err(&GOOD.replace("topic: alerts", "topic: 'a/b'")),
            "outputs.alerts.topic: `a/b` is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])"
        );
    }

    #[test]
    fn kafka_properties_are_checked_in_every_mode() {
        let e = err(&GOOD.replace(
            "producer: { linger.ms: 5 }",
            "producer: { linger.ms: 5, acks: 1 }",
        ));
        assert!(
            e.starts_with("kafka.producer.acks: must be `all` (or -1): "),
            "{e}"
        );
        let data = tempfile::tempdir().unwrap();
        let c = Confinement::new(data.path().join("pipelines/demo"), vec![]);
        let yaml = GOOD
            .replace("  - module: m.wasm\n", "  - module: .modules/1/m.wasm\n")
            .replace("producer: { linger.ms: 5 }", "consumer: { group.id: g }");
        assert_eq!(
            parse_confined(&yaml, &c).unwrap_err().to_string(),
            "kafka.consumer.group.id: not allowed: set it in `source.group`"
        );
    }

    #[test]
    fn confined_specs_keep_their_paths_inside_and_never_probe_modules() {
        let data = tempfile::tempdir().unwrap();
        let base = data.path().join("pipelines/demo");
        let c = Confinement::new(&base, vec![]);
        let yaml = GOOD.replace("  - module: m.wasm\n", "  - module: .modules/1/m.wasm\n")
            + "checkpoint: { dir: ckpt }\n";
        // The module file does not exist: a confined parse does not look.
        let spec = parse_confined(&yaml, &c).unwrap();
        assert_eq!(spec.transforms[0].module, base.join(".modules/1/m.wasm"));
        assert_eq!(spec.checkpoint.unwrap().dir, base.join("ckpt"));
        let outside = "must be inside the pipeline's directory (a relative path without `..` \
                       that does not start with `.`) or inside a directory the server allows \
                       (sluice serve --allow-dir)";
        assert_eq!(
            parse_confined(&yaml.replace("dir: ckpt", "dir: /tmp/x"), &c)
                .unwrap_err()
                .to_string(),
            format!("checkpoint.dir: {outside}")
        );
        let parquet = yaml.replace(
            "default: { topic: clean }",
            "default: { parquet: { path: ../../pq } }",
        );
        assert_eq!(
            parse_confined(&parquet, &c).unwrap_err().to_string(),
            format!("outputs.default.parquet.path: {outside}")
        );
        let delta = |path: &str| {
            yaml.replace(
                "default: { topic: clean }",
                &format!("default: {{ delta: {{ path: \"{path}\" }} }}"),
            )
        };
        assert_eq!(
            parse_confined(&delta("../lake"), &c)
                .unwrap_err()
                .to_string(),
            format!("outputs.default.delta.path: {outside}")
        );
        let in_s3 = Confinement::new(&base, vec!["s3://lake/pipelines".into()]);
        assert_eq!(
            parse_confined(&delta("s3://lake/other/t"), &in_s3)
                .unwrap_err()
                .to_string(),
            "outputs.default.delta.path: an s3:// directory must be inside an S3 prefix the server \
             allows (sluice serve --allow-dir s3://bucket/prefix), without `.`, `..` or empty segments"
        );
        let spec = parse_confined(&delta("s3://lake/pipelines/demo/t"), &in_s3).unwrap();
        assert_eq!(
            spec.outputs["default"].delta.as_ref().unwrap().path,
            std::path::Path::new("s3://lake/pipelines/demo/t")
        );
        let module = "must be `name` or `name@version` of a module pushed to this server \
                      (sluice module push)";
        for path in ["/etc/passwd", "/nonexistent"] {
            assert_eq!(
                parse_confined(&yaml.replace(".modules/1/m.wasm", path), &c)
                    .unwrap_err()
                    .to_string(),
                format!("transforms[0].module: {module}")
            );
        }
    }

    #[test]
    fn missing_required_fields_are_reported() {
        let e = err("name: x\nkafka: { brokers: b }\n");
        assert!(e.starts_with("spec: missing field `source`"), "{e}");
    }
}
