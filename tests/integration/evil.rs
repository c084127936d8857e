//! The hostile-guest suite: each attack of `evil-guest` is contained. Only
//! the record that triggers it is dead-lettered, with the exact reason;
//! every other record comes out in order and the pipeline goes on.

use std::time::{Duration, Instant};

use sluice::runtime::{InstantiateError, Labels, Runtime, Transform};
use sluice::spec::Limits;
use sluice_tests::*;

struct Case {
    clean: Vec<String>,
    dlq: Vec<TopicRecord>,
    took: Duration,
}

/// 24 records `e0`..`e23` through evil-guest in `mode`, triggered by `e13`,
/// in batches of 8, under `limits`.
fn run_evil(mode: &str, limits: &str) -> Case {
    run_guest("evil-guest", mode, limits)
}

/// Like [`run_evil`], through the test guest `name`.
fn run_guest(name: &str, mode: &str, limits: &str) -> Case {
    let (input, clean, dlq) = (unique("in"), unique("clean"), unique("dlq"));
    create_topics(&[&input, &clean, &dlq], 1);
    let values: Vec<String> = (0..24).map(|i| format!("e{i}")).collect();
    let pairs: Vec<(&str, &str)> = values.iter().map(|v| ("k", v.as_str())).collect();
    produce(&input, &pairs);
    let yaml = format!(
        "name: evil\nkafka: {{ brokers: \"{}\" }}\nsource: {{ topics: [{input}], group: {} }}\n\
         batch: {{ max_records: 8 }}\ntransforms:\n  - module: {}\n    config: {{ mode: {mode}, trigger: e13 }}\n\
         \x20   limits: {limits}\noutputs: {{ default: {{ topic: {clean} }} }}\ndead_letter: {{ topic: {dlq} }}\n",
        brokers(),
        unique("g"),
        guest(name).display(),
    );
    let started = Instant::now();
    run_until_caught_up(&spec(&yaml));
    let took = started.elapsed();
    Case {
        clean: read(&clean).into_iter().map(|r| r.value.unwrap()).collect(),
        dlq: read(&dlq),
        took,
    }
}

fn all_but_e13() -> Vec<String> {
    (0..24)
        .filter(|&i| i != 13)
        .map(|i| format!("e{i}"))
        .collect()
}

/// Asserts that only `e13` was dead-lettered, with `reason`.
fn assert_only_e13_dead(case: &Case, reason: &str) {
    assert_eq!(case.clean, all_but_e13(), "everything else, in order");
    let dead: Vec<&str> = case
        .dlq
        .iter()
        .map(|r| r.value.as_deref().unwrap())
        .collect();
    assert_eq!(dead, ["e13"]);
    assert_eq!(case.dlq[0].headers["sluice.error"], reason);
}

#[test]
fn a_sleeping_guest_hits_the_deadline() {
    let case = run_evil("sleep", "{ deadline: 200ms }");
    assert_only_e13_dead(&case, "deadline exceeded");
    assert!(case.took < Duration::from_secs(120), "{:?}", case.took);
}

#[test]
fn a_guest_waiting_in_poll_hits_the_deadline() {
    let case = run_evil("poll", "{ deadline: 200ms }");
    assert_only_e13_dead(&case, "deadline exceeded");
}

#[test]
fn a_busy_loop_hits_the_deadline() {
    let case = run_evil("busy-loop", "{ deadline: 200ms }");
    assert_only_e13_dead(&case, "deadline exceeded");
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let case = run_evil("memory-bomb", "{ memory: 24 MiB }");
    assert_only_e13_dead(&case, "memory limit");
}

#[test]
fn an_output_name_bomb_is_invalid_output() {
    let case = run_evil("output-name-bomb", "{}");
    assert_only_e13_dead(
        &case,
        "invalid output: an output name of 65536 bytes, over the limit of 249 bytes",
    );
}

/// Output names that all point at one megabyte of the guest's memory: the
/// host copies at most twice the guest's memory limit (16 MiB here) out of
/// one call, not the hundred megabytes the list spells out.
#[test]
fn output_names_aliasing_one_string_are_refused_within_the_copy_budget() {
    let case = run_guest("alias-bomb", "alias", "{ memory: 16 MiB }");
    assert_only_e13_dead(
        &case,
        "invalid output: the results would take more than 33554432 bytes to copy to the host, \
         twice the guest's memory limit",
    );
}

#[test]
fn a_flat_map_bomb_is_invalid_output() {
    let case = run_evil("huge-output", "{}");
    assert_only_e13_dead(
        &case,
        "invalid output: 200000 output records for one input record, over the limit of 100000",
    );
}

#[test]
fn a_huge_dead_letter_reason_is_truncated() {
    let case = run_evil("reason-bomb", "{}");
    let reason = format!("{}... (1048576 bytes, truncated)", "r".repeat(4096));
    assert_only_e13_dead(&case, &reason);
}

#[test]
fn a_stdout_flood_does_not_stop_the_pipeline() {
    let case = run_evil("stdout-flood", "{}");
    assert_eq!(
        case.clean,
        (0..24).map(|i| format!("e{i}")).collect::<Vec<_>>()
    );
    assert!(case.dlq.is_empty());
}

/// `evil-guest` instantiated in `mode`, under `limits`.
fn instantiate(mode: &str, limits: Limits) -> Result<(), InstantiateError> {
    let rt = Runtime::new().unwrap();
    let module = rt
        .load("evil", &std::fs::read(guest("evil-guest")).unwrap())
        .unwrap();
    let labels = Labels {
        pipeline: "p".into(),
        step: "s".into(),
        module: "evil".into(),
    };
    let config = vec![("mode".to_owned(), mode.to_owned())];
    Transform::new(&module, labels, limits, config).map(drop)
}

#[test]
fn a_sleep_in_init_hits_the_deadline() {
    let started = Instant::now();
    let limits = Limits {
        deadline: Duration::from_millis(200),
        ..Limits::default()
    };
    let err = instantiate("sleep-in-init", limits).unwrap_err();
    assert!(
        matches!(&err, InstantiateError::Trapped(m) if m == "deadline exceeded"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_trap_in_init_refuses_to_start() {
    let err = instantiate("trap-in-init", Limits::default()).unwrap_err();
    assert!(
        matches!(&err, InstantiateError::Trapped(m) if m.starts_with("trap: wasm `unreachable` instruction executed (guest panicked at ") && m.ends_with(": trap-in-init: panicking inside init as configured)")),
        "{err}"
    );
}
