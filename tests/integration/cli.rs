//! The `sluice` commands as a user runs them: `sluice validate` (clear
//! errors naming the field, no broker needed), and `sluice pipeline`
//! driving a pipeline of a `sluice serve` through the broker.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::*;

use crate::serve::{TOKEN, call, produce_pairs, sample};
use crate::server::Server;

/// Writes `yaml` to a spec file and runs `sluice validate` on it.
fn validate(yaml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn spec_with(transform: &str) -> String {
    format!(
        "name: v\nkafka: {{ brokers: \"127.0.0.1:1\" }}\nsource: {{ topics: [in] }}\ntransforms:\n{transform}\n\
         outputs: {{ default: {{ topic: out }} }}\ndead_letter: {{ topic: dlq }}\n"
    )
}

#[test]
fn a_valid_spec_is_reported_with_its_steps() {
    let (ok, stdout, stderr) = validate(&spec_with(&format!(
        "  - module: {}",
        guest("strategy-map").display()
    )));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("pipeline `v` is valid"), "{stdout}");
    assert!(
        stdout.contains("step strategy-map (transform): "),
        "{stdout}"
    );
    let cores = std::thread::available_parallelism().unwrap();
    assert!(
        stdout.ends_with(&format!(
            "  runs as tasks, one per source partition number, on at most {cores} workers (auto: the \
             cores this process may use)\n"
        )),
        "{stdout}"
    );
}

#[test]
fn errors_name_the_field() {
    let module = guest("strategy-map");
    let cases = [
        (
            format!(
                "  - module: {}\n    limits: {{ deadline: 3 parsecs }}",
                module.display()
            ),
            "transforms[0].limits.deadline: ",
        ),
        (
            format!("  - modul: {}", module.display()),
            "transforms[0].modul: unknown field `modul`, expected one of `module`",
        ),
        (
            "  - module: /nonexistent/x.wasm".to_owned(),
            "transforms[0].module: cannot read /nonexistent/x.wasm",
        ),
    ];
    for (transform, expected) in cases {
        let (ok, _, stderr) = validate(&spec_with(&transform));
        assert!(!ok);
        assert!(
            stderr.starts_with(&format!("error: {expected}")),
            "expected `{expected}` in: {stderr}"
        );
    }
}

#[test]
fn kafka_properties_that_break_the_guarantee_are_refused() {
    let module = guest("strategy-map");
    let yaml = spec_with(&format!("  - module: {}", module.display())).replace(
        "brokers: \"127.0.0.1:1\"",
        "brokers: \"127.0.0.1:1\", consumer: { enable.auto.commit: true }",
    );
    let (ok, _, stderr) = validate(&yaml);
    assert!(!ok);
    assert_eq!(
        stderr.trim_end(),
        "error: kafka.consumer.enable.auto.commit: must be false: it would break the pipeline's \
         delivery guarantee (Sluice stores and commits an offset only once the batch's outputs \
         are acknowledged; an automatic one would skip records after a crash)"
    );
}

#[test]
fn modules_are_checked_and_started() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let (ok, _, stderr) = validate(&spec_with(&format!("  - module: {}", core.display())));
    assert!(!ok);
    assert!(
        stderr.contains("this is a core WebAssembly module, but Sluice needs a component"),
        "{stderr}"
    );

    let faulty = guest("faulty-guest");
    let (ok, _, stderr) = validate(&spec_with(&format!(
        "  - module: {}\n    config: {{ mode: bogus }}",
        faulty.display()
    )));
    assert!(!ok);
    assert!(stderr.contains("transforms[0] (faulty-guest): the transform rejected its configuration: unknown mode `bogus`"), "{stderr}");
}

fn aggregate_step(guest_name: &str, aggregate: &str) -> String {
    format!(
        "  - module: {}\n    aggregate: {aggregate}",
        guest(guest_name).display()
    )
}

