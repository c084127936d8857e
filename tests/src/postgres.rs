//! A PostgreSQL server of the tests' own: a cluster made with `initdb` in a
//! temporary directory, started on a free loopback port, stopped with the
//! test process (a watchdog shell, as for the broker). Read with `psql`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// PostgreSQL's programs: `$SLUICE_PG_BIN`, or Debian's PostgreSQL 15.
pub fn pg_bin() -> PathBuf {
    std::env::var_os("SLUICE_PG_BIN").map_or_else(
        || PathBuf::from("/usr/lib/postgresql/15/bin"),
        PathBuf::from,
    )
}

/// A running cluster; the user `sluice` may connect without a password.
pub struct Postgres {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Makes a cluster and starts it.
    pub fn start() -> anyhow::Result<Self> {
        let bin = pg_bin();
        if !bin.join("initdb").is_file() {
            bail!(
                "PostgreSQL is not installed at {}: run `deploy/local/setup.sh` (or set SLUICE_PG_BIN)",
                bin.display()
            );
        }
        let dir = tempfile::tempdir()?;
        let owner = server_user()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let status = as_server_user(owner.is_some(), &bin.join("initdb"))
            .args([
                "-D",
                "data",
                "-U",
                "sluice",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("cannot run initdb")?;
        if !status.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&status.stderr));
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut pg = Self {
            port,
            child: None,
            dir,
        };
        pg.launch()?;
        Ok(pg)
    }

    /// Starts the server on its port (again, after [`Self::stop`]).
    pub fn launch(&mut self) -> anyhow::Result<()> {
        let owner = server_user()?;
        // SIGINT: PostgreSQL's fast shutdown (clients disconnected).
        let script = r#"
            "$@" >>postgres.log 2>&1 &
            server=$!
            trap 'kill -INT $server 2>/dev/null; wait $server; exit 0' TERM INT
            while [ -d "/proc/$WATCH" ] && kill -0 $server 2>/dev/null; do sleep 0.2; done
            kill -INT $server 2>/dev/null; wait $server
        "#;
        let mut cmd = as_server_user(owner.is_some(), Path::new("sh"));
        cmd.current_dir(self.dir.path())
            .env("WATCH", std::process::id().to_string())
            .args(["-c", script, "watchdog"])
            .arg(pg_bin().join("postgres"))
            .args(["-D", "data", "-p", &self.port.to_string(), "-k", "."])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=200", "-c", "full_page_writes=off"])
            .stdin(Stdio::null());
        self.child = Some(cmd.spawn().context("cannot start postgres")?);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(pg_bin().join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("postgres.log"))
                    .unwrap_or_default();
                bail!("PostgreSQL did not start on port {}: {log}", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: sessions are cut).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// A URL for the user `sluice` to the database `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://sluice@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs `sql` with psql; returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(pg_bin().join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "sluice", "-d", "postgres", "-c", sql])
            .output()
            .context("cannot run psql")?;
        if !out.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Every row of `table` as JSON (`row_to_json`), keys sorted, sorted.
    pub fn rows(&self, table: &str) -> Vec<String> {
        let out = self
            .psql(&format!("SELECT row_to_json(t) FROM {table} t"))
            .unwrap();
        let mut rows: Vec<String> = out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: std::collections::BTreeMap<String, serde_json::Value> =
                    serde_json::from_str(l).unwrap();
                serde_json::to_string(&v).unwrap()
            })
            .collect();
        rows.sort();
        rows
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server shared by a test binary, started on first use.
pub fn postgres() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| Postgres::start().expect("cannot start PostgreSQL"))
}

/// A table name no other test uses.
pub fn unique_table(prefix: &str) -> String {
    crate::unique(prefix).replace('-', "_")
}

/// As root, the `postgres` user's ids (PostgreSQL refuses to run as root).
fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
    if current_uid() != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        if !out.status.success() {
            bail!("running as root, and there is no `postgres` user to run PostgreSQL as");
        }
        Ok(String::from_utf8(out.stdout)?.trim().parse()?)
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

fn current_uid() -> u32 {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `program`, run as the `postgres` user when `switch`.
fn as_server_user(switch: bool, program: &Path) -> Command {
    if switch {
        // setpriv execs the program (no process in between to signal).
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}
