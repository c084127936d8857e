//! Pipelines run by `sluice serve`, through the real broker: created from a
//! spec naming a stored module, stopped, started, and brought back by a
//! restarted server. (Router-level tests of every route and rejection are
//! in `host/src/api/pipeline_tests.rs`.)

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::cli::client::Client;

use crate::server::Server;
use sluice_tests::kafka_tools::{SampleOptions, sample_record};
use sluice_tests::*;

pub(crate) const TOKEN: &str = "serve-token";

/// Status and JSON body of `method path`.
pub(crate) fn call(client: &Client, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
    let reply = client.request(method, path, body).unwrap();
    let json = reply.json().unwrap_or(Value::Null);
    (reply.status, json)
}

/// The sample stream's `(key, value)` pairs and the values that are not
/// heartbeats, sorted.
pub(crate) fn sample(from: u64, count: u64) -> (Vec<(String, String)>, Vec<String>) {
    let o = SampleOptions {
        count: from + count,
        ..SampleOptions::default()
    };
    let events: Vec<(String, String)> = (from..from + count)
        .map(|n| {
            let (k, v) = sample_record(&o, n);
            (k, String::from_utf8(v).unwrap())
        })
        .collect();
    let mut kept: Vec<String> = events
        .iter()
        .filter(|(_, v)| {
            let event: Value = serde_json::from_str(v).unwrap();
            event["event_type"] != "heartbeat"
        })
        .map(|(_, v)| v.clone())
        .collect();
    kept.sort();
    (events, kept)
}

pub(crate) fn produce_pairs(topic: &str, events: &[(String, String)]) {
    let pairs: Vec<(&str, &str)> = events
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    produce(topic, &pairs);
}

/// A `sluice serve` with the token [`TOKEN`], `filter-heartbeats` pushed as
/// version 1, and a pipeline running it from `input` to `clean` (dead
/// letters to `dlq`), three new topics of `partitions` partitions each.
pub(crate) struct Served {
    pub server: Server,
    pub client: Client,
    pub name: String,
    pub input: String,
    pub clean: String,
    pub dlq: String,
    /// The module version's metadata, as the upload answered it.
    pub module: Value,
}

/// Starts [`Served`] in `dir`; names start with `prefix`.
pub(crate) fn serve_filter(dir: &Path, prefix: &str, partitions: i32) -> Served {
    serve_filter_with(dir, prefix, partitions, Some(TOKEN))
}

/// [`serve_filter`] with the server's token `token` (`None`: none).
pub(crate) fn serve_filter_with(
    dir: &Path,
    prefix: &str,
    partitions: i32,
    token: Option<&str>,
) -> Served {
    serve_filter_at(dir, prefix, partitions, token, 1)
}

/// [`serve_filter_with`] at `parallelism` (other than 1: as tasks).
pub(crate) fn serve_filter_at(
    dir: &Path,
    prefix: &str,
    partitions: i32,
    token: Option<&str>,
    parallelism: usize,
) -> Served {
    let (input, clean, dlq) = (
        unique(&format!("{prefix}-in")),
        unique(&format!("{prefix}-clean")),
        unique(&format!("{prefix}-dlq")),
    );
    create_topics(&[&input, &clean, &dlq], partitions);
    let (server, client, module) = serve_with_filter_module(dir, token);
    let name = unique(prefix);
    let spec = format!(
        "name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\nsource: {{ topics: [{input}] }}\n\
         batch: {{ max_records: 64, max_wait: 20ms }}\n\
         transforms:\n  - module: filter-heartbeats@1\n\
         outputs:\n  default: {{ topic: {clean} }}\ndead_letter: {{ topic: {dlq} }}\n\
         parallelism: {parallelism}\n",
        brokers = brokers(),
    );
    let (status, doc) = call(&client, "POST", "/v1/pipelines", Some(spec.as_bytes()));
    assert_eq!(status, 201, "{doc}");
    assert_eq!(
        doc["modules"],
        json!([{
            "step": "filter-heartbeats",
            "module": "filter-heartbeats",
            "version": 1,
            "sha256": module["sha256"],
        }])
    );
    wait_for_status(&server, &name, "running");
    Served {
        server,
        client,
        name,
        input,
        clean,
        dlq,
        module,
    }
}

