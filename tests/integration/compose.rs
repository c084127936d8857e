//! The Compose stack in `deploy/compose`: `compose.yaml` valid against the
//! Compose Specification's JSON schema (vendored, offline), and one pipeline
//! run by three `sluice serve` services, each a static member of the group,
//! with their checkpoints in the stack's S3 server.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn here() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    repo.join("deploy/compose")
}

#[test]
fn the_compose_file_is_valid() {
    assert_eq!(
        sluice_tests::run_validator("compose"),
        "deploy/compose: compose.yaml valid against the Compose Specification (compose-spec.json of check-jsonschema 0.39.0; jsonschema 4.26.0, offline); 3 Sluice services (sluice-0, sluice-1, sluice-2) run pipeline events-per-minute in group sluice-events-per-minute, checkpoints in s3://sluice/checkpoints/events-per-minute on service s3"
    );
}

/// Read here apart from validate.sh: the three Sluice services (merge keys
/// resolved) differ in their instance id alone among the settings that make
/// them one pipeline's processes, and the spec they run is one Sluice loads,
/// checkpointing in the S3 service's bucket.
#[test]
fn three_processes_share_one_spec_and_its_s3_checkpoints() {
    let text = std::fs::read_to_string(here().join("compose.yaml")).unwrap();
    let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    // One pass resolves one level: `x-sluice-env` merges `x-s3-env` and is
    // merged itself.
    for _ in 0..3 {
        yaml.apply_merge().unwrap();
    }
    assert!(!serde_yaml_ng::to_string(&yaml).unwrap().contains("<<:"));
    let compose: Value = serde_json::to_value(yaml).unwrap();
    let services = compose["services"].as_object().unwrap();
    let sluices: Vec<(&String, &Value)> = services
        .iter()
        .filter(|(_, s)| s["command"][0] == "serve")
        .collect();
    let names: Vec<&str> = sluices.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["sluice-0", "sluice-1", "sluice-2"]);
    let ids: BTreeSet<&str> = sluices
        .iter()
        .map(|(_, s)| s["environment"]["SLUICE_INSTANCE_ID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["sluice-0", "sluice-1", "sluice-2"]));
    for (name, s) in &sluices {
        for key in ["command", "volumes", "image"] {
            assert_eq!(s[key], sluices[0].1[key], "{name}: {key}");
        }
        assert_eq!(
            s["environment"]["AWS_ENDPOINT_URL"], "http://s3:9000",
            "{name}"
        );
        assert_eq!(s["depends_on"]["s3"]["condition"], "service_healthy");
    }
    assert!(services.contains_key("s3"));
    assert_eq!(
        sluices[0].1["volumes"][0],
        "./pipeline.yaml:/etc/sluice/pipeline.yaml:ro"
    );

    let spec =
        sluice::spec::load_unbuilt(&here().join("pipeline.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        spec.source.group.as_deref(),
        Some("sluice-events-per-minute")
    );
    let checkpoint = spec.checkpoint.expect("a checkpoint section");
    assert_eq!(
        checkpoint.s3_url(),
        Some("s3://sluice/checkpoints/events-per-minute")
    );
    assert_eq!(checkpoint.s3, sluice::spec::S3Spec::default());
}
