//! Builds every guest (examples and test guests) to `wasm32-wasip2`
//! components, once per test build, in a target dir of its own (a nested
//! cargo on the outer target dir would wait on its lock forever). The tests
//! find them through `SLUICE_GUEST_DIR`.

use std::path::PathBuf;
use std::process::Command;

const GUESTS: &[&str] = &[
    "filter-heartbeats",
    "strategy-map",
    "alert-router",
    "event-window-agg",
    "user-sessions",
    "json-join",
    "strategy-join",
    "faulty-guest",
    "count-sum",
    "tagger",
    "alias-bomb",
    "evil-guest",
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest.parent().unwrap().to_path_buf();
    let target = workspace.join("target").join("guests");
    for dir in [
        "sdk",
        "wit",
        "guest-examples",
        "tests/guests",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--locked",
            "--profile",
            "guest",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target);
    for guest in GUESTS {
        cmd.args(["-p", guest]);
    }
    // Settings meant for the outer build must not leak into the guests'.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_BUILD_")
            || [
                "CARGO_ENCODED_RUSTFLAGS",
                "RUSTFLAGS",
                "CARGO_TARGET_DIR",
                "RUSTC_WORKSPACE_WRAPPER",
                "RUSTC_WRAPPER",
            ]
            .contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
    let status = cmd.status().expect("cannot run cargo to build the guests");
    assert!(
        status.success(),
        "building the guests failed (is the target installed? `rustup target add wasm32-wasip2`)"
    );
    let out = target.join("wasm32-wasip2").join("guest");
    for guest in GUESTS {
        let file = out.join(format!("{}.wasm", guest.replace('-', "_")));
        assert!(file.is_file(), "{} was not built", file.display());
    }
    println!("cargo:rustc-env=SLUICE_GUEST_DIR={}", out.display());
}
