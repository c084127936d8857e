//! [`ParquetSink`]: records to rows, rows to files by partition, files
//! through the commit protocol of the module docs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use ::parquet::file::properties::WriterProperties;
use arrow::datatypes::SchemaRef;
use chrono::format::Item;

use super::config::{self, ColumnSpec, ParquetSpec};
use super::file::{self, FileRename, OpenFile, ROWS_PER_BATCH};
use super::row::{self, Cell};
use super::{ParquetCommit, ParquetError};
use crate::sink::TableRecord;

/// The columns once known, and where the partition field is among them.
#[derive(Debug)]
struct Fixed {
    columns: Vec<ColumnSpec>,
    arrow: SchemaRef,
    partition: Option<(usize, String)>,
    inferred: bool,
}

impl Fixed {
    fn new(columns: Vec<ColumnSpec>, field: Option<&str>, inferred: bool) -> Result<Self, String> {
        let partition = match field {
            None => None,
            Some(f) => {
                let i = columns.iter().position(|c| c.name == f).ok_or_else(|| {
                    format!("partition_by.field: \"{f}\" is not a column of the schema")
                })?;
                Some((i, f.to_owned()))
            }
        };
        Ok(Self {
            arrow: file::arrow_schema(&columns),
            columns,
            partition,
            inferred,
        })
    }
}

/// Writes one output's records to Parquet files; see the module docs.
#[derive(Debug)]
pub struct ParquetSink {
    name: String,
    root: PathBuf,
    /// What its file names start with after `part-` (a task's tag).
    tag: String,
    fixed: Option<Fixed>,
    partition_field: Option<String>,
    time: Option<Vec<Item<'static>>>,
    max_file_size: u64,
    max_file_age: Duration,
    props: WriterProperties,
    /// Open files by partition directory (relative, `""` for none).
    open: BTreeMap<String, OpenFile>,
    /// Per partition directory: the epoch its latest file was started in,
    /// and that file's `n`.
    started: HashMap<String, (u64, u32)>,
    last_epoch: u64,
    /// Directories that gained a file or a subdirectory since the last
    /// `prepare_commit`.
    unsynced: BTreeSet<PathBuf>,
    /// Closed files not yet published by `commit`.
    uncommitted: Vec<FileRename>,
}

impl ParquetSink {
    /// Opens the sink of output `name`. `recovered` is the commit stored in
    /// the newest valid checkpoint, if any: its renames are finished first,
    /// then every other temp file below `spec.path` is deleted (it holds
    /// work that never reached a checkpoint).
    pub fn open(
        name: &str,
        spec: &ParquetSpec,
        recovered: Option<&ParquetCommit>,
    ) -> Result<Self, ParquetError> {
        Self::open_tagged(name, spec, recovered, String::new())
    }

    /// Like [`Self::open`], for the task of source partition `task`: its
    /// files are named `part-t{task:05}-...` (`part-r{task:05}-...` for a
    /// task reading a repartition topic, `repartitioned`) and only its own
    /// temp files are swept, so the tasks of a pipeline share the output
    /// directory.
    pub fn open_for_task(
        name: &str,
        spec: &ParquetSpec,
        recovered: Option<&ParquetCommit>,
        task: i32,
        repartitioned: bool,
    ) -> Result<Self, ParquetError> {
        let stage = if repartitioned { 'r' } else { 't' };
        Self::open_tagged(name, spec, recovered, format!("{stage}{task:05}-"))
    }

    #[tracing::instrument(skip_all, fields(output = name, tag))]
    fn open_tagged(
        name: &str,
        spec: &ParquetSpec,
        recovered: Option<&ParquetCommit>,
        tag: String,
    ) -> Result<Self, ParquetError> {
        spec.validate().map_err(ParquetError::Spec)?;
        let root = spec.path.clone();
        if !root.is_dir() {
            std::fs::create_dir_all(&root)
                .map_err(|e| ParquetError::io("create the directory", &root, e))?;
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                file::sync_dir(parent)?;
            }
        }
        let partition_field = spec.partition_by.as_ref().and_then(|p| p.field.clone());
        let time = match spec.partition_by.as_ref().and_then(|p| p.time.as_deref()) {
            Some(pattern) => Some(
                config::time_items(pattern)
                    .map_err(|e| ParquetError::Spec(format!("partition_by.time: {e}")))?,
            ),
            None => None,
        };

