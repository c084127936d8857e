//! The Delta Lake sink: an output's records (JSON objects) as rows of a
//! Delta table (delta-rs), one commit per checkpoint.
//!
//! # Rows
//!
//! Each record's top-level fields are the columns (see `sink::row`): the
//! spec's `schema`, or else the table's columns, or (for a table this
//! output creates without one) the first record's fields, then fixed. A
//! record that does not fit is refused (`delta: field "count": expected
//! int64, got string`) and dead-lettered. A nullable column the spec adds
//! to an existing table is added to the table when the sink opens.
//!
//! In `append` mode a batch's rows are encoded into the table's Parquet
//! files as they come (a file rolls at `target_file_size`); the files join
//! the table with the next checkpoint's commit. In `merge` mode the rows
//! wait in memory (the last record of each key wins) and the checkpoint
//! merges them (Delta's `MERGE`: matched rows updated, the others
//! inserted). Every `optimize_every` commits the output compacts the
//! table's small files (`OPTIMIZE`, a commit that changes no data).
//!
//! Commits are made at checkpoints, before the checkpoint is saved: files
//! become visible as a Parquet output's do. Several tasks (or processes)
//! writing one table commit on their own; Delta's optimistic concurrency
//! orders them (appends never conflict; a merge that conflicts with
//! another's commit is run again on the new version).
//!
//! # Exactly once
//!
//! With `delivery: exactly-once`, each commit carries a transaction action
//! (`txn`) whose application id names the pipeline, the checkpoint lineage,
//! the task and the output, and whose version is the epoch the checkpoint
//! closes, as Spark's Delta sink does with its query id and batch id. The
//! commit holds every epoch since the previous one, so the table has all
//! the epochs up to its `txn` version and none after. After a crash,
//! recovery re-executes the epochs logged after the newest checkpoint with
//! the same records: those the table already has (at or below the version)
//! are not written again, and the others are committed at the next
//! checkpoint. Before committing, the sink reads the table's version again
//! (a commit whose answer was lost, another process's) and writes nothing
//! the table has; two commits with the same application id at once
//! conflict, and Delta lets one through.
//!
//! At-least-once pipelines commit without `txn`: a crash after a commit
//! and before the checkpoint's save writes those rows again.

mod location;
mod table;

use self::location::{add_columns, create, load, version_of};

use std::num::NonZeroU64;
use std::time::Instant;

use deltalake_core::datafusion::prelude::{Expr, SessionContext, col};
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake_core::kernel::{Action, Transaction};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::writer::{DeltaWriter, RecordBatchWriter};
use deltalake_core::{DeltaTable, DeltaTableError};
use indexmap::IndexMap;
use serde::Serialize;

use super::postgres::EpochKey;
use super::row::{self, Cell, TableRecord};
use crate::spec::S3Spec;
use crate::spec::delta::{DeltaMode, DeltaSpec};
use crate::spec::parquet::{ColumnSpec, ColumnType};

/// How many times a merge that conflicts with other writers' commits is
/// run again before the pipeline fails.
const MERGE_ATTEMPTS: u32 = 20;

/// Why the sink failed. Records that do not fit are not errors (see
/// [`DeltaSink::write`]).
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// The table cannot take the output's records as configured.
    #[error("{0}")]
    Table(String),
    /// delta-rs failed.
    #[error("cannot {op} the Delta table: {source}")]
    Delta {
        op: &'static str,
        #[source]
        source: DeltaTableError,
    },
}

impl DeltaError {
    fn table(op: &'static str, source: DeltaTableError) -> Self {
        Self::Delta { op, source }
    }
}

/// What the sink has done, for the progress document and `/metrics`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct DeltaStats {
    pub rows_written: u64,
    /// Records that did not fit the table (dead-lettered).
    pub rows_refused: u64,
    /// Commits of data (not counting compactions).
    pub commits: u64,
    /// Epochs found already in the table (re-executed after a restart).
    pub epochs_skipped: u64,
    /// Compactions (`OPTIMIZE`) run.
    pub compactions: u64,
    /// The table's version after this output's last commit.
    pub table_version: u64,
    /// The last commit's time, from its first write to the new version,
    /// in microseconds.
    pub last_commit_us: u64,
    /// Every commit's time together, in microseconds.
    pub commit_us_total: u64,
    /// Time encoding rows into the table's files (between commits), in
    /// microseconds.
    pub write_us_total: u64,
}

