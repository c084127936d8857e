//! The `sluice` binary, built inside the test crate so that integration tests
//! can run it as a process (`CARGO_BIN_EXE_sluice`).

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
