//! The Wasm runtime without Kafka: module checks, init, limits.

use sluice::batch::Batch;
use sluice::runtime::{InstantiateError, Labels, ModuleError, Runtime, Transform};
use sluice::spec::Limits;
use sluice_tests::guest;

fn labels() -> Labels {
    Labels {
        pipeline: "test".into(),
        step: "step".into(),
        module: "m".into(),
    }
}

fn config(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn bad_modules_are_rejected_with_a_reason() {
    let rt = Runtime::new().unwrap();
    assert!(matches!(rt.load("x", b"hello"), Err(ModuleError::NotWasm)));
    assert!(matches!(
        rt.load("x", b"\0asm\x01\0\0\0"),
        Err(ModuleError::CoreModule)
    ));
    // An empty component: valid, but not a transform.
    let err = rt.load("x", b"\0asm\x0d\0\x01\0").unwrap_err();
    assert!(matches!(err, ModuleError::WrongWorld(_)), "{err}");
    assert!(
        err.to_string().contains("sluice:transform/transform@0.1.0"),
        "{err}"
    );
    let err = rt.load("x", b"\0asm\x0d\0\x01\0\xff").unwrap_err();
    assert!(matches!(err, ModuleError::Invalid(_)), "{err}");
}

#[test]
fn init_rejection_and_init_trap_are_distinguished() {
    let rt = Runtime::new().unwrap();
    let module = rt
        .load("faulty", &std::fs::read(guest("faulty-guest")).unwrap())
        .unwrap();
    let err = Transform::new(
        &module,
        labels(),
        Limits::default(),
        config(&[("mode", "bogus")]),
    )
    .unwrap_err();
    assert!(
        matches!(&err, InstantiateError::ConfigRejected(m) if m.starts_with("unknown mode `bogus`")),
        "{err}"
    );
    let err = Transform::new(
        &module,
        labels(),
        Limits::default(),
        config(&[("mode", "init-trap")]),
    )
    .unwrap_err();
    assert!(
        matches!(&err, InstantiateError::Trapped(m) if m.contains("panicking inside init as configured")),
        "{err}"
    );
}

#[test]
fn one_batch_is_one_call_and_a_fault_costs_only_its_bisection() {
    let rt = Runtime::new().unwrap();
    let module = rt
        .load("faulty", &std::fs::read(guest("faulty-guest")).unwrap())
        .unwrap();
    let mut t = Transform::new(
        &module,
        labels(),
        Limits::default(),
        config(&[("mode", "trap"), ("trigger", "r5")]),
    )
    .unwrap();
    let mut batch = Batch::with_capacity(16, 64);
    for i in 0..16 {
        batch
            .records
            .push(None, Some(format!("r{i}").as_bytes()), Some(i), []);
        batch.partitions.push(0);
        batch.offsets.push(i);
        batch.sources.push(0);
    }
    let healthy = {
        let mut b = batch.select(&(0..16).filter(|&i| i != 5).collect::<Vec<_>>());
        t.process(&mut b).unwrap()
    };
    assert_eq!(t.stats().calls, 1);
    assert_eq!(healthy.records.len(), 15);

    let out = t.process(&mut batch).unwrap();
    assert_eq!(
        out.inputs,
        (0..16).filter(|&i| i != 5).collect::<Vec<u32>>()
    );
    assert_eq!(out.dead_letters.len(), 1);
    assert_eq!(out.dead_letters[0].0, 5);
    // The healthy call, the failed whole batch, then two halves per level of
    // 16 -> 8 -> 4 -> 2 -> 1, restarting after each of the five failures.
    assert_eq!(t.stats().calls, 1 + 1 + 2 * 4);
    assert_eq!(t.stats().restarts, 5);
    assert_eq!(batch.len(), 16, "the batch is handed back intact");
}

#[test]
fn a_runtime_without_deadline_checks_gives_the_same_output() {
    use sluice::cli::kafka_tools::{SampleOptions, sample_record};
    let options = SampleOptions::default();
    let mut batch = Batch::with_capacity(200, 200 * 120);
    let mut expected = Vec::new();
    for n in 0..200u32 {
        let (key, value) = sample_record(&options, n.into());
        let event: serde_json::Value = serde_json::from_slice(&value).unwrap();
        if event["event_type"] != "heartbeat" {
            expected.push(n);
        }
        batch
            .records
            .push(Some(key.as_bytes()), Some(&value), Some(n.into()), []);
        batch.partitions.push(0);
        batch.offsets.push(n.into());
        batch.sources.push(0);
    }
    assert!(expected.len() > 100 && expected.len() < 200, "{expected:?}");
    let bytes = std::fs::read(guest("filter-heartbeats")).unwrap();
    let mut run = |rt: Runtime| {
        let module = rt.load("filter-heartbeats", &bytes).unwrap();
        let mut t = Transform::new(&module, labels(), Limits::default(), Vec::new()).unwrap();
        let out = t.process(&mut batch).unwrap();
        (out.inputs, out.records.values, out.records.value_offsets)
    };
    let checked = run(Runtime::new().unwrap());
    let unchecked = run(Runtime::without_deadlines().unwrap());
    assert_eq!(checked.0, expected);
    assert_eq!(checked, unchecked);
}