impl std::ops::AddAssign for DeltaStats {
    /// Two tasks' writes to one table: counts and times add up; the
    /// version is the newer one.
    fn add_assign(&mut self, other: Self) {
        self.rows_written += other.rows_written;
        self.rows_refused += other.rows_refused;
        self.commits += other.commits;
        self.epochs_skipped += other.epochs_skipped;
        self.compactions += other.compactions;
        self.table_version = self.table_version.max(other.table_version);
        if other.commits > 0 {
            self.last_commit_us = other.last_commit_us;
        }
        self.commit_us_total += other.commit_us_total;
        self.write_us_total += other.write_us_total;
    }
}

/// Rows written since the last commit.
enum Pending {
    /// Encoded into files already; `rows` of them.
    Append {
        writer: Option<Box<RecordBatchWriter>>,
        rows: u64,
    },
    /// The last row of each key.
    Merge(IndexMap<String, Vec<Cell>>),
}

impl Pending {
    /// Nothing written yet, in `mode`.
    fn new(mode: DeltaMode) -> Self {
        match mode {
            DeltaMode::Append => Pending::Append {
                writer: None,
                rows: 0,
            },
            DeltaMode::Merge => Pending::Merge(IndexMap::new()),
        }
    }
}

/// Exactly-once bookkeeping: the table's `txn` of this output.
#[derive(Debug)]
struct Txn {
    app_id: String,
    /// The version the table has, as far as this sink knows (-1: none).
    recorded: i64,
}

/// Writes one output's records to a Delta table; see the module docs.
pub struct DeltaSink {
    name: String,
    spec: DeltaSpec,
    /// Where the S3 of an `s3://` table is.
    s3: S3Spec,
    runtime: tokio::runtime::Runtime,
    table: DeltaTable,
    /// `None` until the first record fixes them (a table this output
    /// creates, without a spec schema).
    columns: Option<Vec<ColumnSpec>>,
    pending: Pending,
    txn: Option<Txn>,
    commits_since_optimize: u32,
    stats: DeltaStats,
}

impl std::fmt::Debug for DeltaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaSink")
            .field("name", &self.name)
            .field("path", &self.spec.path)
            .finish_non_exhaustive()
    }
}

impl DeltaSink {
    /// Opens the table (creating it from the spec's schema when missing),
    /// adds the spec's new nullable columns to it, and with `exactly_once`
    /// reads which epoch it has of this output.
    pub fn open(
        name: &str,
        spec: &DeltaSpec,
        s3: &S3Spec,
        exactly_once: Option<EpochKey>,
    ) -> Result<Self, DeltaError> {
        spec.validate().map_err(DeltaError::Table)?;
        let runtime = table_runtime()?;
        let started = Instant::now();
        let mut table = runtime.block_on(load(spec, s3, true))?;
        let mut columns = None;
        if table.version().is_some() {
            let (found, missing) = table::match_columns(&table, spec)?;
            if !missing.is_empty() {
                table = runtime.block_on(add_columns(table, &missing))?;
                tracing::info!(output = name, added = ?missing.iter().map(|c| &c.name).collect::<Vec<_>>(), "added the schema's new columns to the Delta table");
                columns = Some(table::match_columns(&table, spec)?.0);
            } else {
                columns = Some(found);
            }
        } else if let Some(schema) = &spec.schema {
            table = runtime.block_on(create(table, spec, s3, schema))?;
            columns = Some(schema.clone());
        }
        let txn = match exactly_once {
            None => None,
            Some(key) => {
                let app_id = format!(
                    "sluice/{}/{}/{}/{name}",
                    key.pipeline,
                    key.lineage,
                    if key.task.is_empty() { "-" } else { &key.task }
                );
                let recorded = runtime.block_on(version_of(&table, &app_id))?;
                Some(Txn { app_id, recorded })
            }
        };
        let pending = Pending::new(spec.mode);
        let sink = Self {
            name: name.to_owned(),
            spec: spec.clone(),
            s3: s3.clone(),
            runtime,
            stats: DeltaStats {
                table_version: table.version().unwrap_or(0),
                ..DeltaStats::default()
            },
            table,
            columns,
            pending,
            txn,
            commits_since_optimize: 0,
        };
        tracing::info!(
            output = name,
            path = %spec.path.display(),
            version = ?sink.table.version(),
            recorded_epoch = sink.txn.as_ref().map(|t| t.recorded),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Delta output ready"
        );
        Ok(sink)
    }

