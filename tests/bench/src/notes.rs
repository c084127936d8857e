//! How to read the bench's figures: the notes under its tables.

use super::report::{Report, opt};
use super::{BenchArgs, STEADY};

/// How to read the figures.
pub fn notes(report: &Report, args: &BenchArgs) -> Vec<String> {
    let first = report.rows.iter().find_map(|r| r.first_record_s);
    let wasm = report.rows.iter().find_map(|r| r.wasm_start_s);
    let mut notes = vec![
        format!(
            "seconds, records/s, MB/s: wall time from creating the consumer (raw passthrough, whose producer is \
             started beforehand) or calling `sluice::pipeline::run` until caught up (pipelines) to every output \
             acknowledged: it includes the consumer-group join and first fetch (raw passthrough: first record \
             after {} s) and, for pipelines, their whole start (Wasm runtime and modules: {} ms measured apart; \
             the idempotent producer's id, ~1 s) and the final commit or checkpoint and flush",
            opt(first, 2),
            opt(wasm.map(|s| s * 1000.0), 0),
        ),
        format!(
            "steady records/s: between {:.0}% and {:.0}% of the records done (raw passthrough: deliveries \
             acknowledged; pipelines: batches processed, the host keeping only a few batches awaiting \
             acknowledgement); no start, no end. vs raw: relative to the raw passthrough of the same input",
            STEADY.0 * 100.0,
            STEADY.1 * 100.0
        ),
        format!(
            "pipelines: batch.max_records {}, max_bytes 1 MiB, max_wait 100ms; every row: the host's producer and \
             consumer defaults{}; build: {}",
            args.batch_records,
            overrides(args),
            if cfg!(debug_assertions) { "debug (dev profile)" } else { "release" }
        ),
        "strategy-map reads readings `{strategy, value, ts}`, made record for record from the same sample \
         events (strategy = event_type, value = amount, ts = timestamp, same key and record timestamp)"
            .to_owned(),
        "host CPU s: user + system time of the whole bench process (all threads, /proc/self/stat) during the \
         row; for raw passthrough and latency it includes the bench's own clients; broker CPU s needs \
         --broker-pid"
            .to_owned(),
    ];
    let reset = report.rows.iter().all(|r| r.usage.peak_rss_reset);
    notes.push(if reset {
        "peak RSS: VmHWM of the bench process, reset before each row (/proc/self/clear_refs) to the RSS at \
         the start of the row (in parentheses), which includes what the allocator kept from earlier rows"
            .to_owned()
    } else {
        "peak RSS: VmHWM of the bench process; it could not be reset between rows, so each figure is the peak \
         of the whole process up to the end of that row"
            .to_owned()
    });
    notes.push(
        "host alone peak RSS: after each pipeline row (not the exactly-once one), the same pipeline runs again \
         with `sluice run --until-caught-up` in a process of its own, under its own consumer group; the figure \
         is that process's VmHWM, followed every 10 ms"
            .to_owned(),
    );
    if report.latency.is_some() {
        notes.push(format!(
            "latency: arrival at the bench's consumer (fetch.wait.max.ms 5) minus the record timestamp, stamped \
             at send in whole ms (so up to 1 ms high); generator linger.ms {}; pipeline source fetch.wait.max.ms \
             = batch.max_wait ({} ms), host producer linger.ms 5; warm-up records not counted; percentiles by \
             nearest rank",
            args.generator_linger_ms,
            args.max_wait.as_millis()
        ));
    }
    for r in &report.rows {
        if report
            .inputs
            .iter()
            .find(|i| i.kind == r.input)
            .is_some_and(|i| i.records != r.records)
        {
            notes.push(format!(
                "WARNING: {} read {} records of its input's {}",
                r.name, r.records, r.input
            ));
        }
    }
    notes
}

/// The `--consumer` / `--producer` properties, as a note.
fn overrides(args: &BenchArgs) -> String {
    let list = |props: &[(String, String)]| {
        props
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = String::new();
    if !args.consumer.is_empty() {
        s += &format!(", plus consumer {}", list(&args.consumer));
    }
    if !args.producer.is_empty() {
        s += &format!(", plus producer {}", list(&args.producer));
    }
    s
}
