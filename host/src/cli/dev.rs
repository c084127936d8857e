//! `sluice dev pipeline.yaml`: runs a pipeline and, whenever a source file
//! of one of its guests changes, rebuilds that guest and swaps it in at the
//! next batch boundary, without restarting.
//!
//! The guests are found through cargo: the spec's directory belongs to a
//! cargo workspace, and a transform whose module is
//! `<target>/wasm32-wasip2/<profile>/<name>.wasm` is built by the package
//! of that workspace with a `cdylib` target called `<name>`. Its directory
//! is watched (everything but `target/`). A rebuild is
//! `cargo build --target wasm32-wasip2 --profile <profile> -p <package>`.
//! A build that fails, or a new module that cannot start or fails its
//! first batch, is reported; the previous version keeps running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use notify::{RecursiveMode, Watcher};
use serde_json::Value;

use crate::pipeline::{self, Control, RunOptions, SwapRecord, SwapRequest, SwapState};
use crate::spec::{self, PipelineSpec};

/// How long the sources must be quiet before a rebuild (editors write a
/// file in several steps).
const SETTLE: Duration = Duration::from_millis(300);

/// A guest crate that builds one step's module.
#[derive(Debug, Clone)]
struct Guest {
    /// Index of the step in `transforms`.
    step: usize,
    step_name: String,
    package: String,
    /// The package's directory (watched).
    dir: PathBuf,
    /// The cargo profile the module was built with.
    profile: String,
    /// Where the build puts the module.
    artifact: PathBuf,
    /// Versions built in this session; 1 is the one the run started with.
    version: u32,
}

