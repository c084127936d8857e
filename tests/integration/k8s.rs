//! The Kubernetes manifests in `deploy/k8s`: every document valid against
//! the pinned Kubernetes schemas (offline, unknown fields refused), the
//! kustomization complete, the names between documents in agreement.
use std::path::Path;
#[test]
fn kubernetes_manifests_are_valid() {
    assert_eq!(
        sluice_tests::run_validator("k8s"),
        "deploy/k8s: 6 documents in 6 files valid against Kubernetes 1.31 and 1.37 (kubernetes-validate 1.37.0, strict, offline); kustomization lists all 5 to apply"
    );
}

/// The spec the pods run (`sluice serve --pipeline /etc/sluice/pipeline.yaml`)
/// is one Sluice loads, but for its module file, which is in the image; and
/// it checkpoints in S3, where every replica reaches, with the endpoint,
/// region and credentials from the pods' environment (none in the spec).
#[test]
fn the_configmap_spec_is_one_sluice_loads() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let text = std::fs::read_to_string(repo.join("deploy/k8s/configmap.yaml")).unwrap();
    let config_map: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(&path, config_map["data"]["pipeline.yaml"].as_str().unwrap()).unwrap();
    let spec = sluice::spec::load_unbuilt(&path).unwrap_or_else(|e| panic!("{e}"));
    let checkpoint = spec.checkpoint.expect("a checkpoint section");
    assert_eq!(
        checkpoint.s3_url(),
        Some("s3://sluice/checkpoints/events-per-minute")
    );
    assert_eq!(checkpoint.s3, sluice::spec::S3Spec::default());
}
