//! The PostgreSQL sink: an output's records (JSON objects) as rows of a
//! table, one transaction per batch.
//!
//! # Rows
//!
//! Each record's top-level fields are the columns (see `sink::row`): those
//! of the spec's `schema`, or else every column of the table the database
//! does not fill itself (a default, an identity, a generated column), with
//! the table's types and nullability. A record that does not fit is refused
//! before the database sees it (`postgres: field "amount": expected
//! float64, got string`). A batch's rows go in one statement, each column an
//! array parameter (`INSERT ... SELECT * FROM unnest($1::text[], ...)`), with
//! `ON CONFLICT (key) DO UPDATE` in upsert mode (where, of one batch's
//! records of a key, the last wins).
//!
//! A row the database refuses (an integrity constraint, class 23; a data
//! exception such as an integer out of the column's range, class 22) fails
//! the statement: the batch is then written again row by row, each behind
//! a savepoint, and each refused row is returned with the database's
//! message, to be dead-lettered. Other errors of the database (a missing
//! table, a permission) fail the pipeline with the message. A connection
//! that breaks (or a database shutting down, a serialization failure) is
//! retried with back-off for `retry_for`, reconnecting: the batch is not
//! acknowledged meanwhile, so the pipeline's offsets stay where they were.
//!
//! # Exactly once
//!
//! With `delivery: exactly-once`, each transaction also moves this output's
//! row of `<schema>.sluice_progress` (keyed by the checkpoint lineage, the
//! task and the output) to the batch's epoch, only if it is behind it, and
//! records the rows the database refused in `<schema>.sluice_rejected`.
//! The run calls [`PostgresSink::write`] only once the epoch is durable in
//! the epoch log, so an epoch's records are fixed before any of its rows
//! can be committed. After a crash, recovery re-executes the epochs logged
//! after the newest checkpoint with the same records: an epoch the table
//! already has (its progress row is at or past it) is skipped, and its
//! refused rows are read back from `sluice_rejected` so that they are
//! dead-lettered again (the dead-letter topic drops what it already has).
//! A commit whose outcome is unknown (the connection broke during it) is
//! settled the same way on the retry. Rows of `sluice_rejected` are deleted
//! once a checkpoint covers their epoch. A process that lost its task can
//! commit nothing after the next owner moved the progress row past its
//! epochs; the fence checked before every batch stops it before that.
//!
//! At-least-once pipelines write each batch without bookkeeping: a crash
//! after a commit and before the offsets' may write those rows again
//! (upserts make that harmless).

mod connection;
mod rows;
mod table;

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use self::connection::{
    ATTEMPT_TIMEOUT, Connected, Failure, Fault, connect, ensure, fault, message, retrying,
};
use self::rows::{Arrays, last_per_key};
use self::table::Table;
use super::row::{self, Cell, TableRecord};
use crate::spec::parquet::ColumnSpec;
use crate::spec::postgres::{PostgresSpec, WriteMode};

/// Why the sink failed. Rows the database refuses are not errors (see
/// [`PostgresSink::write`]).
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The table cannot take the output's records as configured.
    #[error("{0}")]
    Table(String),
    /// The database answered an error that is not about one row.
    #[error("cannot {op}: {message}")]
    Database { op: &'static str, message: String },
    /// The database could not be reached for `retry_for`.
    #[error("cannot {op}: the database was unreachable for {}: {last}", humantime::format_duration(*.waited))]
    Unreachable {
        op: &'static str,
        waited: Duration,
        last: String,
    },
}

impl PostgresError {
    fn from_db(op: &'static str, e: tokio_postgres::Error) -> Self {
        Self::Database {
            op,
            message: message(&e),
        }
    }
}

/// What the sink has done, for the progress document and `/metrics`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PostgresStats {
    pub rows_written: u64,
    pub transactions: u64,
    /// Rows the database refused (dead-lettered).
    pub rows_refused: u64,
    /// Epochs found already committed (re-executed after a restart).
    pub epochs_skipped: u64,
    /// Attempts that failed on the connection and were retried.
    pub retries: u64,
    /// The last transaction's time, from its first statement to its
    /// commit, in microseconds.
    pub last_commit_us: u64,
    /// Every transaction's time together, in microseconds.
    pub commit_us_total: u64,
}

