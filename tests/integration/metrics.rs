//! `/metrics` counts dead letters by the kind their cause named, never by
//! the words of the reason.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::serve::{TOKEN, call, wait_for_doc};
use crate::server::Server;
use sluice_tests::*;

/// `sluice_dead_letters_total` of `pipeline`, by reason label, as `/metrics`
/// shows it.
fn dead_letter_counts(server: &Server, pipeline: &str) -> Vec<(String, u64)> {
    let reply = server
        .client(Some(TOKEN))
        .request("GET", "/metrics", None)
        .unwrap();
    assert_eq!(reply.status, 200);
    let prefix = format!("sluice_dead_letters_total{{pipeline=\"{pipeline}\",reason=\"");
    String::from_utf8(reply.body)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|rest| {
            let (reason, n) = rest.split_once("\"} ").unwrap();
            (reason.to_owned(), n.parse().unwrap())
        })
        .collect()
}

/// A guest's own dead letter whose reason starts with "trap" is the guest's
/// decision (`rejected`), not a trap; a record behind a final window is
/// `late`.
#[test]
fn dead_letters_are_counted_by_kind_not_by_their_words() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out, dlq) = (unique("kinds-in"), unique("kinds-out"), unique("kinds-dlq"));
    create_topics(&[&input, &out, &dlq], 1);
    let server = Server::start(dir.path(), &["--token", TOKEN]);
    let client = server.client(Some(TOKEN));
    // The faulty guest's init wants a mode: the upload's trial gives one.
    for (path, file) in [
        ("/v1/modules/faulty?config.mode=reject", "faulty-guest"),
        ("/v1/modules/count-sum", "count-sum"),
    ] {
        let wasm = fs::read(guest(file)).unwrap();
        let (status, body) = call(&client, "POST", path, Some(&wasm));
        assert_eq!(status, 201, "{body}");
    }
    let name = unique("kinds");
    let spec = format!(
        "name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\nsource: {{ topics: [{input}] }}\n\
         batch: {{ max_records: 64, max_wait: 20ms }}\n\
         transforms:\n  - name: gate\n    module: faulty@1\n\
         \x20   config: {{ mode: reject, trigger: bad }}\n\
         \x20 - name: count\n    module: count-sum@1\n    aggregate:\n      window: {{ tumbling: 1m }}\n\
         \x20     watermark: {{ max_out_of_orderness: 0s, idle_timeout: 1h }}\n\
         outputs:\n  default: {{ topic: {out} }}\ndead_letter: {{ topic: {dlq} }}\n",
        brokers = brokers(),
    );
    let (status, body) = call(&client, "POST", "/v1/pipelines", Some(spec.as_bytes()));
    assert_eq!(status, 201, "{body}");

    let event = |amount: u32, note: &str| {
        format!(r#"{{"user_id":"u1","amount":{amount},"note":"{note}"}}"#)
    };
    // Window [0, 60 s) gets 1; the guest refuses "bad"; 120 s closes the window.
    produce_raw(
        &input,
        &[
            RawRecord::new(&event(1, "ok"), 1_000, &[]),
            RawRecord::new(&event(2, "bad"), 2_000, &[]),
            RawRecord::new(&event(3, "ok"), 120_000, &[]),
        ],
    );
    wait_for_doc(&server, &name, "its first records", |doc| {
        doc["progress"]["totals"]["records_in"] == 3
    });
    // In a later batch: behind the final window.
    produce_raw(&input, &[RawRecord::new(&event(4, "ok"), 30_000, &[])]);
    let doc = wait_for_doc(&server, &name, "the late record", |doc| {
        doc["progress"]["totals"]["records_in"] == 4
    });
    assert_eq!(
        doc["progress"]["totals"]["dead_letter_reasons"],
        json!({ "rejected": 1, "late": 1 }),
        "{doc}"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let counts = loop {
        let counts = dead_letter_counts(&server, &name);
        if counts.len() >= 2 || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        counts,
        [("rejected".to_owned(), 1), ("late".to_owned(), 1)],
        "no trap: the guest did not trap"
    );
    let mut reasons: Vec<String> = read_raw(&dlq)
        .iter()
        .map(|r| r.header("sluice.error").unwrap())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "late: window [1970-01-01T00:00:00.000Z, 1970-01-01T00:01:00.000Z) was already finalized",
            "trap: refused bad",
        ]
    );
    server.stop();
}

