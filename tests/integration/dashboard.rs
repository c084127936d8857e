//! The live dashboard of `sluice serve` (`GET /`) in a real browser: Debian's
//! Chromium, headless, driven by chromedriver over the W3C WebDriver protocol
//! (the small client below), reading the page's DOM while records flow
//! through a pipeline on the real broker. (That the route serves the page is
//! tested at router level in `host/src/api/tests.rs`.)

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::serve::{Served, TOKEN, call, produce_pairs, sample, serve_filter, serve_filter_at};
use crate::server::Server;
use sluice_tests::*;

/// A binary: `$var`, else Debian's (installed by `deploy/local/setup.sh`).
fn binary(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| default.into(), PathBuf::from)
}

/// A headless Chromium in a WebDriver session of its own chromedriver.
/// Dropping it ends the session (Chromium quits) and kills chromedriver.
pub(crate) struct Browser {
    driver: Child,
    agent: ureq::Agent,
    /// `http://127.0.0.1:<port>/session/<id>`, once the session exists.
    session: Option<String>,
    /// The profile (`--user-data-dir`) and chromedriver's log.
    dir: tempfile::TempDir,
}

impl Browser {
    pub(crate) fn start() -> anyhow::Result<Self> {
        let chromium = binary("SLUICE_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = binary("SLUICE_CHROMEDRIVER", "/usr/bin/chromedriver");
        for path in [&chromium, &chromedriver] {
            if !path.is_file() {
                bail!(
                    "{} is not installed: run `deploy/local/setup.sh` \
                     (or set SLUICE_CHROMIUM and SLUICE_CHROMEDRIVER)",
                    path.display()
                );
            }
        }
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", chromedriver.display()))?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        // From here on, an error drops `browser`, which kills chromedriver.
        let mut browser = Self {
            driver,
            agent,
            session: None,
            dir,
        };
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !browser
            .send("GET", &format!("{base}/status"), None)
            .is_ok_and(|status| status["ready"] == true)
        {
            if let Some(exit) = browser.driver.try_wait()? {
                bail!("chromedriver exited with {exit}:\n{}", browser.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "chromedriver is not ready on port {port}:\n{}",
                    browser.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = format!(
            "--user-data-dir={}",
            browser.dir.path().join("profile").display()
        );
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &profile,
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }}});
        let created = browser
            .send("POST", &format!("{base}/session"), Some(capabilities))
            .with_context(|| format!("cannot start {}:\n{}", chromium.display(), browser.log()))?;
        let id = created["sessionId"]
            .as_str()
            .with_context(|| format!("no session id in {created}"))?;
        browser.session = Some(format!("{base}/session/{id}"));
        Ok(browser)
    }

    /// One WebDriver command: its `value`, or the driver's error.
    fn send(&self, method: &str, url: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let request = ureq::http::Request::builder().method(method).uri(url);
        let sent = match body {
            Some(body) => self.agent.run(
                request
                    .header("content-type", "application/json")
                    .body(body.to_string())?,
            ),
            None => self.agent.run(request.body(())?),
        };
        let mut response = sent.with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let mut reply: Value = response
            .body_mut()
            .read_json()
            .with_context(|| format!("{method} {url}: the answer is not JSON"))?;
        let value = reply["value"].take();
        if !status.is_success() {
            bail!(
                "{method} {url}: {status}: {}: {}",
                value["error"],
                value["message"]
            );
        }
        Ok(value)
    }

    fn session(&self) -> &str {
        self.session.as_deref().expect("a session")
    }

