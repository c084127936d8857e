//! A PostgreSQL output end to end, against a real server the suite starts
//! itself (`initdb` in a temporary directory) and reads back with `psql`:
//! rows written, records the host or the database refuses dead-lettered
//! with the reason, upserts, a table created from the spec's schema,
//! `sluice validate`, a database restart in the middle of a run, and
//! exactly-once through kill -9.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::kafka_tools::{SampleOptions, sample_record};
use sluice_tests::postgres::{Postgres, postgres, unique_table};
use sluice_tests::*;

/// A pipeline without transforms from `input` to `output` (a YAML flow
/// mapping of the default output).
fn pass_through(name: &str, input: &str, dlq: &str, output: &str, extra: &str) -> String {
    format!(
        r#"name: {name}
kafka: {{ brokers: "{brokers}" }}
source: {{ topics: [{input}] }}
outputs:
  default: {output}
dead_letter: {{ topic: {dlq} }}
{extra}"#,
        brokers = brokers(),
    )
}

fn dead_letters(dlq: &str) -> Vec<(String, String)> {
    read(dlq)
        .into_iter()
        .map(|r| (r.value.unwrap(), r.headers["sluice.error"].clone()))
        .collect()
}

#[test]
fn rows_land_in_the_table_and_refused_records_are_dead_lettered_with_the_reason() {
    let pg = postgres();
    let table = unique_table("events");
    pg.psql(&format!(
        "CREATE TABLE {table} (id bigint NOT NULL, kind varchar(8) NOT NULL, \
         amount double precision CHECK (amount >= 0), at timestamptz, \
         inserted_at timestamptz NOT NULL DEFAULT now())"
    ))
    .unwrap();
    let (input, dlq) = (unique("pg-in"), unique("pg-dlq"));
    create_topics(&[&input, &dlq], 1);
    let records = [
        r#"{"id": 1, "kind": "click", "amount": 2.5, "at": "2024-05-01T12:00:00.250Z"}"#,
        r#"{"id": 2, "kind": "view", "extra": [1, 2]}"#,
        r#"{"id": "3", "kind": "view", "amount": 1}"#,
        r#"{"id": 4, "kind": "click", "amount": -1}"#,
        r#"not json"#,
        r#"{"id": 6, "kind": "purchase-of-a-kind", "amount": 7}"#,
        r#"{"kind": "click"}"#,
        r#"{"id": 8, "kind": "view", "amount": 0, "at": 1714564800000}"#,
    ];
    let pairs: Vec<(&str, &str)> = records.iter().map(|r| ("k", *r)).collect();
    produce(&input, &pairs);
    let yaml = pass_through(
        "pg-out",
        &input,
        &dlq,
        &format!(
            "{{ postgres: {{ url: \"{}\", table: {table} }} }}",
            pg.url()
        ),
        "",
    );
    let summary = run_until_caught_up(&spec(&yaml));
    assert_eq!(summary.records_in, 8);
    assert_eq!(summary.dead_lettered, 5);
    let stats = &summary.postgres["default"];
    assert_eq!((stats.rows_written, stats.rows_refused), (3, 2));

    assert_eq!(
        pg.psql(&format!(
            "SELECT id, kind, amount, (extract(epoch FROM at) * 1000)::bigint FROM {table} ORDER BY id"
        ))
        .unwrap(),
        "1|click|2.5|1714564800250\n2|view||\n8|view|0|1714564800000\n"
    );
    let not_json = serde_json::from_str::<Value>(records[4]).unwrap_err();
    let expected: Vec<(String, String)> = [
        (
            records[2],
            r#"postgres: field "id": expected int64, got string"#.to_owned(),
        ),
        (
            records[3],
            format!(
                "postgres: new row for relation \"{table}\" violates check constraint \
                 \"{table}_amount_check\" (Failing row contains (4, click, -1, null, "
            ),
        ),
        (records[4], format!("postgres: not JSON: {not_json}")),
        (
            records[5],
            "postgres: value too long for type character varying(8)".to_owned(),
        ),
        (
            records[6],
            r#"postgres: field "id": missing (the column is not nullable)"#.to_owned(),
        ),
    ]
    .into_iter()
    .map(|(v, e)| (v.to_owned(), e))
    .collect();
    let mut dead = dead_letters(&dlq);
    // The database's detail ends with the row's `inserted_at` (now()).
    let detail = &mut dead[1].1;
    assert!(detail.ends_with(").)"), "{detail}");
    detail.truncate(expected[1].1.len());
    assert_eq!(dead, expected);
}