impl std::ops::AddAssign for PostgresStats {
    /// Two tasks' writes to one output: counts and times add up; the last
    /// commit is the later-measured one's (the other's, if it has one).
    fn add_assign(&mut self, other: Self) {
        self.rows_written += other.rows_written;
        self.transactions += other.transactions;
        self.rows_refused += other.rows_refused;
        self.epochs_skipped += other.epochs_skipped;
        self.retries += other.retries;
        if other.transactions > 0 {
            self.last_commit_us = other.last_commit_us;
        }
        self.commit_us_total += other.commit_us_total;
    }
}

/// Exactly-once bookkeeping: the progress row this sink moves.
#[derive(Debug)]
struct Progress {
    pipeline: String,
    lineage: String,
    task: String,
    output: String,
    /// The epoch the table has, as far as this sink knows.
    recorded: i64,
}

/// Writes one output's records to a PostgreSQL table; see the module docs.
pub struct PostgresSink {
    name: String,
    spec: PostgresSpec,
    runtime: tokio::runtime::Runtime,
    connected: Option<Connected>,
    table: Table,
    columns: Vec<ColumnSpec>,
    insert_sql: String,
    progress: Option<Progress>,
    stats: PostgresStats,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("name", &self.name)
            .field("table", &self.table.qualified)
            .finish_non_exhaustive()
    }
}

/// Exactly-once identity of a sink: which pipeline, checkpoint lineage
/// and task it writes for.
#[derive(Debug, Clone)]
pub struct EpochKey {
    pub pipeline: String,
    pub lineage: String,
    /// `""` for a pipeline run whole, else the task's tag (`t00003`).
    pub task: String,
}

impl PostgresSink {
    /// Connects, finds (or creates) the table and checks it can take the
    /// output's records; with `exactly_once`, creates the bookkeeping
    /// tables if missing and reads where this output's progress is.
    pub fn open(
        name: &str,
        spec: &PostgresSpec,
        exactly_once: Option<EpochKey>,
    ) -> Result<Self, PostgresError> {
        spec.validate().map_err(PostgresError::Table)?;
        let runtime = client_runtime()?;
        let started = Instant::now();
        let (client, table) = retrying(&runtime, spec.retry_for, "connect", async |_| {
            let client = connect(spec).await?;
            let table = table::resolve(&client, spec, true)
                .await
                .map_err(Failure::Refused)?;
            Ok((client, table))
        })?;
        let insert_sql = table.insert_statement(spec);
        let columns = table.specs();
        let mut sink = Self {
            name: name.to_owned(),
            spec: spec.clone(),
            runtime,
            connected: None,
            table,
            columns,
            insert_sql,
            progress: None,
            stats: PostgresStats::default(),
        };
        sink.prepare(client)?;
        if let Some(key) = exactly_once {
            let recorded = sink.open_progress(&key)?;
            sink.progress = Some(Progress {
                pipeline: key.pipeline,
                lineage: key.lineage,
                task: key.task,
                output: name.to_owned(),
                recorded,
            });
        }
        tracing::info!(
            output = name,
            table = %sink.table.qualified,
            columns = sink.columns.len(),
            created = sink.table.created,
            recorded_epoch = sink.progress.as_ref().map(|p| p.recorded),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "PostgreSQL output ready"
        );
        Ok(sink)
    }

    /// For `sluice validate`: connects (once, without retrying) and checks
    /// the table (without creating it); returns what would be written.
    pub fn check(spec: &PostgresSpec) -> Result<String, PostgresError> {
        spec.validate().map_err(PostgresError::Table)?;
        let runtime = client_runtime()?;
        runtime.block_on(async {
            let client = match tokio::time::timeout(Duration::from_secs(10), connect(spec)).await {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => return Err(PostgresError::from_db("connect", e)),
                Err(_) => {
                    return Err(PostgresError::Database {
                        op: "connect",
                        message: "timed out after 10s".to_owned(),
                    });
                }
            };
            let exists = !client
                .query(
                    table_exists(),
                    &[&spec.table_name().0, &spec.table_name().1],
                )
                .await
                .map_err(|e| PostgresError::from_db("read the catalog", e))?
                .is_empty();
            let table = table::resolve(&client, spec, false).await?;
            let columns: Vec<String> = table
                .columns
                .iter()
                .map(|c| format!("{} {}", c.sql_name, c.spec.ty.name()))
                .collect();
            Ok(format!(
                "{} {} ({})",
                if exists {
                    "writes"
                } else {
                    "creates and writes"
                },
                table.qualified,
                columns.join(", ")
            ))
        })
    }