    pub(crate) fn goto(&self, url: &str) {
        let session = self.session();
        self.send(
            "POST",
            &format!("{session}/url"),
            Some(json!({ "url": url })),
        )
        .unwrap();
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub(crate) fn run(&self, script: &str, args: Value) -> Value {
        let session = self.session();
        self.send(
            "POST",
            &format!("{session}/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
        .unwrap()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = self.send("DELETE", &session, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// What the dashboard shows of pipeline `arguments[0]`: each cell's own text
/// (`cells`), its second line (`notes`) and hover text (`titles`), the
/// sparkline's points; and the page's poll counter, error notice and rows.
const SNAPSHOT: &str = r#"
    const rows = [...document.querySelectorAll("tr[data-pipeline]")];
    const row = rows.find((r) => r.dataset.pipeline === arguments[0]);
    const notice = document.getElementById("notice");
    const page = {
        updates: Number(document.body.dataset.updates),
        notice: notice.hidden ? null : notice.textContent,
        empty: !document.getElementById("empty").hidden,
        rows: rows.map((r) => r.dataset.pipeline),
        headers: [...document.querySelectorAll("thead th")].map((th) => th.textContent),
        cells: null, notes: {}, titles: {}, points: null,
    };
    if (!row) return page;
    page.cells = {};
    for (const td of row.querySelectorAll("[data-field]")) {
        const field = td.dataset.field;
        page.cells[field] = [...td.childNodes]
            .filter((n) => n.nodeType === Node.TEXT_NODE)
            .map((n) => n.nodeValue)
            .join("");
        page.notes[field] = td.querySelector("small")?.textContent ?? null;
        page.titles[field] = td.title;
    }
    page.points = row.querySelector("polyline")?.getAttribute("points") ?? null;
    return page;
"#;

struct Dashboard<'a> {
    browser: Browser,
    server: &'a Server,
    pipeline: String,
}

impl Dashboard<'_> {
    fn snapshot(&self) -> Value {
        self.browser.run(SNAPSHOT, json!([self.pipeline]))
    }

    /// Polls the DOM until `done` holds (30 s at most).
    fn wait_until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let page = self.snapshot();
            if done(&page) {
                return page;
            }
            if Instant::now() > deadline {
                let api = self
                    .server
                    .client(None)
                    .request("GET", &format!("/v1/pipelines/{}", self.pipeline), None)
                    .map(|reply| String::from_utf8_lossy(&reply.body).into_owned());
                panic!(
                    "the dashboard never showed {what}: {page:#}\nthe API says: {api:?}\n{}",
                    self.server.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the pipeline's `field` cell reads `text`.
    fn wait_for_cell(&self, field: &str, text: &str) -> Value {
        self.wait_until(&format!("{field} = {text:?}"), |page| {
            page["cells"][field] == text
        })
    }
}

/// The sparkline's points, `x,y x,y ...`, as pairs.
fn points(page: &Value) -> Vec<(f64, f64)> {
    let points = page["points"].as_str().unwrap_or_default();
    points
        .split_whitespace()
        .map(|pair| {
            let (x, y) = pair.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

#[test]
fn the_dashboard_follows_a_pipeline_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let Served {
        server,
        client,
        name,
        input,
        clean: _,
        dlq: _,
        module,
    } = serve_filter(dir.path(), "dashboard", 3);

    let dashboard = Dashboard {
        browser: Browser::start().unwrap(),
        server: &server,
        pipeline: name.clone(),
    };
    dashboard.browser.goto(&format!("{}/", server.url));
    let page = dashboard.wait_for_cell("status", "running");
    assert_eq!(
        page["headers"],
        json!([
            "Pipeline",
            "Status",
            "Modules",
            "Rows/s",
            "Input rows",
            "Lag",
            "Watermark",
            "Dead-lettered",
            "Late",
            "Last 60 s"
        ])
    );
    assert_eq!(page["rows"], json!([name]));
    assert_eq!(page["cells"]["modules"], "filter-heartbeats@1");
    assert_eq!(
        page["titles"]["modules"],
        format!(
            "filter-heartbeats: filter-heartbeats@1 sha256:{}",
            module["sha256"].as_str().unwrap()
        )
    );
    assert_eq!(page["notice"], Value::Null);
    // Nothing read yet: no progress (before the first batch) or zero.
    let input_rows = page["cells"]["input_rows"].as_str().unwrap();
    assert!(["—", "0"].contains(&input_rows), "{page:#}");

    // Two rounds of records; the second ends with one that is not JSON,
    // which the guest rejects: dead-lettered.
    let (first, _) = sample(0, 300);
    produce_pairs(&input, &first);
    let page = dashboard.wait_for_cell("input_rows", "300");
    let updates = page["updates"].as_u64().unwrap();
    let (second, _) = sample(300, 200);
    produce_pairs(&input, &second);
    produce(&input, &[("u1", "{broken")]);
    let page = dashboard.wait_until("501 input rows, 1 dead-lettered, no lag", |page| {
        page["cells"]["input_rows"] == "501"
            && page["cells"]["dead_lettered"] == "1"
            && page["cells"]["lag"] == "0"
    });
    assert!(
        page["updates"].as_u64().unwrap() > updates,
        "the poll counter did not move: {page:#}"
    );
    assert_eq!(page["cells"]["late"], "0");
    assert_eq!(page["cells"]["watermark"], "—", "no event time configured");
    // By reason: the guest rejected it.
    assert_eq!(page["titles"]["dead_lettered"], "rejected: 1");
    assert_eq!(page["notes"]["dead_lettered"], "rejected: 1");
    let rate = page["cells"]["rows_per_second"].as_str().unwrap();
    assert!(rate.replace(',', "").parse::<f64>().is_ok(), "{rate:?}");

    // The sparkline: one point per second of the last minute, whose samples
    // add up to the 501 records (all read in the last minute), newest at the
    // right edge (x = 120), scaled so the busiest second reaches the top
    // (y = 1); all inside the 120 x 24 box.
    let page = dashboard.wait_until("501 rows in the sparkline", |page| {
        page["titles"]["sparkline"]
            .as_str()
            .is_some_and(|t| t.starts_with("501 input rows in the last 60 s, peak "))
    });
    let line = points(&page);
    assert_eq!(line.len(), 60, "{line:?}");
    assert!(line.windows(2).all(|w| w[0].0 < w[1].0), "{line:?}");
    assert_eq!((line[0].0, line[59].0), (0.0, 120.0), "{line:?}");
    assert!(line.iter().any(|&(_, y)| y == 1.0), "no peak: {line:?}");
    assert!(
        line.iter().all(|&(_, y)| (1.0..=23.0).contains(&y)),
        "{line:?}"
    );

    // It keeps polling, once a second.
    let updates = page["updates"].as_u64().unwrap();
    dashboard.wait_until("two more polls", |page| {
        page["updates"].as_u64().unwrap() >= updates + 2
    });

    // Stopped: the last run's totals, or nothing if the server keeps none.
    let (status, doc) = call(&client, "POST", &format!("/v1/pipelines/{name}/stop"), None);
    assert_eq!(status, 200, "{doc}");
    let page = dashboard.wait_for_cell("status", "stopped");
    if doc["progress"].is_object() {
        assert_eq!(
            (
                &page["cells"]["input_rows"],
                &page["cells"]["dead_lettered"]
            ),
            (&json!("501"), &json!("1")),
            "{page:#}"
        );
    } else {
        for field in [
            "rows_per_second",
            "input_rows",
            "lag",
            "watermark",
            "dead_lettered",
            "late",
        ] {
            assert_eq!(page["cells"][field], "—", "{field}: {page:#}");
        }
    }
    assert_eq!(page["cells"]["modules"], "filter-heartbeats@1");

    // Deleted: its row goes.
    let (status, doc) = call(&client, "DELETE", &format!("/v1/pipelines/{name}"), None);
    assert_eq!(status, 200, "{doc}");
    dashboard.wait_until("no rows", |page| {
        page["rows"] == json!([]) && page["empty"] == true
    });

    // The server gone: a notice, and the page keeps trying.
    let Dashboard { browser, .. } = dashboard;
    server.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = browser.run(SNAPSHOT, json!([name]));
        if let Some(notice) = page["notice"].as_str() {
            assert!(notice.starts_with("Cannot reach the server"), "{notice}");
            break;
        }
        assert!(Instant::now() < deadline, "no notice: {page:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A pipeline run as tasks: the cells are the pipeline's, and the hover
/// text has a line per task.
#[test]
fn the_dashboard_shows_a_line_per_task() {
    let dir = tempfile::tempdir().unwrap();
    let Served {
        server,
        name,
        input,
        ..
    } = serve_filter_at(dir.path(), "dashboard-tasks", 2, Some(TOKEN), 2);
    let dashboard = Dashboard {
        browser: Browser::start().unwrap(),
        server: &server,
        pipeline: name.clone(),
    };
    dashboard.browser.goto(&format!("{}/", server.url));
    dashboard.wait_for_cell("status", "running");
    let (records, _) = sample(0, 200);
    produce_pairs(&input, &records);
    let page = dashboard.wait_until("200 input rows over 2 tasks, no lag", |page| {
        page["cells"]["input_rows"] == "200" && page["titles"]["lag"] == "task 0: 0\ntask 1: 0"
    });
    assert_eq!(page["notes"]["input_rows"], "2 tasks", "{page:#}");
    let per_task: Vec<u64> = page["titles"]["input_rows"]
        .as_str()
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let rest = line
                .strip_prefix(&format!("task {i}: "))
                .and_then(|r| r.strip_suffix(" records"))
                .unwrap_or_else(|| panic!("{line:?} in {page:#}"));
            rest.parse().unwrap()
        })
        .collect();
    // Each task read its own partition of the input.
    let mut by_partition = vec![0u64; 2];
    for r in read(&input) {
        by_partition[r.partition as usize] += 1;
    }
    assert_eq!(per_task, by_partition);
    assert_eq!(page["titles"]["watermark"], "", "no event time, no lines");
    server.stop();
}