#[test]
fn upserts_keep_the_last_record_of_each_key() {
    let pg = postgres();
    let table = unique_table("latest");
    pg.psql(&format!(
        "CREATE TABLE {table} (k text, day int, v bigint NOT NULL, PRIMARY KEY (k, day))"
    ))
    .unwrap();
    let (input, dlq) = (unique("pg-up-in"), unique("pg-up-dlq"));
    create_topics(&[&input, &dlq], 1);
    let output = format!(
        "{{ postgres: {{ url: \"{}\", table: {table}, mode: upsert, key: [k, day] }} }}",
        pg.url()
    );
    let yaml = pass_through("pg-upsert", &input, &dlq, &output, "");
    produce(
        &input,
        &[
            ("a", r#"{"k": "a", "day": 1, "v": 1}"#),
            ("b", r#"{"k": "b", "day": 1, "v": 2}"#),
            ("a", r#"{"k": "a", "day": 1, "v": 3}"#),
            ("a", r#"{"k": "a", "day": 2, "v": 4}"#),
        ],
    );
    run_until_caught_up(&spec(&yaml));
    produce(&input, &[("b", r#"{"k": "b", "day": 1, "v": 5}"#)]);
    run_until_caught_up(&spec(&yaml));
    assert_eq!(
        pg.psql(&format!("SELECT k, day, v FROM {table} ORDER BY k, day"))
            .unwrap(),
        "a|1|3\na|2|4\nb|1|5\n"
    );
    assert!(read(&dlq).is_empty());
}

#[test]
fn a_missing_table_is_created_from_the_schema_and_a_mismatched_one_refused() {
    let pg = postgres();
    let table = unique_table("created");
    let (input, dlq) = (unique("pg-new-in"), unique("pg-new-dlq"));
    create_topics(&[&input, &dlq], 1);
    let output = format!(
        "{{ postgres: {{ url: \"{}\", table: {table}, mode: upsert, key: [name], schema: [\
         {{ name: name, type: string }}, {{ name: total, type: float64, nullable: true }}, \
         {{ name: at, type: timestamp_ms, nullable: true }}] }} }}",
        pg.url()
    );
    let yaml = pass_through("pg-create", &input, &dlq, &output, "");
    produce(&input, &[("x", r#"{"name": "x", "total": 1.25}"#)]);
    run_until_caught_up(&spec(&yaml));
    assert_eq!(
        pg.psql(&format!(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
             WHERE table_name = '{table}' ORDER BY ordinal_position"
        ))
        .unwrap(),
        "name|text|NO\ntotal|double precision|YES\nat|timestamp with time zone|YES\n"
    );
    assert_eq!(
        pg.psql(&format!("SELECT name, total FROM {table}"))
            .unwrap(),
        "x|1.25\n"
    );

    // The same output against a table whose column has another type.
    let other = unique_table("mismatched");
    pg.psql(&format!(
        "CREATE TABLE {other} (name text PRIMARY KEY, total text, at timestamptz)"
    ))
    .unwrap();
    let yaml = yaml.replace(&table, &other);
    let err = sluice::pipeline::run(
        &spec(&yaml),
        sluice::pipeline::RunOptions {
            until_caught_up: true,
        },
        &std::sync::atomic::AtomicBool::new(false),
    )
    .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "worker 0: task 0: outputs.default.postgres: schema[1]: column \"total\" is text in the table; a float64 \
         field cannot be written to it"
    );
}

#[test]
fn validate_reports_the_table_and_an_unreachable_database() {
    let pg = postgres();
    let table = unique_table("validated");
    pg.psql(&format!(
        "CREATE TABLE {table} (id bigserial PRIMARY KEY, kind text NOT NULL, n int)"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |url: &str| {
        let yaml = pass_through(
            "pg-validate",
            "in",
            "dlq",
            &format!("{{ postgres: {{ url: \"{url}\", table: {table} }} }}"),
            "",
        );
        let path = dir.path().join("pipeline.yaml");
        std::fs::write(&path, yaml).unwrap();
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap()
    };
    let ok = write(&pg.url());
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "  output default: writes \"public\".\"{table}\" (kind string, n int64)\n"
        )),
        "{stdout}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let down = write(&format!("postgres://sluice@127.0.0.1:{port}/postgres"));
    assert!(!down.status.success());
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(
        stderr.contains("outputs.default.postgres: cannot connect: error connecting to server"),
        "{stderr}"
    );
}

/// The sample stream's events, without heartbeats, as the table keeps
/// them: event id, and whether the row is there once.
fn expected_event_ids(o: &SampleOptions) -> Vec<String> {
    let mut ids: Vec<String> = (0..o.count)
        .map(|i| {
            let v: Value = serde_json::from_slice(&sample_record(o, i).1).unwrap();
            v
        })
        .filter(|v| v["event_type"] != "heartbeat")
        .map(|v| v["event_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// The server goes down in the middle of an exactly-once run, while
/// records keep arriving: the pipeline retries, reconnects once the server
/// is back and goes on; every event is in the table once.
#[test]
fn a_database_restart_mid_run_loses_and_duplicates_nothing() {
    let mut pg = Postgres::start().unwrap();
    let table = unique_table("events");
    pg.psql(&format!(
        "CREATE TABLE {table} (event_id text NOT NULL, user_id text NOT NULL, \
         event_type text NOT NULL, timestamp timestamptz NOT NULL, amount numeric(10, 2))"
    ))
    .unwrap();
    let (input, dlq) = (unique("pg-rs-in"), unique("pg-rs-dlq"));
    create_topics(&[&input, &dlq], 4);
    let o = SampleOptions {
        count: 100_000,
        users: 100,
        ..SampleOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"name: pg-restart
kafka: {{ brokers: "{brokers}" }}
source: {{ topics: [{input}] }}
batch: {{ max_records: 2000, max_wait: 20ms }}
transforms:
  - module: {filter}
outputs:
  default: {{ postgres: {{ url: "{url}", table: {table} }} }}
dead_letter: {{ topic: {dlq} }}
checkpoint: {{ dir: checkpoints, interval: 200ms }}
delivery: exactly-once
"#,
        brokers = brokers(),
        filter = guest("filter-heartbeats").display(),
        url = pg.url(),
    );
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).unwrap();
    // A long-running `sluice run`: it is still there when the server goes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(dir.path().join("pipeline.yaml"))
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let half = o.count / 2;
    kafka_tools::produce_sample_range(brokers(), &input, &o, 0..half).unwrap();
    let count = |pg: &Postgres| -> u64 {
        pg.psql(&format!("SELECT count(*) FROM {table}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let want = expected_event_ids(&o);
    let first_half = expected_event_ids(&SampleOptions { count: half, ..o }).len() as u64;
    let wait_for = |pg: &Postgres, child: &mut std::process::Child, n: u64| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while count(pg) < n {
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let mut stderr = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
                    .unwrap();
                panic!(
                    "the table did not reach {n} rows (has {}):\n{stderr}",
                    count(pg)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(&pg, &mut child, first_half);
    pg.stop();
    // The second half arrives while the server is down.
    kafka_tools::produce_sample_range(brokers(), &input, &o, half..o.count).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    pg.launch().unwrap();
    wait_for(&pg, &mut child, want.len() as u64);
    // Anything written twice would come now.
    std::thread::sleep(Duration::from_secs(1));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PostgreSQL unreachable; retrying"),
        "{stderr}"
    );
    let mut got: Vec<String> = pg
        .psql(&format!("SELECT event_id FROM {table}"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    assert_eq!(got.len(), want.len(), "rows in the table");
    assert!(
        got == want,
        "the table's event ids differ from the stream's"
    );
    assert!(read(&dlq).is_empty());
}

/// The crash test's window pipeline (see `crash.rs`) writing its results
/// to Kafka, Parquet, a PostgreSQL table and a Delta table at once, killed
/// with SIGKILL at random moments 20 times: each table holds exactly the
/// results of a run never killed, as do the topic and the files.
#[test]
fn kill_9_at_random_moments_with_postgres_and_delta_outputs_loses_and_duplicates_nothing() {
    use crate::crash::{Fixture, Rng, Shape, as_rows, assert_same, reference_of};
    const CHUNKS: u64 = 20;
    const KILLS: usize = 20;
    let pg = postgres();
    let table = unique_table("windows");
    let o = SampleOptions {
        count: 100_000,
        users: 500,
        ..SampleOptions::default()
    };
    let mut rng = Rng::new();
    let f = Fixture::shaped(brokers(), "pg-crash", "100ms", Shape::EventTypes);
    f.with_postgres(&pg.url(), &table);
    let lake = tempfile::tempdir().unwrap();
    f.with_delta(&lake.path().join("windows"));
    let chunk = o.count / CHUNKS;
    let (mut kills, mut runs) = (0, 0);
    while kills < KILLS {
        if runs < CHUNKS {
            f.produce(&o, runs * chunk..(runs + 1) * chunk);
        }
        runs += 1;
        assert!(runs < 200, "could not kill the host {KILLS} times");
        let mut child = f.spawn_run(None, true);
        std::thread::sleep(Duration::from_millis(50 + rng.below(600)));
        match child.try_wait().unwrap() {
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
            Some(status) => {
                let mut stderr = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
                    .unwrap();
                assert!(status.success(), "sluice run failed: {status}\n{stderr}");
            }
        }
    }
    for n in runs..CHUNKS {
        f.produce(&o, n * chunk..(n + 1) * chunk);
    }
    f.run_to_completion();

    let got = f.outputs();
    let want = reference_of(&o, Shape::EventTypes);
    assert!(!want.results.is_empty());
    assert_same(&got.results, &want.results, "window results (Kafka)");
    assert_same(&got.parquet, &want.parquet, "window results (Parquet)");
    assert_same(
        &numbers_as_floats(&pg.rows(&table)),
        &numbers_as_floats(&as_rows(&want.results)),
        "window results (PostgreSQL)",
    );
    let delta: Vec<String> = read_delta(&lake.path().join("windows"))
        .rows
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    assert_same(
        &numbers_as_floats(&delta),
        &numbers_as_floats(&as_rows(&want.results)),
        "window results (Delta)",
    );
}

/// JSON rows with every number as a float (PostgreSQL prints a whole
/// `double precision` as `5227`, a JSON writer as `5227.0`), sorted.
fn numbers_as_floats(rows: &[String]) -> Vec<String> {
    let mut rows: Vec<String> = rows
        .iter()
        .map(|r| {
            let mut v: serde_json::Map<String, Value> = serde_json::from_str(r).unwrap();
            for value in v.values_mut() {
                if let Some(x) = value.as_f64() {
                    *value = Value::from(x);
                }
            }
            serde_json::to_string(&v).unwrap()
        })
        .collect();
    rows.sort();
    rows
}

/// The demo's `windows-postgres.yaml` (update-mode window results upserted
/// on window and event type) leaves in its table exactly the final results
/// of the append-mode `windows.yaml` over the same events (for the windows
/// append mode closed).
#[test]
fn the_demos_upserted_windows_equal_the_final_append_results() {
    let pg = postgres();
    let table = unique_table("per_minute");
    let (input, results, dlq) = (
        unique("pg-demo-in"),
        unique("pg-demo-out"),
        unique("pg-demo-dlq"),
    );
    create_topics(&[&input, &results, &dlq], 4);
    let o = SampleOptions {
        count: 5_000,
        users: 50,
        ..SampleOptions::default()
    };
    kafka_tools::produce_sample(brokers(), &input, &o).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let place = DemoPlace {
        input: &input,
        results: &results,
        dlq: &dlq,
        dir: dir.path(),
    };
    let pg_url = pg.url();
    let table_line = format!("table: {table}");
    let to_test_table = [
        ("postgres://sluice@127.0.0.1:5432/postgres", pg_url.as_str()),
        ("table: events_per_minute", table_line.as_str()),
    ];
    let adapt = |file: &str, name: &str| demo_spec(file, name, &place, &to_test_table);
    run_until_caught_up(&adapt("windows-postgres.yaml", "upserted"));
    run_until_caught_up(&adapt("windows.yaml", "appended"));
    let mut want: Vec<String> = read(&results)
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            let start = humantime::parse_rfc3339(v["window_start"].as_str().unwrap()).unwrap();
            let ms = start
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            format!(
                "{ms}|{}|{}|{}",
                v["event_type"].as_str().unwrap(),
                v["count"],
                v["unique_users"]
            )
        })
        .collect();
    want.sort();
    let mut got: Vec<String> = pg
        .psql(&format!(
            "SELECT (extract(epoch FROM window_start) * 1000)::bigint, event_type, count, unique_users FROM {table}"
        ))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    assert!(want.len() > 30, "{} window results", want.len());
    // Update mode also upserted the windows still open at the end, which
    // append mode has not emitted yet.
    let last_closed = want.iter().map(|w| start_of(w)).max().unwrap();
    got.retain(|g| start_of(g) <= last_closed);
    assert_eq!(got, want);
}

fn start_of(row: &str) -> u64 {
    row.split('|').next().unwrap().parse().unwrap()
}
