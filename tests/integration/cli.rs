//! `sluice validate`: clear errors naming the field, no broker needed.

use std::process::Command;

use sluice_tests::guest;

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
