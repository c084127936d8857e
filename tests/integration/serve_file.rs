//! `sluice serve --pipeline FILE`, through the real broker: the server runs
//! the file's pipeline from its start, trusted as `sluice run` trusts its
//! spec (a module file and a checkpoint directory beside the spec, outside
//! the data directory), says when it has started (`GET /readyz`), and comes
//! back with the same data directory and file after a restart, resuming
//! where it stopped. A file with an error stops the server at start.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::serve::{call, produce_pairs, sample, wait_for_records};
use crate::server::Server;
use sluice_tests::*;

/// Polls `GET /readyz` until it answers 200 (it is 503 until the
/// pipelines have started), and returns its body.
fn wait_ready(server: &Server) -> Value {
    let client = server.client(None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = call(&client, "GET", "/readyz", None);
        if status == 200 {
            return body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "never ready: {body}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_spec_file_is_served_ready_and_resumed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (input, clean, dlq) = (unique("file-in"), unique("file-clean"), unique("file-dlq"));
    create_topics(&[&input, &clean, &dlq], 2);
    let name = unique("file");
    // Paths relative to the spec, as `sluice run` reads them: the module
    // beside it, checkpoints in `<dir>/checkpoints` (outside the data
    // directory, `<dir>/data`, where no API spec may write).
    fs::copy(
        guest("filter-heartbeats"),
        dir.path().join("filter_heartbeats.wasm"),
    )
    .unwrap();
    let spec = dir.path().join("pipeline.yaml");
    fs::write(
        &spec,
        format!(
            "name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\nsource: {{ topics: [{input}] }}\n\
             batch: {{ max_records: 64, max_wait: 20ms }}\n\
             transforms:\n  - module: filter_heartbeats.wasm\n\
             outputs:\n  default: {{ topic: {clean} }}\ndead_letter: {{ topic: {dlq} }}\n\
             checkpoint: {{ dir: checkpoints, interval: 200ms }}\nparallelism: 2\n",
            brokers = brokers(),
        ),
    )
    .unwrap();
    let spec_arg = spec.to_str().unwrap();

    let server = Server::start(dir.path(), &["--pipeline", spec_arg]);
    assert_eq!(
        wait_ready(&server),
        json!({ "status": "ready", "not_ready": [] })
    );
    let (status, doc) = call(
        &server.client(None),
        "GET",
        &format!("/v1/pipelines/{name}"),
        None,
    );
    assert_eq!(status, 200, "{doc}");
    assert_eq!(
        (
            &doc["status"],
            &doc["desired"],
            &doc["file"],
            &doc["modules"]
        ),
        (
            &json!("running"),
            &json!("running"),
            &json!(spec_arg),
            &json!([])
        )
    );
    let (events, kept) = sample(0, 300);
    produce_pairs(&input, &events[..200]);
    wait_for_records(&server, &clean, &sample(0, 200).1);
    server.stop();
    assert!(
        dir.path().join("checkpoints/tasks").is_dir(),
        "the tasks checkpoint where the spec says"
    );
    assert!(
        !dir.path()
            .join(format!("data/pipelines/{name}.json"))
            .exists(),
        "the file's pipeline is not stored in the data directory"
    );

    // The same data directory and file: no conflict with what the first
    // server left, ready again, and on from where it stopped.
    let server = Server::start(dir.path(), &["--pipeline", spec_arg]);
    assert_eq!(
        wait_ready(&server),
        json!({ "status": "ready", "not_ready": [] })
    );
    produce_pairs(&input, &events[200..]);
    wait_for_records(&server, &clean, &kept);
    server.stop();
    assert_eq!(sorted_values(&read(&clean)), kept, "nothing twice");
    assert!(read(&dlq).is_empty());
}

#[test]
fn a_spec_file_with_an_error_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("pipeline.yaml");
    let run = |spec: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--pipeline"])
            .arg(spec)
            .env_remove("SLUICE_TOKEN")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!out.status.success(), "started: {stdout}");
        assert_eq!(stdout, "", "it never listened");
        let stderr = String::from_utf8_lossy(&out.stderr);
        stderr.lines().last().unwrap_or_default().to_owned()
    };
    let shown = spec.display();
    assert!(
        run(&spec).starts_with(&format!(
            "error: --pipeline {shown}: spec: cannot read {shown}: "
        )),
        "{}",
        run(&spec)
    );
    let write = |module: &str| {
        let text = format!(
            "name: broken\nkafka: {{ brokers: \"{}\" }}\nsource: {{ topics: [in] }}\n\
             transforms:\n  - module: {module}\noutputs:\n  default: {{ topic: out }}\n\
             dead_letter: {{ topic: dlq }}\n",
            brokers()
        );
        fs::write(&spec, text).unwrap();
    };
    write("missing.wasm");
    let line = run(&spec);
    assert!(
        line.starts_with(&format!(
            "error: --pipeline {shown}: transforms[0].module: "
        )),
        "{line}"
    );
    // A module that does not compile, as `sluice validate` would say.
    fs::write(dir.path().join("bad.wasm"), b"not a component").unwrap();
    write("bad.wasm");
    let line = run(&spec);
    assert!(
        line.starts_with(&format!("error: --pipeline {shown}: transforms[0] (bad): ")),
        "{line}"
    );
}
