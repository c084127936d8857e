//! The latency phase: a pipeline running normally (not until caught up), a
//! load generator at a fixed rate stamping each record with its send time,
//! and one consumer of both the output topic (end-to-end latency) and the
//! input topic (the broker's own produce -> consume latency, for reference)
//! measuring arrival - timestamp.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::measure::percentile;
use super::throughput::{Deliveries, send};
use sluice::cli::kafka_tools::{SampleOptions, now_ms, sample_record};
use sluice::pipeline::{self, RunOptions, Summary};
use sluice::spec::PipelineSpec;

/// How long to wait, after the last record was sent, for the rest to arrive.
const DRAIN: Duration = Duration::from_secs(15);
/// How long the pipeline may take to start consuming.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The phase's parameters.
#[derive(Debug, Clone)]
pub struct LatencyParams<'a> {
    pub brokers: &'a str,
    pub input: &'a str,
    pub output: &'a str,
    pub rate: u64,
    pub seconds: u64,
    pub users: u64,
    /// The generator's `linger.ms`.
    pub linger_ms: u64,
}

/// What the load generator does (owned: it runs on its own thread).
struct Load {
    brokers: String,
    topic: String,
    rate: u64,
    seconds: u64,
    users: u64,
    linger_ms: u64,
}

/// Latencies of one topic's records, in ms.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Records that should arrive, and those that did.
    pub expected: u64,
    pub measured: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Percentiles {
    fn of(expected: u64, mut latencies_us: Vec<u64>) -> Self {
        latencies_us.sort_unstable();
        let ms = |p: f64| percentile(&latencies_us, p).map(|us| us as f64 / 1000.0);
        Self {
            expected,
            measured: latencies_us.len() as u64,
            p50_ms: ms(50.0),
            p90_ms: ms(90.0),
            p99_ms: ms(99.0),
            max_ms: ms(100.0),
        }
    }
}

/// What the phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub offered_per_s: u64,
    /// Records sent in the measured phase, and the rate actually achieved.
    pub produced: u64,
    pub achieved_per_s: f64,
    /// Generator -> broker -> pipeline -> broker -> consumer, for the records
    /// filter-heartbeats forwards.
    pub end_to_end: Percentiles,
    /// Generator -> broker -> consumer of the input topic: the part of the
    /// above that is not the pipeline's.
    pub broker_only: Percentiles,
    pub summary: Summary,
}

/// Latencies (µs) of the measured records, per topic.
#[derive(Default)]
struct Arrivals {
    output: Vec<u64>,
    input: Vec<u64>,
}

/// What the generator did.
struct Generated {
    produced: u64,
    expected: u64,
    send_s: f64,
}

/// Runs the phase; `spec` reads `params.input` and writes `params.output`.
pub fn run(
    spec: &PipelineSpec,
    params: &LatencyParams<'_>,
    dispatch: &tracing::Dispatch,
) -> anyhow::Result<Latency> {
    let stop = Arc::new(AtomicBool::new(false));
    let pipeline = {
        let (spec, stop, dispatch) = (spec.clone(), stop.clone(), dispatch.clone());
        std::thread::Builder::new()
            .name("bench-pipeline".into())
            .spawn(move || {
                let _logs = tracing::dispatcher::set_default(&dispatch);
                pipeline::run(&spec, RunOptions::default(), &stop)
            })?
    };
    let outcome = measure(params, dispatch, &pipeline);
    stop.store(true, Ordering::Relaxed);
    let summary = pipeline
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?
        .context("the pipeline failed")?;
    let (generated, arrivals) = outcome?;
    Ok(Latency {
        offered_per_s: params.rate,
        produced: generated.produced,
        achieved_per_s: generated.produced as f64 / generated.send_s.max(f64::EPSILON),
        end_to_end: Percentiles::of(generated.expected, arrivals.output),
        broker_only: Percentiles::of(generated.produced, arrivals.input),
        summary,
    })
}

