//! The control plane's modules API with real components, over a real socket:
//! `sluice serve` runs as a process, driven by `sluice::cli::client::Client`
//! and by the `sluice module` commands. (Router-level tests of every
//! rejection that needs no real component are in `host/src/api/tests.rs`.)

use std::fs;
use std::process::Command;

use serde_json::{Value, json};
use sluice::cli::client::Client;

use crate::server::Server;
use sluice_tests::guest;

const TOKEN: &str = "integration-token";

fn wasm(name: &str) -> Vec<u8> {
    let path = guest(name);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The SHA-256 Sluice computes for a component.
fn sha256(bytes: &[u8]) -> String {
    let runtime = sluice::runtime::Runtime::new().unwrap();
    runtime.load("m", bytes).unwrap().sha256().to_owned()
}

/// Status and JSON body of an answer.
fn answer(reply: anyhow::Result<sluice::cli::client::Reply>) -> (u16, Value) {
    let reply = reply.unwrap();
    let json = reply.json().unwrap();
    (reply.status, json)
}

/// Runs `sluice module ...` against `url`: (success, stdout, stderr).
fn sluice_module(url: &str, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("module").args(args).args(["--server", url]);
    match token {
        Some(token) => cmd.env("SLUICE_TOKEN", token),
        None => cmd.env_remove("SLUICE_TOKEN"),
    };
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn components_are_checked_stored_and_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--token", TOKEN]);
    let client = server.client(Some(TOKEN));
    let filter = wasm("filter-heartbeats");

    let (status, v1) = answer(client.push("filter", &filter, &[]));
    assert_eq!(status, 201, "{v1}");
    assert_eq!(
        v1,
        json!({
            "name": "filter",
            "version": 1,
            "sha256": sha256(&filter),
            "size": filter.len(),
            "kind": "transform",
            "exports": ["sluice:transform/transform@0.1.0"],
            "uploaded_at": v1["uploaded_at"],
            "used_by": [],
        })
    );
    // Identical to the latest version: that version, nothing new.
    assert_eq!(
        answer(client.push("filter", &filter, &[])),
        (200, v1.clone())
    );

    let strategy = wasm("strategy-map");
    let (status, v2) = answer(client.push("filter", &strategy, &[]));
    assert_eq!((status, &v2["version"]), (201, &json!(2)));
    // The same bytes as an older version are a new version.
    let (status, v3) = answer(client.push("filter", &filter, &[]));
    assert_eq!(
        (status, &v3["version"], &v3["sha256"]),
        (201, &json!(3), &v1["sha256"])
    );

    let windows = wasm("event-window-agg");
    let (status, agg) = answer(client.push("windows", &windows, &[]));
    assert_eq!(status, 201, "{agg}");
    assert_eq!(agg["kind"], "aggregate");
    assert_eq!(agg["exports"], json!(["sluice:transform/aggregate@0.1.0"]));

    let (status, list) = answer(client.list());
    assert_eq!(status, 200);
    let summary: Vec<(&str, u64, u64, &str)> = list["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["latest_version"].as_u64().unwrap(),
                m["versions"].as_u64().unwrap(),
                m["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("filter", 3, 3, "transform"),
            ("windows", 1, 1, "aggregate")
        ]
    );

    let download = client
        .request("GET", "/v1/modules/filter/2/wasm", None)
        .unwrap();
    assert_eq!(download.status, 200);
    assert!(
        download.body == strategy,
        "the download differs from the upload"
    );

    // Version numbers are never reused.
    let (status, deleted) = answer(client.request("DELETE", "/v1/modules/filter/3", None));
    assert_eq!(
        (status, deleted),
        (200, json!({ "name": "filter", "deleted": [3] }))
    );
    let (status, v4) = answer(client.push("filter", &filter, &[]));
    assert_eq!((status, &v4["version"]), (201, &json!(4)));
    server.stop();
}

#[test]
fn init_runs_with_the_query_config_and_its_failures_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = Client::new(&server.url, None);
    let faulty = wasm("faulty-guest");
    let config = |mode: &str| [("mode".to_owned(), mode.to_owned())];

    let (status, json) = answer(client.push("faulty", &faulty, &[]));
    assert_eq!(
        (status, json),
        (
            422,
            json!({ "error": "the transform rejected its configuration: missing config key `mode`" })
        )
    );
    let (status, json) = answer(client.push("faulty", &faulty, &config("explode")));
    assert_eq!(status, 422);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .starts_with("the transform rejected its configuration: unknown mode `explode`"),
        "{json}"
    );
    let (status, json) = answer(client.push("faulty", &faulty, &config("init-trap")));
    assert_eq!(status, 422);
    let message = json["error"].as_str().unwrap();
    assert!(
        message.starts_with("the transform failed while starting: trap: "),
        "{message}"
    );
    assert!(
        message.contains("init-trap: panicking inside init as configured"),
        "{message}"
    );
    let (status, json) = answer(client.push(
        "faulty",
        &faulty,
        &[
            ("mode".into(), "noop".into()),
            ("trig ger".into(), "a&b=c".into()),
        ],
    ));
    assert_eq!(status, 422);
    assert_eq!(
        json["error"],
        "the transform rejected its configuration: unknown config key `trig ger` (expected `mode` and optionally `trigger`)"
    );

    let (status, json) = answer(client.push("faulty", &faulty, &config("passthrough")));
    assert_eq!((status, &json["version"]), (201, &json!(1)), "{json}");
    server.stop();
}