#[test]
fn aggregate_steps_are_validated() {
    let (ok, stdout, stderr) = validate(&spec_with(&aggregate_step(
        "event-window-agg",
        "{ window: { tumbling: 1m }, watermark: { max_out_of_orderness: 10s } }",
    )));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("step event-window-agg (aggregate): "),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("  runs whole (parallelism 1): one run loop over every partition\n"),
        "an aggregate that does not repartition runs whole by default: {stdout}"
    );
    let (ok, stdout, stderr) = validate(&format!(
        "{}parallelism: 4\n",
        spec_with(&aggregate_step(
            "event-window-agg",
            "{ window: { tumbling: 1m }, watermark: { max_out_of_orderness: 10s } }\n    repartition: true",
        ))
    ));
    assert!(ok, "{stderr}");
    assert!(
        stdout.ends_with(
            "  runs as tasks, one per source partition number, on at most 4 workers; step \
             event-window-agg aggregates through the repartition topic `v-repartition-0` (created \
             with the source's partition count if missing)\n"
        ),
        "{stdout}"
    );

    let cases = [
        (
            aggregate_step(
                "event-window-agg",
                "{ window: { hopping: { size: 1m, slide: 2m } }, watermark: { max_out_of_orderness: 1s } }",
            ),
            "error: transforms[0].aggregate: hopping window slide (2m) is larger than its size (1m)",
        ),
        (
            aggregate_step(
                "event-window-agg",
                "{ window: { tumbling: 1m }, output: append }",
            ),
            "error: transforms[0].aggregate: missing field `watermark`",
        ),
        (
            format!(
                "{}\n  - module: {}",
                aggregate_step(
                    "event-window-agg",
                    "{ window: { tumbling: 1m }, watermark: { max_out_of_orderness: 1s } }"
                ),
                guest("strategy-map").display()
            ),
            "error: transforms[0].aggregate: an aggregate step must be the last transform of the chain",
        ),
        (
            aggregate_step(
                "strategy-map",
                "{ window: { tumbling: 1m }, watermark: { max_out_of_orderness: 1s } }",
            ),
            "error: transforms[0] (strategy-map): this module is a transform, but the step needs an aggregate",
        ),
        (
            format!("  - module: {}", guest("event-window-agg").display()),
            "error: transforms[0] (event-window-agg): this module is an aggregate, but the step needs a transform",
        ),
    ];
    for (transform, expected) in cases {
        let (ok, _, stderr) = validate(&spec_with(&transform));
        assert!(!ok);
        assert!(
            stderr.starts_with(expected),
            "expected `{expected}` in: {stderr}"
        );
    }
}