    /// What the sink has done so far.
    pub fn stats(&self) -> &PostgresStats {
        &self.stats
    }

    /// Writes epoch `epoch`'s records in one transaction (see the module
    /// docs); returns the records refused, with their reasons, by index.
    pub fn write(
        &mut self,
        epoch: u64,
        records: &[TableRecord<'_>],
    ) -> Result<Vec<(u32, String)>, PostgresError> {
        let mut refused = Vec::new();
        let mut rows: Vec<(u32, Vec<Cell>)> = Vec::with_capacity(records.len());
        for r in records {
            match row::parse_object("postgres", r.value)
                .and_then(|o| row::decode("postgres", &self.columns, o))
            {
                Ok(cells) => rows.push((r.index, cells)),
                Err(reason) => refused.push((r.index, reason)),
            }
        }
        if self.spec.mode == WriteMode::Upsert {
            rows = last_per_key(rows, &self.key_positions());
        }
        if rows.is_empty() {
            return Ok(refused);
        }
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        if let Some(p) = &self.progress
            && epoch <= p.recorded
        {
            // Re-executed after a restart: the table has it.
            self.stats.epochs_skipped += 1;
            refused.extend(self.refused_in(epoch)?);
            refused.sort_by_key(|r| r.0);
            return Ok(refused);
        }
        let (done, db_refused) = self.commit(epoch, &rows)?;
        if !done {
            self.stats.epochs_skipped += 1;
        }
        refused.extend(db_refused);
        refused.sort_by_key(|r| r.0);
        Ok(refused)
    }

    /// After a checkpoint of `epoch`: the refused rows of epochs it covers
    /// are never read back again.
    pub fn checkpointed(&mut self, epoch: u64) {
        let Some(p) = &self.progress else { return };
        let Some(c) = &self.connected else { return };
        let sql = format!(
            "DELETE FROM {}.sluice_rejected WHERE lineage = $1 AND task = $2 AND output = $3 \
             AND epoch <= $4",
            self.table.schema
        );
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        let done = self.runtime.block_on(async {
            let args: [&(dyn ToSql + Sync); 4] = [&p.lineage, &p.task, &p.output, &epoch];
            tokio::time::timeout(ATTEMPT_TIMEOUT, c.client.execute(&sql, &args)).await
        });
        if !matches!(done, Ok(Ok(_))) {
            // Left for the next checkpoint: they are only read back for
            // epochs after the newest checkpoint.
            tracing::debug!(output = %self.name, "could not trim sluice_rejected");
        }
    }

    fn key_positions(&self) -> Vec<usize> {
        self.spec
            .key
            .iter()
            .filter_map(|k| {
                self.table
                    .columns
                    .iter()
                    .position(|c| c.sql_name.eq_ignore_ascii_case(k))
            })
            .collect()
    }

    /// Prepares the insert on a new connection.
    fn prepare(&mut self, client: Client) -> Result<(), PostgresError> {
        let insert = self
            .runtime
            .block_on(client.prepare(&self.insert_sql))
            .map_err(|e| PostgresError::from_db("prepare the insert", e))?;
        self.connected = Some(Connected { client, insert });
        Ok(())
    }

    /// Creates the bookkeeping tables if missing; returns the epoch this
    /// output's progress row is at (0 without one).
    fn open_progress(&mut self, key: &EpochKey) -> Result<i64, PostgresError> {
        let schema = &self.table.schema;
        let ddl = [
            format!(
                "CREATE TABLE IF NOT EXISTS {schema}.sluice_progress (lineage text, task text, \
                 output text, pipeline text NOT NULL, epoch bigint NOT NULL, \
                 committed_at timestamptz NOT NULL DEFAULT now(), \
                 PRIMARY KEY (lineage, task, output))"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {schema}.sluice_rejected (lineage text, task text, \
                 output text, epoch bigint, index int, reason text NOT NULL, \
                 PRIMARY KEY (lineage, task, output, epoch, index))"
            ),
        ];
        let select = format!(
            "SELECT epoch FROM {schema}.sluice_progress WHERE lineage = $1 AND task = $2 AND output = $3"
        );
        let c = self.connected.as_ref().expect("connected by open");
        self.runtime.block_on(async {
            for statement in &ddl {
                if let Err(e) = c.client.batch_execute(statement).await {
                    // Two tasks creating one at once: one wins, the other
                    // sees a unique violation once the winner committed;
                    // both then find it.
                    if e.code() != Some(&SqlState::UNIQUE_VIOLATION)
                        && e.code() != Some(&SqlState::DUPLICATE_TABLE)
                    {
                        return Err(PostgresError::from_db("create the bookkeeping tables", e));
                    }
                }
            }
            let row = c
                .client
                .query_opt(&select, &[&key.lineage, &key.task, &self.name])
                .await
                .map_err(|e| PostgresError::from_db("read the output's progress", e))?;
            Ok(row.map_or(0, |r| r.get::<_, i64>(0)))
        })
    }

    /// The rows of `epoch` the database refused, recorded by its commit.
    fn refused_in(&mut self, epoch: i64) -> Result<Vec<(u32, String)>, PostgresError> {
        let p = self.progress.as_ref().expect("exactly-once");
        let sql = format!(
            "SELECT index, reason FROM {}.sluice_rejected WHERE lineage = $1 AND task = $2 \
             AND output = $3 AND epoch = $4",
            self.table.schema
        );
        let (spec, insert_sql) = (&self.spec, &self.insert_sql);
        let (connected, stats) = (&mut self.connected, &mut self.stats);
        retrying(
            &self.runtime,
            spec.retry_for,
            "read refused rows back",
            async |retry| {
                if retry {
                    stats.retries += 1;
                    *connected = None;
                }
                let c = ensure(connected, spec, insert_sql).await?;
                let rows = c
                    .client
                    .query(&sql, &[&p.lineage, &p.task, &p.output, &epoch])
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| (r.get::<_, i32>(0) as u32, r.get::<_, String>(1)))
                    .collect())
            },
        )
    }

    /// Commits `rows` (with the progress row, under exactly-once), retrying
    /// on the connection. Returns whether this call committed them (false:
    /// the table had the epoch already) and the rows the database refused.
    fn commit(
        &mut self,
        epoch: i64,
        rows: &[(u32, Vec<Cell>)],
    ) -> Result<(bool, Vec<(u32, String)>), PostgresError> {
        let arrays = Arrays::of(&self.columns, rows);
        let schema = self.table.schema.clone();
        let progress = self.progress.as_ref().map(|p| {
            (
                format!(
                    "INSERT INTO {schema}.sluice_progress (lineage, task, output, pipeline, epoch) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (lineage, task, output) DO UPDATE \
                     SET epoch = EXCLUDED.epoch, committed_at = now() \
                     WHERE sluice_progress.epoch < EXCLUDED.epoch"
                ),
                [
                    p.lineage.clone(),
                    p.task.clone(),
                    p.output.clone(),
                    p.pipeline.clone(),
                ],
            )
        });
        let rejected_sql = format!(
            "INSERT INTO {schema}.sluice_rejected (lineage, task, output, epoch, index, reason) \
             SELECT $1, $2, $3, $4, * FROM unnest($5::int[], $6::text[])"
        );
        let started = Instant::now();
        let (spec, insert_sql) = (&self.spec, &self.insert_sql);
        let (connected, retries) = (&mut self.connected, &mut self.stats.retries);
        let outcome = retrying(
            &self.runtime,
            spec.retry_for,
            "write a batch",
            async |retry| {
                if retry {
                    *retries += 1;
                    *connected = None;
                }
                let Connected { client, insert } = ensure(connected, spec, insert_sql).await?;
                let tx = client.transaction().await?;
                if let Some((sql, [lineage, task, output, pipeline])) = &progress {
                    let moved = tx
                        .execute(sql, &[lineage, task, output, pipeline, &epoch])
                        .await?;
                    if moved == 0 {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                }
                tx.batch_execute("SAVEPOINT sluice_batch").await?;
                let refused = match tx.execute(&*insert, &arrays.params()).await {
                    Ok(_) => Vec::new(),
                    Err(e) if fault(&e) == Fault::Row => {
                        // Written again row by row, from before the batch.
                        tx.batch_execute("ROLLBACK TO SAVEPOINT sluice_batch")
                            .await?;
                        one_by_one(&tx, insert, &arrays, rows).await?
                    }
                    Err(e) => return Err(e.into()),
                };
                if let Some((_, [lineage, task, output, _])) = &progress
                    && !refused.is_empty()
                {
                    let index: Vec<i32> = refused.iter().map(|r| r.0 as i32).collect();
                    let reason: Vec<&str> = refused.iter().map(|r| r.1.as_str()).collect();
                    tx.execute(
                        &rejected_sql,
                        &[lineage, task, output, &epoch, &index, &reason],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(Some(refused))
            },
        );
        let refused = match outcome {
            Ok(Some(refused)) => refused,
            Ok(None) => {
                // Committed before (a commit whose answer was lost, or an
                // epoch re-executed): its refused rows are on record.
                if let Some(p) = &mut self.progress {
                    p.recorded = p.recorded.max(epoch);
                }
                return Ok((false, self.refused_in(epoch)?));
            }
            Err(e) => return Err(e),
        };
        let us = started.elapsed().as_micros() as u64;
        self.stats.transactions += 1;
        self.stats.rows_written += (rows.len() - refused.len()) as u64;
        self.stats.rows_refused += refused.len() as u64;
        self.stats.last_commit_us = us;
        self.stats.commit_us_total += us;
        if let Some(p) = &mut self.progress {
            p.recorded = epoch;
        }
        Ok((true, refused))
    }
}

/// The runtime a sink's client runs on (the run loop's thread drives it).
fn client_runtime() -> Result<tokio::runtime::Runtime, PostgresError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PostgresError::Table(format!("cannot start the client's runtime: {e}")))
}

