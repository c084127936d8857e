//! Secrets in a served pipeline's spec: shown redacted by every read, and
//! every file the server writes under its data directory (documents,
//! modules, checkpoints) readable by its user only.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::serve::{TOKEN, call, wait_for_status};
use crate::server::Server;
use sluice_tests::*;

/// Every path under `dir` (itself included) with its permission bits.
fn modes(dir: &Path, found: &mut Vec<(String, u32, bool)>) {
    let meta = fs::symlink_metadata(dir).unwrap();
    found.push((
        dir.display().to_string(),
        meta.permissions().mode() & 0o777,
        meta.is_dir(),
    ));
    if meta.is_dir() {
        for entry in fs::read_dir(dir).unwrap() {
            modes(&entry.unwrap().path(), found);
        }
    }
}

#[test]
fn secrets_are_redacted_in_reads_and_data_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let (input, clean, dlq) = (unique("sec-in"), unique("sec-clean"), unique("sec-dlq"));
    create_topics(&[&input, &clean, &dlq], 1);
    let server = Server::start(dir.path(), &["--token", TOKEN]);
    let client = server.client(Some(TOKEN));
    let faulty = fs::read(guest("faulty-guest")).unwrap();
    let (status, body) = call(
        &client,
        "POST",
        "/v1/modules/faulty?config.mode=passthrough",
        Some(&faulty),
    );
    assert_eq!(status, 201, "{body}");
    let name = unique("secrets");
    let spec = format!(
        "name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\nsource: {{ topics: [{input}] }}\n\
         batch: {{ max_records: 10, max_wait: 20ms }}\ncheckpoint: {{ dir: ckpt, interval: 100ms }}\n\
         transforms:\n  - module: faulty\n    config:\n      mode: {{ secret: passthrough }}\n\
         outputs:\n  default: {{ topic: {clean} }}\ndead_letter: {{ topic: {dlq} }}\n",
        brokers = brokers(),
    );
    let (status, doc) = call(&client, "POST", "/v1/pipelines", Some(spec.as_bytes()));
    assert_eq!(status, 201, "{doc}");
    // Marked: the guest gets `passthrough` (any other mode would not copy
    // records to the output), readers see it redacted.
    let expected = json!({ "mode": { "secret": "<redacted>" } });
    assert_eq!(doc["spec"]["transforms"][0]["config"], expected);
    wait_for_status(&server, &name, "running");
    let (events, _) = crate::serve::sample(0, 20);
    crate::serve::produce_pairs(&input, &events);
    let deadline = Instant::now() + Duration::from_secs(60);
    while read(&clean).is_empty() {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    for path in [
        format!("/v1/pipelines/{name}"),
        "/v1/pipelines".into(),
        "/metrics".into(),
    ] {
        let reply = client.request("GET", &path, None).unwrap();
        let text = String::from_utf8_lossy(&reply.body);
        assert!(!text.contains("passthrough"), "{path}: {text}");
    }
    let (_, doc) = call(&client, "GET", &format!("/v1/pipelines/{name}"), None);
    assert_eq!(doc["spec"]["transforms"][0]["config"], expected);

    let found = loop {
        let mut found = Vec::new();
        modes(&dir.path().join("data"), &mut found);
        if found.iter().any(|(p, _, d)| p.contains("/ckpt/") && !d) {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint written: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let open: Vec<_> = found
        .iter()
        .filter(|(_, mode, is_dir)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .collect();
    assert!(open.is_empty(), "readable by others: {open:?}");
    server.stop();
}