/// Runs `sluice dev`.
pub fn dev(path: &Path) -> anyhow::Result<()> {
    let mut spec = spec::load_unbuilt(path)?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (root, mut guests) = find_guests(&spec, base)?;
    for guest in &guests {
        spec.transforms[guest.step].module = guest.artifact.clone();
    }
    for guest in &guests {
        eprintln!(
            "[dev] step `{}`: package `{}` in {}",
            guest.step_name,
            guest.package,
            guest.dir.display()
        );
        build(&root, guest).with_context(|| format!("cannot build `{}`", guest.package))?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let control = Arc::new(Control::with_listener(Box::new(report)));
    let pipeline = {
        let (spec, stop, control) = (spec.clone(), stop.clone(), control.clone());
        std::thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || {
                pipeline::run_with(&spec, RunOptions::default(), &stop, Some(&control))
            })?
    };
    let signals = stop.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds");
        runtime.block_on(super::shutdown_signal());
        signals.store(true, Ordering::Relaxed);
    });

    let (events, changes) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(events).context("cannot watch files")?;
    for guest in &guests {
        watcher
            .watch(&guest.dir, RecursiveMode::Recursive)
            .with_context(|| format!("cannot watch {}", guest.dir.display()))?;
    }
    eprintln!("[dev] watching for changes; Ctrl-C stops");

    while !stop.load(Ordering::Relaxed) && !pipeline.is_finished() {
        let Some(changed) = settle(&changes, &guests, &stop) else {
            continue;
        };
        for i in changed {
            let guest = &mut guests[i];
            eprintln!("[dev] `{}` changed: rebuilding", guest.package);
            if let Err(e) = build(&root, guest) {
                eprintln!(
                    "[dev] {e:#}\n[dev] step `{}` keeps running version {}",
                    guest.step_name, guest.version
                );
                continue;
            }
            guest.version += 1;
            swap(&control, guest);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let summary = pipeline
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))??;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// Waits for a change to settle; returns the guests whose files changed.
fn settle(
    changes: &mpsc::Receiver<notify::Result<notify::Event>>,
    guests: &[Guest],
    stop: &AtomicBool,
) -> Option<Vec<usize>> {
    let mut changed: Vec<usize> = Vec::new();
    let mut last = Instant::now();
    loop {
        let wait = if changed.is_empty() {
            Duration::from_millis(200)
        } else {
            SETTLE.saturating_sub(last.elapsed())
        };
        match changes.recv_timeout(wait) {
            Ok(Ok(event)) if !matches!(event.kind, notify::EventKind::Access(_)) => {
                for path in &event.paths {
                    for (i, guest) in guests.iter().enumerate() {
                        let ours = path.strip_prefix(&guest.dir).is_ok_and(|rest| {
                            !rest.starts_with("target") && !rest.as_os_str().is_empty()
                        });
                        if ours && !changed.contains(&i) {
                            changed.push(i);
                        }
                    }
                }
                last = Instant::now();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("[dev] file watching: {e}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if changed.is_empty() {
                    return None;
                }
                if last.elapsed() >= SETTLE || stop.load(Ordering::Relaxed) {
                    return Some(changed);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Asks the run to swap `guest`'s new build in and says what happened.
fn swap(control: &Control, guest: &Guest) {
    let request = SwapRequest {
        step: guest.step,
        module: guest.package.clone(),
        version: Some(guest.version),
        file: guest.artifact.clone(),
    };
    let record = SwapRecord {
        id: 0,
        step: guest.step_name.clone(),
        module: guest.package.clone(),
        from_version: Some(guest.version - 1),
        to_version: Some(guest.version),
        state: SwapState::Pending,
        reason: None,
        requested_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        first_batch: None,
        boundary: Vec::new(),
        pause_ms: None,
        swap_ms: None,
    };
    let id = control.request_swap(request, record);
    if let Some(record) = control.wait_swap(id, Duration::from_secs(30))
        && record.state == SwapState::Trial
    {
        eprintln!(
            "[dev] step `{}`: version {} swapped in ({:.1} ms); live after its first batch",
            record.step,
            guest.version,
            record.swap_ms.unwrap_or_default()
        );
    }
}

/// Prints what became of a swap (called by the pipeline's thread).
fn report(record: &SwapRecord) {
    let version = record.to_version.unwrap_or_default();
    match record.state {
        SwapState::Live => eprintln!("[dev] step `{}`: version {version} is live", record.step),
        _ => eprintln!(
            "[dev] step `{}`: version {version} rolled back: {}; version {} keeps running",
            record.step,
            record.reason.as_deref().unwrap_or("no reason given"),
            record.from_version.unwrap_or_default()
        ),
    }
}

/// `cargo build` of one guest; the compiler's messages go to stderr.
fn build(root: &Path, guest: &Guest) -> anyhow::Result<()> {
    let started = Instant::now();
    let status = Command::new(cargo())
        .current_dir(root)
        .args(["build", "--target", "wasm32-wasip2", "--profile"])
        .arg(&guest.profile)
        .args(["-p", &guest.package])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("the build of `{}` failed ({status})", guest.package);
    }
    eprintln!(
        "[dev] built `{}` in {:.1} s",
        guest.package,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The cargo workspace root around `base`, and the guest of each step.
fn find_guests(spec: &PipelineSpec, base: &Path) -> anyhow::Result<(PathBuf, Vec<Guest>)> {
    let output = Command::new(cargo())
        .current_dir(base)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "{} is not in a cargo workspace (sluice dev rebuilds the guests of the spec's workspace): {}",
            base.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata: Value =
        serde_json::from_slice(&output.stdout).context("cannot read cargo metadata")?;
    let root = PathBuf::from(metadata["workspace_root"].as_str().unwrap_or_default());
    let target = PathBuf::from(metadata["target_directory"].as_str().unwrap_or_default());
    // cdylib target name -> (package, manifest dir)
    let mut cdylibs: BTreeMap<String, (String, PathBuf)> = BTreeMap::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap_or_default());
        for t in package["targets"].as_array().into_iter().flatten() {
            let cdylib = t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"));
            if cdylib && let Some(name) = t["name"].as_str() {
                cdylibs.insert(
                    name.replace('-', "_"),
                    (
                        package["name"].as_str().unwrap_or_default().to_owned(),
                        manifest.parent().unwrap_or(&root).to_owned(),
                    ),
                );
            }
        }
    }
    let mut guests = Vec::new();
    for (i, t) in spec.transforms.iter().enumerate() {
        let field = format!("transforms[{i}] ({})", t.step_name());
        let stem = t
            .module
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some((package, dir)) = cdylibs.get(&stem) else {
            bail!(
                "{field}: no package of the workspace at {} builds `{stem}.wasm` \
                 (sluice dev rebuilds cdylib guests of the spec's cargo workspace)",
                root.display()
            );
        };
        let profile_dir = t
            .module
            .parent()
            .and_then(Path::file_name)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let profile = match profile_dir.as_str() {
            "debug" => "dev".to_owned(),
            other => other.to_owned(),
        };
        let artifact = target
            .join("wasm32-wasip2")
            .join(&profile_dir)
            .join(format!("{stem}.wasm"));
        if artifact != t.module {
            eprintln!(
                "[dev] {field}: the spec names {}; running the build output {} instead",
                t.module.display(),
                artifact.display()
            );
        }
        guests.push(Guest {
            step: i,
            step_name: t.step_name(),
            package: package.clone(),
            dir: dir.clone(),
            profile,
            artifact,
            version: 1,
        });
    }
    Ok((root, guests))
}