    /// For `sluice validate`: what the output would write, without
    /// creating or changing anything.
    pub fn check(spec: &DeltaSpec, s3: &S3Spec) -> Result<String, DeltaError> {
        spec.validate().map_err(DeltaError::Table)?;
        let runtime = table_runtime()?;
        if spec.s3_url().is_none() {
            let dir = writable_dir(&spec.path).ok_or_else(|| {
                DeltaError::Table(format!(
                    "path: {} cannot be created (no writable directory above it)",
                    spec.path.display()
                ))
            })?;
            if !spec.path.exists() {
                return Ok(format!(
                    "creates the table {} ({}) in {}",
                    spec.path.display(),
                    describe(spec.schema.as_deref()),
                    dir.display()
                ));
            }
        }
        let table = runtime.block_on(load(spec, s3, false))?;
        let Some(version) = table.version() else {
            return Ok(format!(
                "creates the table {} ({})",
                spec.path.display(),
                describe(spec.schema.as_deref())
            ));
        };
        let (columns, missing) = table::match_columns(&table, spec)?;
        let mut out = format!(
            "writes the table {} at version {version} ({})",
            spec.path.display(),
            describe(Some(&columns))
        );
        if !missing.is_empty() {
            out.push_str(&format!(", adding {}", describe(Some(&missing))));
        }
        Ok(out)
    }

    /// What the sink has done so far.
    pub fn stats(&self) -> &DeltaStats {
        &self.stats
    }

    /// Writes epoch `epoch`'s records (into files, or the merge buffer);
    /// they join the table at the next [`Self::commit`]. Returns the
    /// records refused, with their reasons, by index.
    pub fn write(
        &mut self,
        epoch: u64,
        records: &[TableRecord<'_>],
    ) -> Result<Vec<(u32, String)>, DeltaError> {
        let started = Instant::now();
        if self.columns.is_none() {
            self.infer_columns(records)?;
        }
        let mut refused = Vec::new();
        let mut rows: Vec<(u32, Vec<Cell>)> = Vec::with_capacity(records.len());
        for r in records {
            match row_of(self.columns.as_deref(), &self.spec, r) {
                Ok(cells) => rows.push((r.index, cells)),
                Err(reason) => refused.push((r.index, reason)),
            }
        }
        self.stats.rows_refused += refused.len() as u64;
        if let Some(t) = &self.txn
            && i64::try_from(epoch).unwrap_or(i64::MAX) <= t.recorded
        {
            // Re-executed after a restart: the table has it.
            if !rows.is_empty() {
                self.stats.epochs_skipped += 1;
            }
            return Ok(refused);
        }
        if rows.is_empty() {
            return Ok(refused);
        }
        let columns = self.columns.as_ref().expect("rows have columns");
        match &mut self.pending {
            Pending::Merge(buffer) => {
                let keys = key_positions(columns, &self.spec.key);
                for (_, cells) in rows {
                    let key: Vec<String> =
                        keys.iter().map(|&k| format!("{:?}", cells[k])).collect();
                    let key = key.join("\u{0}");
                    // The last record of its key, at the end of the buffer.
                    buffer.shift_remove(&key);
                    buffer.insert(key, cells);
                }
            }
            Pending::Append { writer, rows: n } => {
                let writer = match writer {
                    Some(w) => w,
                    None => writer.insert(Box::new(
                        RecordBatchWriter::for_table(&self.table)
                            .map_err(|e| DeltaError::table("write to", e))?
                            .with_target_file_size(self.spec.target_file_size.as_u64()),
                    )),
                };
                let cells: Vec<Vec<Cell>> = rows.into_iter().map(|(_, c)| c).collect();
                *n += cells.len() as u64;
                let batch = table::record_batch(&table::arrow_schema(columns), columns, &cells)
                    .map_err(|e| DeltaError::table("encode rows for", e))?;
                self.runtime
                    .block_on(writer.write(batch))
                    .map_err(|e| DeltaError::table("write to", e))?;
            }
        }
        self.stats.write_us_total += started.elapsed().as_micros() as u64;
        Ok(refused)
    }

    /// Commits what was written since the last commit, as of epoch `epoch`
    /// (the checkpoint's); then compacts if it is time.
    pub fn commit(&mut self, epoch: u64) -> Result<(), DeltaError> {
        let pending_rows = match &self.pending {
            Pending::Append { rows, .. } => *rows,
            Pending::Merge(buffer) => buffer.len() as u64,
        };
        if pending_rows == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        if let Some(txn) = &mut self.txn {
            // A commit whose answer was lost, or another process's.
            self.runtime
                .block_on(self.table.update_state())
                .map_err(|e| DeltaError::table("read", e))?;
            let version = self
                .runtime
                .block_on(version_of(&self.table, &txn.app_id))?;
            txn.recorded = txn.recorded.max(version);
            if epoch <= txn.recorded {
                tracing::info!(output = %self.name, epoch, recorded = txn.recorded, "the Delta table has these epochs already");
                self.discard();
                self.stats.epochs_skipped += 1;
                return Ok(());
            }
        }
        let properties = match &self.txn {
            Some(t) => CommitProperties::default()
                .with_application_transaction(Transaction::new(&t.app_id, epoch)),
            None => CommitProperties::default(),
        };
        match std::mem::replace(&mut self.pending, Pending::new(self.spec.mode)) {
            Pending::Append { writer, rows } => {
                let mut writer = writer.expect("rows were written");
                let adds = self
                    .runtime
                    .block_on(writer.flush())
                    .map_err(|e| DeltaError::table("write to", e))?;
                let actions = adds.into_iter().map(Action::Add).collect();
                let partition_by = Some(self.table_partitions()).filter(|p| !p.is_empty());
                let operation = DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by,
                    predicate: None,
                };
                let snapshot = self
                    .table
                    .snapshot()
                    .map_err(|e| DeltaError::table("read", e))?;
                let version = self
                    .runtime
                    .block_on(
                        CommitBuilder::from(properties)
                            .with_actions(actions)
                            .build(Some(snapshot), self.table.log_store(), operation)
                            .into_future(),
                    )
                    .map_err(|e| DeltaError::table("commit to", e))?
                    .version();
                self.runtime
                    .block_on(self.table.update_incremental(Some(version)))
                    .map_err(|e| DeltaError::table("read", e))?;
                self.stats.rows_written += rows;
            }
            Pending::Merge(buffer) => {
                let rows: Vec<Vec<Cell>> = buffer.into_values().collect();
                self.merge(&rows, properties)?;
                self.stats.rows_written += rows.len() as u64;
            }
        }
        if let Some(t) = &mut self.txn {
            t.recorded = epoch;
        }
        let us = started.elapsed().as_micros() as u64;
        self.stats.commits += 1;
        self.stats.table_version = self.table.version().unwrap_or(0);
        self.stats.last_commit_us = us;
        self.stats.commit_us_total += us;
        self.commits_since_optimize += 1;
        if self.spec.optimize_every > 0 && self.commits_since_optimize >= self.spec.optimize_every {
            self.commits_since_optimize = 0;
            self.optimize();
        }
        Ok(())
    }

