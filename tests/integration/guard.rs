//! What a web page and a rebinding name cannot do to a token-less
//! `sluice serve`, and how the token is given: a page from another loopback
//! origin, in headless Chromium, tries every request a browser lets it send
//! without the server's consent; raw sockets send foreign `Host` names.
//! (Each refusal's exact answer is tested at router level in
//! `host/src/api/guard_tests.rs`.)

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::dashboard::Browser;
use crate::serve::{Served, call, serve_filter_with};
use crate::server::Server;
use sluice_tests::*;

/// The attacker's page: every request a page may send to another origin
/// without a preflight (no-cors `fetch` with a `text/plain` body, forms
/// posted as `text/plain` into frames), plus the preflighted ones, against
/// each name of the server. `window.report` counts what was tried.
const PAGE: &str = r#"<!doctype html>
<html><body>
<script>
window.report = { fetches: 0, settled: 0, frames: 0, forms: 0, done: false };
const targets = TARGETS;
const name = NAME;
const spec = SPEC;
async function attempt(url, init) {
  window.report.fetches++;
  try { await fetch(url, init); } catch (e) {}
  window.report.settled++;
}
function post(action, field, value) {
  const frame = document.createElement("iframe");
  frame.name = "f" + window.report.forms;
  document.body.appendChild(frame);
  // After the frame's own about:blank: only the post's answer counts.
  frame.onload = () => { window.report.frames++; };
  const form = document.createElement("form");
  form.method = "post";
  form.enctype = "text/plain";
  form.action = action;
  form.target = frame.name;
  const input = document.createElement("input");
  input.name = field;
  input.value = value;
  form.appendChild(input);
  document.body.appendChild(form);
  window.report.forms++;
  form.submit();
}
(async () => {
  const wasm = new Uint8Array(await (await fetch("/evil.wasm")).arrayBuffer());
  const plain = { "Content-Type": "text/plain" };
  for (const t of targets) {
    await attempt(t + "/v1/modules/evil", { mode: "no-cors", method: "POST", body: wasm, headers: plain });
    await attempt(t + "/v1/pipelines", { mode: "no-cors", method: "POST", body: spec, headers: plain });
    await attempt(t + "/v1/pipelines/" + name + "/stop", { mode: "no-cors", method: "POST", body: "", headers: plain });
    await attempt(t + "/v1/pipelines/" + name + "/stop", { mode: "no-cors", method: "POST" });
    await attempt(t + "/v1/pipelines/" + name, { method: "DELETE" });
    await attempt(t + "/v1/modules/evil", { method: "POST", body: wasm, headers: { "Content-Type": "application/wasm" } });
    await attempt(t + "/v1/pipelines", { method: "POST", body: spec, headers: { "Content-Type": "application/json" } });
    // A text/plain form sends `field=value`: a spec whose first key
    // swallows the `=` (`{"x":"=` ... `"}` ends the JSON) would parse.
    post(t + "/v1/pipelines", spec.slice(0, -1) + ', "x":"', '"}');
    post(t + "/v1/pipelines/" + name + "/stop", "a", "b");
  }
  window.report.done = true;
})();
</script>
</body></html>"#;

