//! Topics the host writes that nobody else creates: a pipeline's
//! repartition topics.

use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::spec::KafkaSpec;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Creates `topics` with `partitions` partitions each, replicated
/// `replication` times (`None`: the broker's default); a topic that exists
/// already is left as it is.
pub fn create_topics(
    config: &ClientConfig,
    topics: &[&str],
    partitions: i32,
    replication: Option<i32>,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .context("cannot create a Kafka admin client")?;
    let replication = replication.unwrap_or(-1);
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = rt.block_on(
        admin.create_topics(&new, &AdminOptions::new().operation_timeout(Some(TIMEOUT))),
    )?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("cannot create topic `{topic}`: {code}"),
        }
    }
    Ok(())
}

/// The partition count of `topic`, which is created with `partitions`
/// partitions (and the broker's default replication) if it does not exist.
pub fn ensure_topic(kafka: &KafkaSpec, topic: &str, partitions: i32) -> anyhow::Result<i32> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    for (k, v) in &kafka.consumer {
        config.set(k, v.to_string());
    }
    let consumer: BaseConsumer = config.create()?;
    let count = || -> anyhow::Result<Option<i32>> {
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .with_context(|| format!("cannot reach the brokers {}", kafka.brokers))?;
        Ok(metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as i32))
    };
    if let Some(n) = count()? {
        return Ok(n);
    }
    let mut admin = ClientConfig::new();
    admin.set("bootstrap.servers", &kafka.brokers);
    for (k, v) in &kafka.producer {
        admin.set(k, v.to_string());
    }
    create_topics(&admin, &[topic], partitions, None)?;
    tracing::info!(topic, partitions, "repartition topic created");
    // Creation is asynchronous in the cluster: wait until it is seen.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(n) = count()? {
            return Ok(n);
        }
        if std::time::Instant::now() > deadline {
            bail!("the topic `{topic}` was created but does not show in the metadata");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