    /// Compacts the table's small files. A failure (another writer's
    /// compaction at the same moment) is logged: the next one tries again.
    pub fn optimize(&mut self) {
        let target = NonZeroU64::new(self.spec.target_file_size.as_u64()).expect("validated");
        let done = self.runtime.block_on(
            self.table
                .clone()
                .optimize()
                .with_target_size(target)
                .into_future(),
        );
        match done {
            Ok((table, metrics)) => {
                self.table = table;
                self.stats.compactions += 1;
                self.stats.table_version = self.table.version().unwrap_or(0);
                tracing::info!(output = %self.name, files_removed = metrics.num_files_removed, files_added = metrics.num_files_added, "compacted the Delta table");
            }
            Err(e) => {
                tracing::warn!(output = %self.name, error = %e, "could not compact the Delta table; trying again later")
            }
        }
    }

    /// Drops what was written since the last commit (its files stay,
    /// unreferenced, for `VACUUM`).
    fn discard(&mut self) {
        if let Pending::Append {
            writer: Some(w), ..
        } = &mut self.pending
        {
            w.reset();
        }
        self.pending = Pending::new(self.spec.mode);
    }

    fn table_partitions(&self) -> Vec<String> {
        self.table
            .snapshot()
            .map(|s| s.metadata().partition_columns().to_vec())
            .unwrap_or_default()
    }

