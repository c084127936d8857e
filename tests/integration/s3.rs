//! Checkpoints in S3-compatible object storage, against a real s3s-fs
//! server: generations, fencing, and why an old owner's late writes are
//! never read.

use sluice::checkpoint::{
    CheckpointStore, Fence, ObjectCheckpoints, ObjectDir, ObjectLog, ObjectTask, Wal,
};
use sluice::spec::S3Spec;
use sluice_tests::{S3, s3, unique};

fn dir(prefix: &str) -> ObjectDir {
    let options = S3Spec {
        endpoint: Some(s3().endpoint.clone()),
        region: Some("us-east-1".into()),
        allow_http: Some(true),
        credentials: Some((S3::ACCESS_KEY.into(), S3::SECRET_KEY.into())),
    };
    ObjectDir::open(&format!("s3://{}/{prefix}", S3::BUCKET), &options).unwrap()
}

/// Each owner takes the next generation and starts from the newest whole
/// one before it; the previous owner is fenced, and what it still writes
/// (a checkpoint after it lost the task) is never read by a later owner.
#[test]
fn owners_take_generations_and_a_fenced_owners_late_writes_are_never_read() {
    let prefix = unique("s3-task");
    let (a, taken) = ObjectTask::take(dir(&prefix), "a", 2).unwrap();
    assert_eq!(a.generation(), 1);
    assert!(taken.checkpoints.is_empty() && taken.epochs.is_empty());
    let a_fence = Fence::object(a.clone());
    a_fence.check().unwrap();
    let mut a_store = ObjectCheckpoints(a.clone());
    let mut a_log = ObjectLog(a.clone());
    a_log.append_all(&[(1, b"one"), (2, b"two")]).unwrap();
    a_store.save(2, b"state at 2").unwrap();
    a_log.append_all(&[(3, b"three")]).unwrap();
    a_log.truncate_through(2).unwrap();

    // b takes over: a's checkpoint and the epoch after it.
    let (b, taken) = ObjectTask::take(dir(&prefix), "b", 2).unwrap();
    assert_eq!(b.generation(), 2);
    assert_eq!(taken.checkpoints, [(2, b"state at 2".to_vec())]);
    assert_eq!(taken.epochs, [(3, b"three".to_vec())]);
    assert_eq!(b.lineage(), a.lineage());
    let fenced = a_fence.check().unwrap_err();
    assert_eq!((fenced.held, fenced.now, fenced.by.as_str()), (1, 2, "b"));
    Fence::object(b.clone()).check().unwrap();

    // a, paused past the hand-off, still saves a checkpoint and logs an
    // epoch: they land under its own generation only.
    a_store.save(4, b"a's late state").unwrap();
    a_log.append_all(&[(4, b"a's four")]).unwrap();
    let mut b_log = ObjectLog(b.clone());
    b_log.append_all(&[(4, b"b's four")]).unwrap();

    let (c, taken) = ObjectTask::take(dir(&prefix), "c", 2).unwrap();
    assert_eq!(c.generation(), 3);
    assert_eq!(taken.checkpoints, [(2, b"state at 2".to_vec())]);
    assert_eq!(
        taken.epochs,
        [(3, b"three".to_vec()), (4, b"b's four".to_vec())]
    );
    // The generations no one reads any more are removed.
    let files = |g: &str| {
        std::fs::read_dir(s3().bucket_dir().join(&prefix).join(g)).map_or(0, |d| d.count())
    };
    assert_eq!(files("g00000000000000000001"), 0);
    assert!(files("g00000000000000000003") > 0);
}

/// A taker that dies before its generation is whole leaves nothing that
/// counts: the next one starts from the same state.
#[test]
fn a_taker_that_died_half_way_is_passed_over() {
    let prefix = unique("s3-half");
    let (a, _) = ObjectTask::take(dir(&prefix), "a", 3).unwrap();
    ObjectCheckpoints(a.clone()).save(7, b"seven").unwrap();
    // A generation 2 whose owner object exists but which never got TAKEN.
    let half = s3().bucket_dir().join(&prefix);
    std::fs::write(half.join("owner/00000000000000000002"), "2 crashed\n").unwrap();
    std::fs::create_dir_all(half.join("g00000000000000000002")).unwrap();
    std::fs::write(
        half.join("g00000000000000000002/checkpoint-00000000000000000009.ckpt"),
        b"not even valid",
    )
    .unwrap();
    let (c, taken) = ObjectTask::take(dir(&prefix), "c", 3).unwrap();
    assert_eq!(c.generation(), 3);
    assert_eq!(taken.checkpoints, [(7, b"seven".to_vec())]);
    assert!(taken.problems.is_empty(), "{:?}", taken.problems);
}