/// Runs `sluice pipeline ...` against `server`, the token in
/// `$SLUICE_TOKEN`: (exit code, stdout, stderr).
fn sluice_pipeline(server: &Server, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("pipeline")
        .args(args)
        .args(["--server", &server.url])
        .env("SLUICE_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until pipeline `name` has read `rows` records and `topic` holds
/// `expected`; returns its status. (With no more input, its progress stays
/// that of its last batch with records.)
fn wait_caught_up(
    server: &Server,
    name: &str,
    rows: u64,
    topic: &str,
    expected: &[String],
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, doc) = call(
            &server.client(None),
            "GET",
            &format!("/v1/pipelines/{name}"),
            None,
        );
        let progress = &doc["progress"];
        if progress["totals"]["records_in"] == rows
            && sorted_values(&read(topic)).len() >= expected.len()
        {
            assert_eq!(sorted_values(&read(topic)), expected);
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never caught up with {rows} records: {doc}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The ROWS/S cell of `sluice pipeline ls` for status `doc`: its last
/// batch's rate (it stays while no records come).
fn rate(doc: &Value) -> String {
    format!(
        "{:.1}",
        doc["progress"]["input_rows_per_second"].as_f64().unwrap()
    )
}

/// Checks the LAG cell of a pipeline that read everything: none, or not
/// known yet (the client reports end offsets about once a second).
fn assert_caught_up(row: &mut Vec<String>) {
    let lag = row.pop().unwrap();
    assert!(lag == "0" || lag == "-", "lag {lag}");
}

/// The lines of `sluice pipeline ls`, each split into its fields.
fn ls(server: &Server) -> Vec<Vec<String>> {
    let (code, stdout, stderr) = sluice_pipeline(server, &["ls"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.iter().all(|l| l.len() == lines[0].len()),
        "the columns are aligned:\n{stdout}"
    );
    lines
        .iter()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn sluice_pipeline_creates_pauses_resumes_swaps_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let (input, clean, dlq) = (unique("cli-in"), unique("cli-clean"), unique("cli-dlq"));
    create_topics(&[&input, &clean, &dlq], 1);
    let server = Server::start(dir.path(), &["--token", TOKEN]);
    let client = server.client(Some(TOKEN));
    let filter = std::fs::read(guest("filter-heartbeats")).unwrap();
    let faulty = std::fs::read(guest("faulty-guest")).unwrap();
    for reply in [
        client.push("filter-heartbeats", &filter, &[]),
        client.push(
            "filter-heartbeats",
            &with_custom_section(filter.clone(), "sluice-test", b"2"),
            &[],
        ),
        // It needs a `mode`, which the pipeline's step does not give it.
        client.push(
            "faulty-guest",
            &faulty,
            &[("mode".into(), "passthrough".into())],
        ),
    ] {
        let reply = reply.unwrap();
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }

    let name = unique("cli");
    let spec_file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &spec_file,
        format!(
            "name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\nsource: {{ topics: [{input}] }}\n\
             batch: {{ max_records: 64, max_wait: 20ms }}\n\
             transforms:\n  - module: filter-heartbeats@1\n\
             outputs:\n  default: {{ topic: {clean} }}\ndead_letter: {{ topic: {dlq} }}\n",
            brokers = brokers(),
        ),
    )
    .unwrap();
    let run = |args: &[&str]| sluice_pipeline(&server, args);
    let ok = |stdout: &str| (0, stdout.to_owned(), String::new());
    let fails = |stderr: &str| (1, String::new(), format!("error: {stderr}\n"));

    assert_eq!(
        run(&["create", spec_file.to_str().unwrap()]),
        ok(&format!("created {name}: running\n"))
    );
    let (events, mut expected) = sample(0, 200);
    produce_pairs(&input, &events);
    let doc = wait_caught_up(&server, &name, 200, &clean, &expected);
    let step = "filter-heartbeats=filter-heartbeats@1";
    let mut lines = ls(&server);
    assert_caught_up(&mut lines[1]);
    assert_eq!(
        lines,
        [
            vec![
                "NAME", "STATUS", "MODULES", "INPUT", "ROWS", "ROWS/S", "LAG"
            ],
            vec![&name, "running", step, "200", &rate(&doc)],
        ]
    );
    let (code, stdout, stderr) = run(&["show", &name]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("{\n  \"name\": "),
        "pretty-printed: {stdout}"
    );
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["modules"][0]["version"], 1, "{doc}");
    assert_eq!(doc["progress"]["totals"]["records_in"], 200, "{doc}");

    assert_eq!(run(&["pause", &name]), ok(&format!("{name}: paused\n")));
    let doc: Value = serde_json::from_str(&run(&["show", &name]).1).unwrap();
    assert_eq!(
        (&doc["status"], &doc["desired"]),
        (&json!("paused"), &json!("paused"))
    );
    assert_eq!(ls(&server)[1][1], "paused");
    assert_eq!(run(&["resume", &name]), ok(&format!("{name}: running\n")));

    // Idle, the new version is on trial until records come.
    assert_eq!(
        run(&["swap", &name, "filter-heartbeats@2"]),
        ok(
            "trial: step filter-heartbeats: filter-heartbeats@1 -> filter-heartbeats@2 \
            (on trial until its first batch with records)\n"
        )
    );
    let (events, more) = sample(200, 100);
    produce_pairs(&input, &events);
    expected.extend(more);
    expected.sort();
    let doc = wait_caught_up(&server, &name, 300, &clean, &expected);
    let swap = &doc["swaps"][0];
    assert_eq!(
        (&swap["state"], &swap["from_version"], &swap["to_version"]),
        (&json!("live"), &json!(1), &json!(2)),
        "{doc}"
    );
    let mut row = ls(&server).remove(1);
    assert_caught_up(&mut row);
    assert_eq!(
        row,
        [
            &name,
            "running",
            "filter-heartbeats=filter-heartbeats@2",
            "300",
            &rate(&doc)
        ]
    );

    // A module that cannot start with the step's config is rolled back.
    let reason = "the new module cannot start: transforms[0] (filter-heartbeats): \
                  the transform rejected its configuration: missing config key `mode`";
    let (code, stdout, stderr) = run(&["swap", &name, "faulty-guest"]);
    assert_eq!(
        (code, stdout, stderr),
        (
            1,
            format!(
                "rolled-back: step filter-heartbeats: filter-heartbeats@2 -> faulty-guest@1: {reason}\n"
            ),
            format!("error: {reason}\n")
        )
    );
    assert_eq!(
        run(&["swap", &name, "filter-heartbeats@1", "--step", "nope"]),
        fails(&format!(
            "step: pipeline `{name}` has no step `nope`; its steps are `filter-heartbeats`"
        ))
    );
    assert_eq!(
        run(&["swap", &name, "filter-heartbeats@9"]),
        fails("module: module `filter-heartbeats` has no version 9")
    );

    assert_eq!(run(&["stop", &name]), ok(&format!("{name}: stopped\n")));
    assert_eq!(
        run(&["pause", &name]),
        fails(&format!("pipeline `{name}` is not running; start it first"))
    );
    assert_eq!(
        run(&["swap", &name, "filter-heartbeats@1"]),
        ok(&format!(
            "recorded: step filter-heartbeats: filter-heartbeats@2 -> filter-heartbeats@1 \
             (from the next start of pipeline `{name}`)\n"
        ))
    );
    assert_eq!(ls(&server)[1][..3], [name.as_str(), "stopped", step]);
    assert_eq!(run(&["start", &name]), ok(&format!("{name}: running\n")));

    assert_eq!(run(&["rm", &name]), ok(&format!("deleted {name}\n")));
    assert_eq!(
        run(&["show", &name]),
        fails(&format!("no pipeline named `{name}`"))
    );
    assert!(
        run(&["show", "Bad"])
            .2
            .starts_with("error: invalid pipeline name `Bad`: use 1 to 63 lower-case letters"),
    );
    assert_eq!(run(&["ls"]), ok("no pipelines\n"));
    server.stop();
}