    /// Fixes the columns of a table this output creates without a spec
    /// schema: from the first record whose fields give one, creating the
    /// table. Records before it are refused by [`row_of`] (with the reason
    /// inference gave) while the columns are still unknown.
    fn infer_columns(&mut self, records: &[TableRecord<'_>]) -> Result<(), DeltaError> {
        let mut required: Vec<&str> = self.spec.partition_by.iter().map(String::as_str).collect();
        required.extend(self.spec.key.iter().map(String::as_str));
        let Some((columns, skipped)) = records
            .iter()
            .find_map(|r| row::infer("delta", r.value, &required).ok())
        else {
            return Ok(());
        };
        let table = std::mem::replace(&mut self.table, DeltaTable::new_in_memory());
        self.table = self
            .runtime
            .block_on(create(table, &self.spec, &self.s3, &columns))?;
        tracing::info!(
            output = %self.name,
            columns = %describe(Some(&columns)),
            skipped = ?skipped,
            "created the Delta table with the first record's fields; its schema is fixed from now on"
        );
        self.columns = Some(columns);
        Ok(())
    }

    /// Merges `rows` on the key, running the merge again when another
    /// writer's commit conflicts with it.
    fn merge(
        &mut self,
        rows: &[Vec<Cell>],
        properties: CommitProperties,
    ) -> Result<(), DeltaError> {
        let columns = self.columns.clone().expect("rows were written");
        let batch = table::record_batch(&table::arrow_schema(&columns), &columns, rows)
            .map_err(|e| DeltaError::table("encode rows for", e))?;
        let predicate = self
            .spec
            .key
            .iter()
            .map(|k| col(format!("target.{k}")).eq(col(format!("source.{k}"))))
            .reduce(Expr::and)
            .expect("validated: merge has a key");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let source = SessionContext::new()
                .read_batch(batch.clone())
                .map_err(|e| DeltaError::table("merge into", e.into()))?;
            let set = |c: &ColumnSpec| (c.name.clone(), col(format!("source.{}", c.name)));
            let merged = self
                .table
                .clone()
                .merge(source, predicate.clone())
                .with_source_alias("source")
                .with_target_alias("target")
                .with_commit_properties(properties.clone())
                .when_matched_update(|u| {
                    columns.iter().map(set).fold(u, |u, (c, e)| u.update(c, e))
                })
                .and_then(|m| {
                    m.when_not_matched_insert(|i| {
                        columns.iter().map(set).fold(i, |i, (c, e)| i.set(c, e))
                    })
                })
                .map_err(|e| DeltaError::table("merge into", e))?;
            match self.runtime.block_on(merged.into_future()) {
                Ok((table, _)) => {
                    self.table = table;
                    return Ok(());
                }
                Err(e) if conflicting(&e) && attempt < MERGE_ATTEMPTS => {
                    tracing::debug!(output = %self.name, attempt, error = %e, "the merge conflicted with another commit; merging again");
                    self.runtime
                        .block_on(self.table.update_state())
                        .map_err(|e| DeltaError::table("read", e))?;
                }
                Err(e) => return Err(DeltaError::table("merge into", e)),
            }
        }
    }
}

/// The runtime the table's I/O runs on (the run loop's thread drives it).
fn table_runtime() -> Result<tokio::runtime::Runtime, DeltaError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DeltaError::Table(format!("cannot start the table's runtime: {e}")))
}

/// The row of a record, or why it is refused.
fn row_of(
    columns: Option<&[ColumnSpec]>,
    spec: &DeltaSpec,
    r: &TableRecord<'_>,
) -> Result<Vec<Cell>, String> {
    let object = row::parse_object("delta", r.value)?;
    let Some(columns) = columns else {
        // No record of the batch gave a schema: this one's reason.
        let mut required: Vec<&str> = spec.partition_by.iter().map(String::as_str).collect();
        required.extend(spec.key.iter().map(String::as_str));
        return Err(row::infer("delta", r.value, &required)
            .err()
            .unwrap_or_else(|| "delta: no schema".to_owned()));
    };
    let mut cells = row::decode("delta", columns, object)?;
    for (cell, column) in cells.iter_mut().zip(columns) {
        if column.ty == ColumnType::TimestampMs
            && let Cell::I64(ms) = cell
        {
            *ms = ms.checked_mul(1000).ok_or_else(|| {
                format!(
                    "delta: field \"{}\": timestamp_ms out of Delta's range",
                    column.name
                )
            })?;
        }
    }
    Ok(cells)
}

/// Whether a commit failed because another writer committed first.
fn conflicting(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(_) | TransactionError::MaxCommitAttempts(_)
        } | DeltaTableError::VersionAlreadyExists(_)
    )
}

fn key_positions(columns: &[ColumnSpec], key: &[String]) -> Vec<usize> {
    key.iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k))
        .collect()
}

/// `name type, ...` of columns, or where they will come from.
fn describe(columns: Option<&[ColumnSpec]>) -> String {
    match columns {
        None => "columns inferred from the first record".to_owned(),
        Some(columns) => columns
            .iter()
            .map(|c| format!("{} {}", c.name, c.ty.name()))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The deepest existing directory at or above `path`, if it is writable.
fn writable_dir(path: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut dir = path;
    loop {
        if dir.is_dir() {
            let meta = std::fs::metadata(dir).ok()?;
            return (!meta.permissions().readonly()).then(|| dir.to_path_buf());
        }
        dir = dir.parent()?;
    }
}