/// The query that tells whether a table exists (schema, name).
fn table_exists() -> &'static str {
    "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2"
}

/// Inserts `rows` one at a time, each behind a savepoint; returns those the
/// database refused with its message. A fault that is not a row's ends it.
async fn one_by_one(
    tx: &tokio_postgres::Transaction<'_>,
    insert: &Statement,
    arrays: &Arrays,
    rows: &[(u32, Vec<Cell>)],
) -> Result<Vec<(u32, String)>, Failure> {
    let mut refused = Vec::new();
    for (i, (index, _)) in rows.iter().enumerate() {
        tx.batch_execute("SAVEPOINT sluice_row").await?;
        let one = arrays.row(i);
        match tx.execute(insert, &one.params()).await {
            Ok(_) => tx.batch_execute("RELEASE SAVEPOINT sluice_row").await?,
            Err(e) if fault(&e) == Fault::Row => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT sluice_row").await?;
                refused.push((*index, format!("postgres: {}", message(&e))));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parquet::ColumnType;

    #[test]
    fn insert_statements_name_every_column_and_update_the_non_key_ones() {
        let column = |n: &str, ty| table::Column {
            spec: ColumnSpec {
                name: n.to_owned(),
                ty,
                nullable: false,
            },
            sql_name: n.to_ascii_lowercase(),
        };
        let t = Table {
            qualified: "\"public\".\"counts\"".to_owned(),
            schema: "\"public\"".to_owned(),
            columns: vec![
                column("eventType", ColumnType::String),
                column("count", ColumnType::Int64),
                column("at", ColumnType::TimestampMs),
            ],
            created: false,
        };
        let spec: PostgresSpec = serde_yaml_ng::from_str(
            "{ url: 'postgres://h/d', table: counts, mode: upsert, key: [eventType] }",
        )
        .unwrap();
        assert_eq!(
            t.insert_statement(&spec),
            "INSERT INTO \"public\".\"counts\" (\"eventtype\", \"count\", \"at\") SELECT * FROM \
             unnest($1::text[], $2::int8[], $3::timestamptz[]) ON CONFLICT (\"eventtype\") DO \
             UPDATE SET \"count\" = EXCLUDED.\"count\", \"at\" = EXCLUDED.\"at\""
        );
    }
}