/// A pipeline with a PostgreSQL output in a server: the progress document
/// and `/metrics` count its rows written and refused, and the stored spec
/// shows the URL's password redacted.
#[test]
fn postgres_outputs_are_counted_and_their_password_redacted() {
    let pg = sluice_tests::postgres::postgres();
    let table = sluice_tests::postgres::unique_table("served");
    pg.psql(&format!("CREATE TABLE {table} (id bigint NOT NULL)"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (input, dlq) = (unique("pgm-in"), unique("pgm-dlq"));
    create_topics(&[&input, &dlq], 1);
    let server = Server::start(dir.path(), &["--token", TOKEN]);
    let client = server.client(Some(TOKEN));
    // The test cluster trusts local connections: any password passes.
    let url = format!("postgres://sluice:hunter2@127.0.0.1:{}/postgres", pg.port);
    let name = unique("pgm");
    let spec = format!(
        "name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\nsource: {{ topics: [{input}] }}\n\
         outputs:\n  default: {{ postgres: {{ url: \"{url}\", table: {table} }} }}\n\
         dead_letter: {{ topic: {dlq} }}\n",
        brokers = brokers(),
    );
    let (status, body) = call(&client, "POST", "/v1/pipelines", Some(spec.as_bytes()));
    assert_eq!(status, 201, "{body}");
    produce(
        &input,
        &[
            ("a", r#"{"id": 1}"#),
            ("b", r#"{"id": "x"}"#),
            ("c", r#"{"id": 3}"#),
        ],
    );
    let doc = wait_for_doc(&server, &name, "its rows", |doc| {
        doc["progress"]["totals"]["postgres"]["default"]["rows_written"] == 2
    });
    assert_eq!(
        doc["progress"]["totals"]["dead_letter_reasons"],
        json!({ "postgres": 1 }),
        "{doc}"
    );
    let reply = client.request("GET", "/metrics", None).unwrap();
    let metrics = String::from_utf8(reply.body).unwrap();
    for line in [
        format!("sluice_postgres_rows_written_total{{pipeline=\"{name}\",output=\"default\"}} 2"),
        format!("sluice_dead_letters_total{{pipeline=\"{name}\",reason=\"postgres\"}} 1"),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    let reply = client
        .request("GET", &format!("/v1/pipelines/{name}"), None)
        .unwrap();
    let shown = String::from_utf8(reply.body).unwrap();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("postgres://sluice:<redacted>@127.0.0.1"),
        "{shown}"
    );
}

/// A served pipeline with a Delta output (its table inside the pipeline's
/// directory): the progress document and `/metrics` count its rows, its
/// commits and the table's version, and the record that does not fit.
#[test]
fn delta_outputs_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (input, dlq) = (unique("dlm-in"), unique("dlm-dlq"));
    create_topics(&[&input, &dlq], 1);
    let server = Server::start(dir.path(), &["--token", TOKEN]);
    let client = server.client(Some(TOKEN));
    let name = unique("dlm");
    let spec = format!(
        "name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\nsource: {{ topics: [{input}] }}\n\
         outputs:\n  default: {{ delta: {{ path: lake/t, schema: [{{ name: id, type: int64 }}] }} }}\n\
         dead_letter: {{ topic: {dlq} }}\ncheckpoint: {{ dir: ckpt, interval: 100ms }}\n",
        brokers = brokers(),
    );
    let (status, body) = call(&client, "POST", "/v1/pipelines", Some(spec.as_bytes()));
    assert_eq!(status, 201, "{body}");
    produce(
        &input,
        &[
            ("a", r#"{"id": 1}"#),
            ("b", r#"{"id": "x"}"#),
            ("c", r#"{"id": 3}"#),
        ],
    );
    let doc = wait_for_doc(&server, &name, "its rows", |doc| {
        doc["progress"]["totals"]["delta"]["default"]["rows_written"] == 2
    });
    let delta = &doc["progress"]["totals"]["delta"]["default"];
    assert_eq!(delta["rows_refused"], 1, "{doc}");
    let commits = delta["commits"].as_u64().unwrap();
    assert!(commits >= 1, "{doc}");
    assert_eq!(
        doc["progress"]["totals"]["dead_letter_reasons"],
        json!({ "delta": 1 }),
        "{doc}"
    );
    let reply = client.request("GET", "/metrics", None).unwrap();
    let metrics = String::from_utf8(reply.body).unwrap();
    for line in [
        format!("sluice_delta_rows_written_total{{pipeline=\"{name}\",output=\"default\"}} 2"),
        format!("sluice_delta_rows_refused_total{{pipeline=\"{name}\",output=\"default\"}} 1"),
        format!("sluice_delta_commits_total{{pipeline=\"{name}\",output=\"default\"}} {commits}"),
        // Version 0 created the table; one version per commit since.
        format!("sluice_delta_table_version{{pipeline=\"{name}\",output=\"default\"}} {commits}"),
        format!("sluice_dead_letters_total{{pipeline=\"{name}\",reason=\"delta\"}} 1"),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
}
