//! `sluice dev`: a guest crate outside the repository is rebuilt and swapped
//! in when its source changes, while the pipeline keeps running; a change
//! that does not compile leaves the running version in place.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::*;

/// The guest's source, appending `tag` to every value.
fn source(tag: &str) -> String {
    format!(
        "use sluice_sdk::{{Emitter, Error, Record}};\n\n\
         #[sluice_sdk::transform]\n\
         pub fn tag(record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {{\n\
         \x20   let mut value = record.value().unwrap_or_default().to_vec();\n\
         \x20   value.extend_from_slice(b\"{tag}\");\n\
         \x20   out.emit(value);\n\
         \x20   Ok(())\n\
         }}\n"
    )
}

/// A cargo workspace of one guest crate, `dev-guest`, using this
/// repository's SDK and dependency versions.
fn guest_workspace(dir: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[workspace]\n\n[package]\nname = \"dev-guest\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nsluice-sdk = {{ path = \"{}\" }}\n",
            repo.join("sdk").display()
        ),
    )
    .unwrap();
    fs::copy(repo.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    fs::write(dir.join("src/lib.rs"), source("|A")).unwrap();
}

/// `sluice dev`, its stderr in a file; SIGTERMed when dropped.
struct Dev {
    child: Child,
    log: PathBuf,
}

impl Dev {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `text` `count` times.
    fn wait_for(&mut self, text: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log().matches(text).count() < count {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sluice dev exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "never saw {text:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `topic` holds `n` records; returns their values in order.
fn wait_for_values(dev: &Dev, topic: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let values: Vec<String> = read(topic)
            .into_iter()
            .map(|r| r.value.unwrap_or_default())
            .collect();
        if values.len() >= n {
            return values;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} holds {values:?}, waiting for {n}:\n{}",
            dev.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn produce_values(topic: &str, values: &[&str]) {
    let records: Vec<(&str, &str)> = values.iter().map(|v| ("k", *v)).collect();
    produce(topic, &records);
}

#[test]
fn sluice_dev_rebuilds_and_swaps_a_guest_on_save() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("guest");
    guest_workspace(&workspace);
    // Built once per test run into a target dir of its own (the guests of
    // the repository are built by build.rs elsewhere).
    let target = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("target/dev-guests");
    let (input, output, dlq) = (unique("dev-in"), unique("dev-out"), unique("dev-dlq"));
    create_topics(&[&input, &output, &dlq], 1);
    let spec = workspace.join("pipeline.yaml");
    fs::write(
        &spec,
        format!(
            "name: dev\nkafka: {{ brokers: \"{}\" }}\nsource: {{ topics: [{input}], group: {} }}\n\
             batch: {{ max_records: 100, max_wait: 20ms }}\n\
             transforms:\n  - name: tag\n    module: {}/wasm32-wasip2/release/dev_guest.wasm\n\
             outputs: {{ default: {{ topic: {output} }} }}\ndead_letter: {{ topic: {dlq} }}\n",
            brokers(),
            unique("dev-group"),
            target.display()
        ),
    )
    .unwrap();

    let log = dir.path().join("dev.log");
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("dev")
        .arg(&spec)
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut dev = Dev { child, log };
    // The first build compiles the SDK and its dependencies.
    dev.wait_for("[dev] watching for changes", 1, Duration::from_secs(600));
    dev.wait_for("pipeline started", 1, Duration::from_secs(30));

    produce_values(&input, &["a1", "a2", "a3"]);
    assert_eq!(wait_for_values(&dev, &output, 3), ["a1|A", "a2|A", "a3|A"]);

    // Save a new version: rebuilt and swapped in, no restart.
    let mut file = fs::File::create(workspace.join("src/lib.rs")).unwrap();
    file.write_all(source("|B").as_bytes()).unwrap();
    drop(file);
    dev.wait_for("version 2 swapped in", 1, Duration::from_secs(120));
    produce_values(&input, &["b1", "b2"]);
    assert_eq!(
        wait_for_values(&dev, &output, 5),
        ["a1|A", "a2|A", "a3|A", "b1|B", "b2|B"]
    );
    dev.wait_for("step `tag`: version 2 is live", 1, Duration::from_secs(10));

    // A change that does not compile: reported, version 2 runs on.
    fs::write(workspace.join("src/lib.rs"), "this is not Rust\n").unwrap();
    dev.wait_for(
        "[dev] step `tag` keeps running version 2",
        1,
        Duration::from_secs(120),
    );
    produce_values(&input, &["c1"]);
    assert_eq!(
        wait_for_values(&dev, &output, 6),
        ["a1|A", "a2|A", "a3|A", "b1|B", "b2|B", "c1|B"]
    );
    assert_eq!(read(&dlq), vec![]);

    // SIGTERM: the current batch finishes and the command exits 0.
    let pid = dev.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = dev.child.wait().unwrap();
    assert!(status.success(), "{status}:\n{}", dev.log());
}