        if let Some(commit) = recovered {
            let missing = file::publish(&root, &commit.files, false)?;
            for f in &missing {
                tracing::warn!(
                    file = %root.join(&f.to).display(),
                    "the checkpoint lists a file that exists under neither its temp nor its final name"
                );
            }
            tracing::info!(
                files = commit.files.len() - missing.len(),
                "published the files of the recovered checkpoint"
            );
        }
        let mut swept = file::Swept::default();
        file::sweep(&root, &tag, &mut swept)?;
        if swept.deleted > 0 {
            tracing::info!(
                deleted = swept.deleted,
                "deleted temp files of epochs after the last checkpoint"
            );
        }
        if recovered.is_none() && swept.visible > 0 {
            tracing::warn!(
                dir = %root.display(),
                files = swept.visible,
                "the directory holds files of an earlier run and there is no checkpoint: \
                 files of the same epochs will be overwritten"
            );
        }

        let fixed = match (&spec.schema, recovered.and_then(|c| c.schema.as_ref())) {
            (Some(columns), _) => Some((columns.clone(), false)),
            (None, Some(columns)) => Some((columns.clone(), true)),
            (None, None) => None,
        };
        let fixed = fixed
            .map(|(columns, inferred)| Fixed::new(columns, partition_field.as_deref(), inferred))
            .transpose()
            .map_err(ParquetError::Spec)?;
        Ok(Self {
            name: name.to_owned(),
            root,
            tag,
            fixed,
            partition_field,
            time,
            max_file_size: spec.max_file_size.as_u64(),
            max_file_age: spec.max_file_age,
            props: file::writer_properties(),
            open: BTreeMap::new(),
            started: HashMap::new(),
            last_epoch: 0,
            unsynced: BTreeSet::new(),
            uncommitted: Vec::new(),
        })
    }

    /// The columns: from the spec, the recovered checkpoint, or the first
    /// record; `None` until known.
    pub fn schema(&self) -> Option<&[ColumnSpec]> {
        self.fixed.as_ref().map(|f| f.columns.as_slice())
    }

    /// Appends the records of epoch `epoch` to temp files. Records that do
    /// not fit the schema are not written; they are returned as
    /// `(index, reason)` for the dead-letter topic.
    #[tracing::instrument(skip_all, fields(output = %self.name, epoch = epoch, records = records.len()))]
    pub fn write(
        &mut self,
        epoch: u64,
        records: &[TableRecord<'_>],
    ) -> Result<Vec<(u32, String)>, ParquetError> {
        if epoch < self.last_epoch {
            return Err(ParquetError::EpochOrder {
                epoch,
                last: self.last_epoch,
            });
        }
        self.last_epoch = epoch;
        self.roll_aged()?;
        let mut rejected = Vec::new();
        for r in records {
            match self.row_of(r) {
                Ok((dir, row)) => self.append(epoch, dir, row)?,
                Err(reason) => rejected.push((r.index, reason)),
            }
        }
        let dirs: Vec<String> = self.open.keys().cloned().collect();
        for dir in &dirs {
            self.flush_and_roll(dir)?;
        }
        tracing::debug!(
            written = records.len() - rejected.len(),
            rejected = rejected.len(),
            open_files = self.open.len(),
            "records written"
        );
        Ok(rejected)
    }

    /// Closes every open file (footer, fsync) under its temp name and
    /// returns the renames that make the files closed since the last
    /// [`commit`](Self::commit) visible. The caller makes a checkpoint
    /// holding it durable, then calls `commit`.
    #[tracing::instrument(skip_all, fields(output = %self.name))]
    pub fn prepare_commit(&mut self) -> Result<ParquetCommit, ParquetError> {
        for (_, f) in std::mem::take(&mut self.open) {
            self.close(f)?;
        }
        for dir in std::mem::take(&mut self.unsynced) {
            file::sync_dir(&dir)?;
        }
        // Only the current epoch can get more files.
        let last = self.last_epoch;
        self.started.retain(|_, (epoch, _)| *epoch == last);
        Ok(ParquetCommit {
            files: self.uncommitted.clone(),
            schema: self
                .fixed
                .as_ref()
                .filter(|f| f.inferred)
                .map(|f| f.columns.clone()),
        })
    }

    /// Renames the commit's files to their final names and fsyncs their
    /// directories. Idempotent.
    #[tracing::instrument(skip_all, fields(output = %self.name, files = commit.files.len()))]
    pub fn commit(&mut self, commit: &ParquetCommit) -> Result<(), ParquetError> {
        file::publish(&self.root, &commit.files, true)?;
        self.uncommitted.retain(|f| !commit.files.contains(f));
        Ok(())
    }

    /// The partition directory and row of a record, or why it is refused.
    fn row_of(&mut self, r: &TableRecord<'_>) -> Result<(String, Vec<Cell>), String> {
        let object = row::parse_object("parquet", r.value)?;
        if self.fixed.is_none() {
            let field = self.partition_field.as_deref();
            let (columns, skipped) = row::infer("parquet", r.value, field.as_slice())?;
            tracing::info!(
                output = %self.name,
                columns = %columns.iter().map(|c| format!("{}: {}", c.name, c.ty.name())).collect::<Vec<_>>().join(", "),
                skipped = ?skipped,
                "inferred the Parquet schema from the first record; it is fixed from now on"
            );
            self.fixed = Some(Fixed::new(columns, field, true)?);
        }
        let fixed = self.fixed.as_ref().expect("the schema was just fixed");
        let row = row::decode("parquet", &fixed.columns, object)?;
        let mut dir = match &fixed.partition {
            Some((i, name)) => row::field_dir(name, &row[*i]),
            None => String::new(),
        };
        if let Some(items) = &self.time {
            let time = row::time_dir(items, r.window_start, r.timestamp)?;
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(&time);
        }
        Ok((dir, row))
    }

    fn append(&mut self, epoch: u64, dir: String, row: Vec<Cell>) -> Result<(), ParquetError> {
        if !self.open.contains_key(&dir) {
            let file = self.start(epoch, &dir)?;
            self.open.insert(dir.clone(), file);
        }
        let file = self.open.get_mut(&dir).expect("the file was just opened");
        file.append(row);
        if file.buffered() >= ROWS_PER_BATCH {
            self.flush_and_roll(&dir)?;
        }
        Ok(())
    }

    /// Starts the next file of partition directory `dir` in `epoch`.
    fn start(&mut self, epoch: u64, dir: &str) -> Result<OpenFile, ParquetError> {
        let n = match self.started.get_mut(dir) {
            Some((e, n)) if *e == epoch => {
                *n += 1;
                *n
            }
            _ => {
                self.started.insert(dir.to_owned(), (epoch, 0));
                0
            }
        };
        let path = self.root.join(dir);
        if !dir.is_empty() {
            std::fs::create_dir_all(&path)
                .map_err(|e| ParquetError::io("create the directory", &path, e))?;
        }
        // The file's entry, and those of any new partition directories.
        let mut d = path.as_path();
        while self.unsynced.insert(d.to_owned()) && d != self.root {
            match d.parent() {
                Some(parent) => d = parent,
                None => break,
            }
        }
        let fixed = self
            .fixed
            .as_ref()
            .expect("rows exist only once the schema is fixed");
        OpenFile::create(
            &self.root,
            FileRename::tagged(dir, &self.tag, epoch, n),
            &fixed.columns,
            &fixed.arrow,
            &self.props,
        )
    }

    /// Encodes the buffered rows of `dir`'s file; closes it if big enough.
    fn flush_and_roll(&mut self, dir: &str) -> Result<(), ParquetError> {
        let Some(file) = self.open.get_mut(dir) else {
            return Ok(());
        };
        file.flush_rows()?;
        if file.size() >= self.max_file_size
            && let Some(file) = self.open.remove(dir)
        {
            self.close(file)?;
        }
        Ok(())
    }

    fn roll_aged(&mut self) -> Result<(), ParquetError> {
        let aged: Vec<String> = self
            .open
            .iter()
            .filter(|(_, f)| f.opened.elapsed() >= self.max_file_age)
            .map(|(dir, _)| dir.clone())
            .collect();
        for dir in aged {
            if let Some(file) = self.open.remove(&dir) {
                self.close(file)?;
            }
        }
        Ok(())
    }

    fn close(&mut self, file: OpenFile) -> Result<(), ParquetError> {
        let rename = file.close()?;
        tracing::debug!(output = %self.name, file = %rename.from, "closed a Parquet file");
        self.uncommitted.push(rename);
        Ok(())
    }
}