/// A `sluice serve` in `dir` with the token `token` (if any) and
/// `filter-heartbeats` pushed as version 1 (the upload's answer).
fn serve_with_filter_module(dir: &Path, token: Option<&str>) -> (Server, Client, Value) {
    let server = match token {
        Some(token) => Server::start(dir, &["--token", token]),
        None => Server::start(dir, &[]),
    };
    let client = server.client(token);
    let filter = fs::read(guest("filter-heartbeats")).unwrap();
    let (status, module) = call(
        &client,
        "POST",
        "/v1/modules/filter-heartbeats",
        Some(&filter),
    );
    assert_eq!(status, 201, "{module}");
    (server, client, module)
}

/// Waits until `topic` holds as many records as `expected`, then compares.
pub(crate) fn wait_for_records(server: &Server, topic: &str, expected: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = sorted_values(&read(topic));
        if got.len() >= expected.len() {
            assert_eq!(got, expected);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} holds {} of {} records:\n{}",
            got.len(),
            expected.len(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn wait_for_status(server: &Server, name: &str, status: &str) -> Value {
    wait_for_doc(server, name, status, |doc| doc["status"] == status)
}

/// Polls `GET /v1/pipelines/{name}` until `done` holds for the document.
pub(crate) fn wait_for_doc(
    server: &Server,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, doc) = call(
            &server.client(Some(TOKEN)),
            "GET",
            &format!("/v1/pipelines/{name}"),
            None,
        );
        assert_eq!(code, 200, "{doc}");
        if done(&doc) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}: {doc}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_pipeline_runs_stops_starts_and_survives_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Served {
        server,
        client,
        name,
        input,
        clean,
        dlq,
        module: _,
    } = serve_filter(dir.path(), "serve", 3);
    let (first, mut expected) = sample(0, 300);
    let (second, expected_second) = sample(300, 200);
    assert!(expected.len() < 280, "the sample must contain heartbeats");
    produce_pairs(&input, &first);

    wait_for_records(&server, &clean, &expected);
    let doc = wait_for_status(&server, &name, "running");
    assert!(doc["error"].is_null(), "{doc}");
    let (status, _) = call(&client, "DELETE", "/v1/modules/filter-heartbeats", None);
    assert_eq!(status, 409, "the module is in use");

    let (status, doc) = call(&client, "POST", &format!("/v1/pipelines/{name}/stop"), None);
    assert_eq!(status, 200, "{doc}");
    assert_eq!(
        (&doc["status"], &doc["desired"]),
        (&json!("stopped"), &json!("stopped"))
    );
    assert_eq!(doc["last_run"]["records_in"], 300, "{doc}");
    assert_eq!(doc["last_run"]["dropped"], 300 - expected.len(), "{doc}");

    let (status, doc) = call(
        &client,
        "POST",
        &format!("/v1/pipelines/{name}/start"),
        None,
    );
    assert_eq!(status, 200, "{doc}");
    wait_for_status(&server, &name, "running");

    // A restart brings the running pipeline back, and it goes on where it was.
    server.stop();
    let server = Server::start(dir.path(), &["--token", TOKEN]);
    let doc = wait_for_status(&server, &name, "running");
    assert_eq!(doc["modules"][0]["version"], 1);
    produce_pairs(&input, &second);
    expected.extend(expected_second);
    expected.sort();
    produce(&input, &[("u1", "{broken")]);
    wait_for_records(&server, &clean, &expected);
    wait_for_records(&server, &dlq, &["{broken".to_owned()]);
    let dead = read(&dlq);
    assert_eq!(
        (
            dead[0].headers["sluice.pipeline"].as_str(),
            dead[0].headers["sluice.step"].as_str(),
            dead[0].headers["sluice.module"].as_str(),
        ),
        (name.as_str(), "filter-heartbeats", "filter-heartbeats"),
        "{:?}",
        dead[0].headers
    );

    let client = server.client(Some(TOKEN));
    let metrics = client.request("GET", "/metrics", None).unwrap();
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.contains(&format!("sluice_pipeline_up{{pipeline=\"{name}\"}} 1\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "sluice_pipeline_module_version{{pipeline=\"{name}\",step=\"filter-heartbeats\",\
             module=\"filter-heartbeats\",version=\"1\"}} 1\n"
        )),
        "{text}"
    );

    let (status, doc) = call(&client, "DELETE", &format!("/v1/pipelines/{name}"), None);
    assert_eq!((status, &doc["status"]), (200, &json!("stopped")), "{doc}");
    let (status, _) = call(&client, "DELETE", "/v1/modules/filter-heartbeats", None);
    assert_eq!(status, 200, "no pipeline uses it any more");
    server.stop();
}

#[test]
fn a_failed_pipeline_is_restarted_and_delivers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (input, clean, dlq) = (
        unique("restart-in"),
        unique("restart-clean"),
        unique("restart-dlq"),
    );
    create_topics(&[&input, &clean, &dlq], 2);
    let (server, client, _) = serve_with_filter_module(dir.path(), Some(TOKEN));

    // A file where the checkpoint directory goes: every run fails at its
    // start until the file is gone.
    let name = unique("restart");
    let pipeline_dir = dir.path().join("data/pipelines").join(&name);
    fs::create_dir_all(&pipeline_dir).unwrap();
    let blocker = pipeline_dir.join("ckpt");
    fs::write(&blocker, b"in the way").unwrap();

    let (events, expected) = sample(0, 200);
    produce_pairs(&input, &events);
    let spec = format!(
        "name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\nsource: {{ topics: [{input}] }}\n\
         batch: {{ max_records: 64, max_wait: 20ms }}\n\
         transforms:\n  - module: filter-heartbeats@1\n\
         outputs:\n  default: {{ topic: {clean} }}\ndead_letter: {{ topic: {dlq} }}\n\
         checkpoint: {{ dir: ckpt, interval: 1s }}\n",
        brokers = brokers(),
    );
    let (status, doc) = call(&client, "POST", "/v1/pipelines", Some(spec.as_bytes()));
    assert_eq!(status, 201, "{doc}");
    let failed = wait_for_status(&server, &name, "failed");
    let error = failed["error"].as_str().unwrap().to_owned();
    assert!(error.contains("create checkpoint directory"), "{failed}");
    assert!(failed["next_restart_at"].is_string(), "{failed}");

    fs::remove_file(&blocker).unwrap();
    let running = wait_for_doc(&server, &name, "restarted", |doc| {
        doc["status"] == "running" && doc["restarts"].as_u64() >= Some(1)
    });
    wait_for_records(&server, &clean, &expected);
    assert!(read(&dlq).is_empty());

    // The outputs can be read before the batch's progress is published.
    let doc = wait_for_doc(&server, &name, "done with the input", |doc| {
        doc["progress"]["totals"]["records_in"] == 200
    });
    assert_eq!(
        (&doc["status"], &doc["restarts"], &doc["next_restart_at"]),
        (&json!("running"), &running["restarts"], &Value::Null),
        "{doc}"
    );
    assert_eq!(doc["error"], error.as_str(), "the restart keeps the reason");
    let metrics = client.request("GET", "/metrics", None).unwrap();
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.contains(&format!(
            "sluice_pipeline_restarts_total{{pipeline=\"{name}\"}} {}\n",
            running["restarts"]
        )),
        "{text}"
    );
    server.stop();
}
