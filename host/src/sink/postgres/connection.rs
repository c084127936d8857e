//! The connection of a PostgreSQL sink: connecting, what a database error
//! means for a batch, and retrying with back-off.

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

use super::PostgresError;
use crate::spec::postgres::PostgresSpec;

/// How long one attempt (connect, or a batch's transaction) may take
/// before the connection is dropped and the attempt retried.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// The first and the longest wait between two attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// The database's message for `e`, with its detail when it has one.
pub(super) fn message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        },
        None => {
            // The driver's own errors name their cause as a source.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// What an error means for the batch.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// The connection, or the database's state: try again.
    Transient,
    /// One of the rows: isolate it.
    Row,
    /// Anything else: fail.
    Fatal,
}

pub(super) fn fault(e: &tokio_postgres::Error) -> Fault {
    let Some(code) = e.code() else {
        return Fault::Transient; // I/O, a closed connection, a timeout
    };
    let class = &code.code()[..2];
    if matches!(class, "08" | "53" | "57")
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
    {
        Fault::Transient
    } else if matches!(class, "22" | "23") {
        Fault::Row
    } else {
        Fault::Fatal
    }
}

/// A prepared connection.
pub(super) struct Connected {
    pub client: Client,
    pub insert: Statement,
}

/// Connects again after a failure.
async fn reconnect(
    spec: &PostgresSpec,
    insert_sql: &str,
) -> Result<Connected, tokio_postgres::Error> {
    let client = connect(spec).await?;
    let insert = client.prepare(insert_sql).await?;
    Ok(Connected { client, insert })
}

/// The connection, made again if the last one failed.
pub(super) async fn ensure<'c>(
    connected: &'c mut Option<Connected>,
    spec: &PostgresSpec,
    insert_sql: &str,
) -> Result<&'c mut Connected, Failure> {
    if connected.as_ref().is_some_and(|c| c.client.is_closed()) {
        *connected = None;
    }
    if connected.is_none() {
        *connected = Some(reconnect(spec, insert_sql).await?);
    }
    Ok(connected.as_mut().expect("just made"))
}

/// Connects as the URL says, without TLS, in UTC.
pub(super) async fn connect(spec: &PostgresSpec) -> Result<Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = spec.url.parse()?;
    config.application_name("sluice");
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    client.batch_execute("SET TIME ZONE 'UTC'").await?;
    Ok(client)
}

/// Runs `attempt` until it succeeds, retrying transient faults with
/// back-off for up to `retry_for`. `attempt` is told whether it is a retry
/// (and then starts from a new connection).
pub(super) fn retrying<T>(
    runtime: &tokio::runtime::Runtime,
    retry_for: Duration,
    op: &'static str,
    mut attempt: impl AsyncFnMut(bool) -> Result<T, Failure>,
) -> Result<T, PostgresError> {
    let started = Instant::now();
    let mut wait = BACKOFF.0;
    let mut retry = false;
    loop {
        // The timer is made inside the runtime, which drives it.
        let attempted =
            runtime.block_on(async { tokio::time::timeout(ATTEMPT_TIMEOUT, attempt(retry)).await });
        let last = match attempted {
            Ok(Ok(t)) => return Ok(t),
            Ok(Err(Failure::Db(e))) if fault(&e) == Fault::Transient => message(&e),
            Ok(Err(Failure::Db(e))) => return Err(PostgresError::from_db(op, e)),
            Ok(Err(Failure::Refused(e))) => return Err(e),
            Err(_) => format!("timed out after {}s", ATTEMPT_TIMEOUT.as_secs()),
        };
        if started.elapsed() + wait > retry_for {
            return Err(PostgresError::Unreachable {
                op,
                waited: started.elapsed(),
                last,
            });
        }
        tracing::warn!(op, error = %last, retry_in_ms = wait.as_millis() as u64, "PostgreSQL unreachable; retrying");
        std::thread::sleep(wait);
        wait = (wait * 2).min(BACKOFF.1);
        retry = true;
    }
}

/// Why an attempt failed, as [`retrying`] sorts it.
pub(super) enum Failure {
    Db(tokio_postgres::Error),
    /// Not the connection's fault: fails at once.
    Refused(PostgresError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Db(e)
    }
}
