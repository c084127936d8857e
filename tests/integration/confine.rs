//! Specs sent to `sluice serve` are confined: their paths stay inside the
//! pipeline's directory (or a directory the operator allowed with
//! `--allow-dir`), their librdkafka properties pass the allow-list, and
//! their errors do not tell whether a path exists on the server. Through a
//! real socket; nothing here needs the broker (every refusal comes before a
//! run starts).

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::serve::call;
use crate::server::Server;
use sluice_tests::*;

/// A spec named `name` with `extra` lines appended (no transforms, so no
/// module is needed).
fn spec(name: &str, kafka: &str, extra: &str) -> String {
    format!(
        "name: {name}\nkafka: {{ brokers: \"127.0.0.1:1\"{kafka} }}\nsource: {{ topics: [in] }}\n\
         outputs:\n  default: {{ topic: out }}\ndead_letter: {{ topic: dlq }}\n{extra}"
    )
}

fn create(server: &Server, body: &str) -> (u16, Value) {
    call(
        &server.client(None),
        "POST",
        "/v1/pipelines",
        Some(body.as_bytes()),
    )
}

/// Every file and directory under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

const OUTSIDE: &str = "must be inside the pipeline's directory (a relative path without `..` \
                       that does not start with `.`) or inside a directory the server allows \
                       (sluice serve --allow-dir)";

#[test]
fn paths_outside_the_pipeline_directory_are_refused_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let data = dir.path().join("data");
    let before = tree(&data);
    let abs = outside.path().join(unique("x"));
    let parquet = "parquet: { path: PQ }";
    let cases = [
        (
            format!("checkpoint: {{ dir: {} }}\n", abs.display()),
            "checkpoint.dir",
        ),
        (
            "checkpoint: { dir: ../../x }\n".to_owned(),
            "checkpoint.dir",
        ),
        (
            "checkpoint: { dir: ../other/ckpt }\n".to_owned(),
            "checkpoint.dir",
        ),
        (
            "checkpoint: { dir: a/../../x }\n".to_owned(),
            "checkpoint.dir",
        ),
        (
            "checkpoint: { dir: .modules/1 }\n".to_owned(),
            "checkpoint.dir",
        ),
        ("checkpoint: { dir: . }\n".to_owned(), "checkpoint.dir"),
        (
            format!(
                "checkpoint: {{ dir: ckpt }}\noutputs:\n  default: {{ topic: out, {} }}\n",
                parquet.replace("PQ", &abs.join("pq").display().to_string())
            ),
            "outputs.default.parquet.path",
        ),
        (
            format!(
                "checkpoint: {{ dir: ckpt }}\noutputs:\n  default: {{ topic: out, {} }}\n",
                parquet.replace("PQ", "../../../pq")
            ),
            "outputs.default.parquet.path",
        ),
        (
            format!(
                "checkpoint: {{ dir: ckpt }}\noutputs:\n  default: {{ delta: {{ path: {} }} }}\n",
                abs.join("lake").display()
            ),
            "outputs.default.delta.path",
        ),
        (
            "checkpoint: { dir: ckpt }\noutputs:\n  default: { delta: { path: ../../../lake } }\n"
                .to_owned(),
            "outputs.default.delta.path",
        ),
    ];
    for (extra, field) in cases {
        // `outputs` given twice would be a YAML error: replace the default.
        let body = if extra.contains("outputs:") {
            spec("p", "", "").replace("outputs:\n  default: { topic: out }\n", "") + &extra
        } else {
            spec("p", "", &extra)
        };
        let (status, doc) = create(&server, &body);
        assert_eq!(status, 400, "{body}: {doc}");
        assert_eq!(doc["error"], format!("{field}: {OUTSIDE}"), "{body}");
    }
    assert!(!abs.exists());
    assert!(!data.join("x").exists());
    assert!(!dir.path().join("x").exists());
    assert!(!dir.path().join("pq").exists());
    assert!(!dir.path().join("lake").exists());
    assert_eq!(tree(&data), before);
    let (_, list) = call(&server.client(None), "GET", "/v1/pipelines", None);
    assert_eq!(list["pipelines"], Value::Array(vec![]));
}

#[test]
fn an_allowed_directory_may_hold_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = tempfile::tempdir().unwrap();
    let allowed_arg = allowed.path().display().to_string();
    let server = Server::start(dir.path(), &["--allow-dir", &allowed_arg]);
    let inside = allowed.path().join("p-ckpt");
    let body = spec(
        "p",
        "",
        &format!("checkpoint: {{ dir: {} }}\n", inside.display()),
    );
    let (status, doc) = create(&server, &body);
    assert_eq!(status, 201, "{doc}");
    // Outside the allowed directory, next to it: refused.
    let sibling = allowed.path().join("../sibling");
    let body = spec(
        "q",
        "",
        &format!("checkpoint: {{ dir: {} }}\n", sibling.display()),
    );
    let (status, doc) = create(&server, &body);
    assert_eq!(status, 400, "{doc}");
    assert_eq!(doc["error"], format!("checkpoint.dir: {OUTSIDE}"));
}

#[test]
fn librdkafka_properties_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    for (kafka, expected) in [
        (
            ", consumer: { plugin.library.paths: /tmp/evil.so }",
            "kafka.consumer.plugin.library.paths: not allowed: it loads native code",
        ),
        (
            ", producer: { acks: 0 }",
            "kafka.producer.acks: must be `all` (or -1): it would break the pipeline's delivery \
             guarantee (a record acknowledged before every in-sync replica has it can be lost)",
        ),
        (
            ", producer: { enable.idempotence: false }",
            "kafka.producer.enable.idempotence: must be true: it would break the pipeline's \
             delivery guarantee (the sinks rely on an idempotent producer; a retried send would \
             duplicate or reorder records)",
        ),
    ] {
        let (status, doc) = create(&server, &spec("p", kafka, ""));
        assert_eq!(status, 400, "{kafka}: {doc}");
        assert_eq!(doc["error"], expected);
    }
}

#[test]
fn module_errors_do_not_tell_whether_a_server_path_exists() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let with_module = |name: &str, module: &str| {
        format!(
            "name: {name}\nkafka: {{ brokers: \"127.0.0.1:1\" }}\nsource: {{ topics: [in] }}\n\
             transforms:\n  - module: {module}\n\
             outputs:\n  default: {{ topic: out }}\ndead_letter: {{ topic: dlq }}\n"
        )
    };
    // A valid name, and one the manager cannot read as a name (the spec
    // parser then describes the problem).
    for name in ["p", "123"] {
        let (missing_status, missing) = create(&server, &with_module(name, "/nonexistent"));
        let (present_status, present) = create(&server, &with_module(name, "/etc/passwd"));
        assert_eq!(missing_status, 400, "{missing}");
        assert_eq!(present_status, 400, "{present}");
        let missing = missing["error"].as_str().unwrap();
        let present = present["error"].as_str().unwrap();
        assert_eq!(
            missing.replace("/nonexistent", "REF"),
            present.replace("/etc/passwd", "REF"),
            "name {name}"
        );
        assert!(!missing.contains("No such file"), "{missing}");
    }
}