/// Serves `page` at every path but `/evil.wasm` (`wasm`), from a thread,
/// on a free loopback port of its own: another origin than the server's.
fn serve_page(page: String, wasm: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Skip the headers.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let (content_type, body) = if line.starts_with("GET /evil.wasm ") {
                ("application/wasm", wasm.as_slice())
            } else {
                ("text/html", page.as_bytes())
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    url
}

#[test]
fn a_page_on_another_origin_cannot_change_a_tokenless_server() {
    let dir = tempfile::tempdir().unwrap();
    let Served {
        server,
        client,
        name,
        input,
        clean,
        dlq,
        ..
    } = serve_filter_with(dir.path(), "guard", 1, None);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let spec = json!({
        "name": "evil",
        "kafka": { "brokers": brokers() },
        "source": { "topics": [input] },
        "transforms": [{ "module": "filter-heartbeats@1" }],
        "outputs": { "default": { "topic": clean } },
        "dead_letter": { "topic": dlq },
    });
    let page = PAGE
        .replace(
            "TARGETS",
            &json!([
                format!("http://127.0.0.1:{port}"),
                format!("http://localhost:{port}")
            ])
            .to_string(),
        )
        .replace("NAME", &json!(name).to_string())
        .replace("SPEC", &json!(spec.to_string()).to_string());
    let wasm = fs::read(guest("filter-heartbeats")).unwrap();
    let attacker = serve_page(page, wasm);
    let modules_before = call(&client, "GET", "/v1/modules", None);

    let browser = Browser::start().unwrap();
    browser.goto(&format!("{attacker}/"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report = browser.run("return window.report;", json!([]));
        if report["done"] == true && report["frames"] == report["forms"] {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not finish: {report}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Every attempt was made and answered (or failed) in the browser.
    assert_eq!(
        report,
        json!({ "fetches": 14, "settled": 14, "frames": 4, "forms": 4, "done": true })
    );

    // Nothing changed: the one module, the one pipeline, still running.
    assert_eq!(call(&client, "GET", "/v1/modules", None), modules_before);
    let (status, modules) = call(&client, "GET", "/v1/modules", None);
    assert_eq!(
        (status, modules["modules"].as_array().unwrap().len()),
        (200, 1),
        "{modules}"
    );
    let (status, pipelines) = call(&client, "GET", "/v1/pipelines", None);
    assert_eq!(status, 200);
    let pipelines = pipelines["pipelines"].as_array().unwrap();
    let names: Vec<&Value> = pipelines.iter().map(|p| &p["name"]).collect();
    assert_eq!(names, vec![&json!(name)]);
    assert_eq!(pipelines[0]["status"], "running");
    assert_eq!(pipelines[0]["desired"], "running");
    assert_eq!(pipelines[0]["restarts"], json!(0), "{}", pipelines[0]);
    // The same server still takes the same changes from a non-browser
    // client: the page was refused for where it came from, not for what.
    let (status, doc) = call(&client, "POST", &format!("/v1/pipelines/{name}/stop"), None);
    assert_eq!((status, &doc["status"]), (200, &json!("stopped")), "{doc}");
    server.stop();
}

/// `request` sent as is on a fresh connection; the answer's status line
/// and body.
fn raw(url: &str, request: &str) -> (String, String) {
    let address = url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[test]
fn a_rebinding_name_is_refused_and_allowed_hosts_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--allow-host", "sluice.test"]);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    for host in ["evil.example".to_owned(), format!("evil.example:{port}")] {
        let (status, body) = raw(
            &server.url,
            &format!("GET /v1/pipelines HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, "HTTP/1.1 421 Misdirected Request");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            json!({ "error": format!(
                "Host {host:?} is not a name of this server: it answers to 127.0.0.1, [::1] and \
                 localhost, and to the names given with `sluice serve --allow-host NAME` (a page \
                 that re-points its own name at this server is refused)"
            )})
        );
    }
    for host in [format!("sluice.test:{port}"), format!("localhost:{port}")] {
        let (status, body) = raw(
            &server.url,
            &format!("GET /v1/pipelines HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, "HTTP/1.1 200 OK", "{host}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({ "pipelines": [] })
        );
    }
    server.stop();
}

#[test]
fn the_token_comes_from_a_private_file_or_the_environment_never_argv() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--data"])
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("SLUICE_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // No token on the command line: `ps` would show it to every user.
    let refused = serve(&["--token", "t0ken"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("unexpected argument '--token'"), "{stderr}");
    // A token file others may read is refused, naming the fix.
    let file = dir.path().join("token");
    fs::write(&file, "t0ken\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let path = file.to_str().unwrap();
    let refused = serve(&["--token-file", path]);
    assert!(!refused.status.success());
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr)
            .lines()
            .last()
            .unwrap(),
        format!(
            "error: --token-file {path}: its mode 644 lets other users read or change it; \
             run `chmod 600 {path}`"
        )
    );
    // Mode 600: changes need that token.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let server = Server::start(dir.path(), &["--token-file", path]);
    let (status, _) = call(&server.client(None), "DELETE", "/v1/modules/m", None);
    assert_eq!(status, 401);
    let (status, _) = call(
        &server.client(Some("t0ken")),
        "DELETE",
        "/v1/modules/m",
        None,
    );
    assert_eq!(status, 404);
    server.stop();
}