#[test]
fn an_upload_over_the_limit_is_refused_before_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-upload", "16KiB"]);
    let client = Client::new(&server.url, None);
    let filter = wasm("filter-heartbeats");
    assert!(filter.len() > 16 * 1024);
    let (status, json) = answer(client.push("filter", &filter, &[]));
    assert_eq!(
        (status, json),
        (
            413,
            json!({ "error": "the module is larger than this server's upload limit of 16384 bytes (sluice serve --max-upload)" })
        )
    );
    server.stop();
}

#[test]
fn the_cli_pushes_lists_and_removes_and_a_restart_keeps_the_modules() {
    let dir = tempfile::tempdir().unwrap();
    let file = guest("filter-heartbeats");
    let file = file.to_str().unwrap();
    let server = Server::start(dir.path(), &["--token", TOKEN]);

    let (ok, _, stderr) = sluice_module(&server.url, None, &["push", "filter-heartbeats", file]);
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "error: this server needs a token for changes: send `Authorization: Bearer <token>` \
         (the sluice CLI: SLUICE_TOKEN or --token-file)"
    );
    // The client reads the token from a file only its owner may read.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let token_file = token_file.to_str().unwrap();
    let (ok, stdout, stderr) = sluice_module(
        &server.url,
        None,
        &[
            "push",
            "filter-heartbeats",
            file,
            "--token-file",
            token_file,
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("stored filter-heartbeats@1 (transform, "),
        "{stdout}"
    );
    let (ok, stdout, _) = sluice_module(&server.url, None, &["ls"]);
    assert!(ok);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("NAME "), "{stdout}");
    let fields: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        fields[..4],
        ["filter-heartbeats", "1", "1", "transform"],
        "{stdout}"
    );
    server.stop();

    // The data directory brings everything back.
    let server = Server::start(dir.path(), &["--token", TOKEN]);
    let (ok, stdout, _) = sluice_module(&server.url, None, &["ls", "filter-heartbeats"]);
    assert!(ok);
    assert!(
        stdout
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("filter-heartbeats@1 "),
        "{stdout}"
    );
    let download = Client::new(&server.url, None)
        .request("GET", "/v1/modules/filter-heartbeats/1/wasm", None)
        .unwrap();
    assert!(download.body == fs::read(file).unwrap());

    let (ok, stdout, stderr) =
        sluice_module(&server.url, Some(TOKEN), &["rm", "filter-heartbeats@1"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "deleted filter-heartbeats@1");
    let (ok, stdout, _) = sluice_module(&server.url, None, &["ls"]);
    assert_eq!((ok, stdout.trim()), (true, "no modules"));
    let (ok, _, stderr) = sluice_module(&server.url, Some(TOKEN), &["rm", "filter-heartbeats"]);
    assert_eq!(
        (ok, stderr.trim()),
        (false, "error: no module named `filter-heartbeats`")
    );
    let (ok, _, stderr) = sluice_module(&server.url, Some(TOKEN), &["rm", "Bad/Name"]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: invalid module name `Bad/Name`"),
        "{stderr}"
    );
    server.stop();
}

#[test]
fn serve_refuses_an_exposed_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .arg("--data")
        .arg(dir.path())
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("SLUICE_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: refusing to listen on 0.0.0.0:0 without a token"),
        "{stderr}"
    );

    let (ok, _, stderr) = sluice_module("http://127.0.0.1:1", None, &["ls"]);
    assert!(!ok);
    assert!(
        stderr.starts_with(
            "error: cannot reach the Sluice server at http://127.0.0.1:1 (is `sluice serve` running?)"
        ),
        "{stderr}"
    );
}
