//! A `sluice serve` process for control-plane tests.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use sluice::cli::client::Client;

/// A `sluice serve` process on a free loopback port (it listens on port 0
/// and prints the address it got), with its data in `<dir>/data` and its
/// log in `<dir>/server.log`. Killed when dropped.
pub struct Server {
    pub url: String,
    child: Child,
    log: PathBuf,
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    /// Starts `sluice serve` with extra `args`. A `--token T` among them is
    /// given the way an operator gives it, as `SLUICE_TOKEN` (the server
    /// takes no token on its command line, where `ps` would show it).
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        let mut token = None;
        let mut rest = Vec::new();
        let mut given = args.iter();
        while let Some(arg) = given.next() {
            match *arg {
                "--token" => token = given.next().copied(),
                arg => rest.push(arg),
            }
        }
        Self::start_with_env(dir, &rest, token.map(|t| ("SLUICE_TOKEN", t)))
    }

    /// Starts `sluice serve` with `args` and, if given, one environment
    /// variable.
    pub fn start_with_env(dir: &Path, args: &[&str], env: Option<(&str, &str)>) -> Self {
        let log = dir.join("server.log");
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--data")
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("SLUICE_TOKEN")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            panic!(
                "sluice serve did not start: {line:?}\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Self {
            url: url.to_owned(),
            child,
            log,
            _stdout: stdout,
        }
    }

    pub fn client(&self, token: Option<&str>) -> Client {
        Client::new(&self.url, token.map(str::to_owned))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status must be a clean 0 (the server stops
    /// its pipelines after their current batch).
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "sluice serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "sluice serve exited with {status}:\n{}",
            self.log()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