/// Consumes the output and the input while the generator runs; returns the
/// generator's counts and the latencies of the measured records.
fn measure(
    params: &LatencyParams<'_>,
    dispatch: &tracing::Dispatch,
    pipeline: &std::thread::JoinHandle<anyhow::Result<Summary>>,
) -> anyhow::Result<(Generated, Arrivals)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", params.brokers)
        .set("group.id", format!("{}-reader", params.output))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for topic in [params.output, params.input] {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&tpl)?;

    // Records stamped before `t0` are warm-up; `i64::MAX` until it is set.
    let t0 = Arc::new(AtomicI64::new(i64::MAX));
    let ready = Arc::new(AtomicBool::new(false));
    let abort = Arc::new(AtomicBool::new(false));
    let mut generator = Some({
        let (t0, ready, abort) = (t0.clone(), ready.clone(), abort.clone());
        let load = Load {
            brokers: params.brokers.to_owned(),
            topic: params.input.to_owned(),
            rate: params.rate,
            seconds: params.seconds,
            users: params.users,
            linger_ms: params.linger_ms,
        };
        let dispatch = dispatch.clone();
        std::thread::Builder::new()
            .name("bench-load".into())
            .spawn(move || {
                let _logs = tracing::dispatcher::set_default(&dispatch);
                generate(&load, &t0, &ready, &abort)
            })?
    });

    let mut arrivals = Arrivals::default();
    let mut generated: Option<Generated> = None;
    let mut drain_until = None;
    loop {
        if let Some(m) = consumer.poll(Duration::from_millis(20)) {
            let arrived_us = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            let m = m?;
            let output = m.topic() == params.output;
            if let Some(ts) = m.timestamp().to_millis() {
                let latency = (arrived_us - ts * 1000).max(0) as u64;
                match (ts >= t0.load(Ordering::Relaxed), output) {
                    (true, true) => arrivals.output.push(latency),
                    (true, false) => arrivals.input.push(latency),
                    (false, true) => ready.store(true, Ordering::Relaxed),
                    (false, false) => {}
                }
            }
        }
        if pipeline.is_finished() {
            abort.store(true, Ordering::Relaxed);
            bail!("the pipeline stopped while the load was running");
        }
        if generator.as_ref().is_some_and(|g| g.is_finished()) {
            let g = generator.take().expect("checked");
            let g = g
                .join()
                .map_err(|_| anyhow::anyhow!("the load generator panicked"))??;
            generated = Some(g);
            drain_until = Some(Instant::now() + DRAIN);
        }
        if let Some(g) = &generated
            && ((arrivals.output.len() as u64 >= g.expected
                && arrivals.input.len() as u64 >= g.produced)
                || drain_until.is_some_and(|d| Instant::now() > d))
        {
            break;
        }
    }
    Ok((
        generated.expect("the loop ends after the generator"),
        arrivals,
    ))
}

/// Waits until the pipeline forwards a warm-up record, then sends
/// `rate * seconds` sample records on a fixed schedule, each stamped with its
/// send time, and waits for their acknowledgements.
fn generate(
    load: &Load,
    t0: &AtomicI64,
    ready: &AtomicBool,
    abort: &AtomicBool,
) -> anyhow::Result<Generated> {
    let Load {
        brokers,
        topic,
        rate,
        seconds,
        users,
        linger_ms,
    } = load;
    let (topic, rate, seconds, users) = (topic.as_str(), *rate, *seconds, *users);
    // A small linger, so that the generator itself adds little latency
    // (below ~5 ms librdkafka's broker thread spins; see --help).
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", linger_ms.to_string())
        .set("compression.type", "lz4")
        .create_with_context(Deliveries::default())?;
    let options = SampleOptions {
        count: u64::MAX,
        users,
        ..Default::default()
    };
    let heartbeat = br#""event_type":"heartbeat""#;
    let forwarded = |value: &[u8]| !value.windows(heartbeat.len()).any(|w| w == heartbeat);
    let record = |n: u64| {
        let (key, value) = sample_record(&options, n);
        (key.into_bytes(), value)
    };

    // Warm-up: one forwarded record every 50 ms until one comes out.
    let started = Instant::now();
    let mut n = 10_000_000_000;
    while !ready.load(Ordering::Relaxed) {
        if abort.load(Ordering::Relaxed) {
            bail!("aborted");
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("the pipeline forwarded nothing within {READY_TIMEOUT:?}");
        }
        let (key, value) = record(n);
        n += 1;
        if forwarded(&value) {
            let r = BaseRecord::to(topic)
                .key(&key[..])
                .payload(&value[..])
                .timestamp(now_ms());
            send(&producer, r)?;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    t0.store(now_ms(), Ordering::Relaxed);

    let total = rate * seconds;
    let (mut sent, mut expected) = (0u64, 0u64);
    let started = Instant::now();
    while sent < total && !abort.load(Ordering::Relaxed) {
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        while sent < due {
            let (key, value) = record(sent);
            expected += forwarded(&value) as u64;
            let r = BaseRecord::to(topic)
                .key(&key[..])
                .payload(&value[..])
                .timestamp(now_ms());
            send(&producer, r)?;
            sent += 1;
        }
        // Sends come in 1 ms steps (10 records at 10,000/s); each is
        // stamped when it is sent, so the steps do not bias the latencies.
        std::thread::sleep(Duration::from_millis(1));
    }
    let send_s = started.elapsed().as_secs_f64();
    producer
        .flush(Duration::from_secs(30))
        .context("cannot flush the load generator")?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} deliveries of the load generator failed");
    }
    Ok(Generated {
        produced: sent,
        expected,
        send_s,
    })
}
