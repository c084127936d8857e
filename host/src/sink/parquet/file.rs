//! One Parquet file being written under its temp name, file names, and the
//! file-system steps of the commit protocol (rename, fsync, sweep).

use std::fs::{self, File};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ::parquet::arrow::ArrowWriter;
use ::parquet::basic::Compression;
use ::parquet::file::properties::WriterProperties;
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::ParquetError;
use super::config::{ColumnSpec, ColumnType};
use super::row::Cell;

/// Rows buffered in builders before they are handed to the Parquet writer
/// as one record batch; bounds memory and is when the size limit is checked.
pub(super) const ROWS_PER_BATCH: usize = 8192;

/// Upper bound of a row group in memory before it is encoded to the file.
const MAX_ROW_GROUP_BYTES: usize = 64 * 1024 * 1024;

const TEMP_PREFIX: &str = ".part-";
const TEMP_SUFFIX: &str = ".parquet.inprogress";

/// A file closed under its temp name, and the name that makes it visible.
/// Both are relative to the sink's directory, with `/` separators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRename {
    pub from: String,
    pub to: String,
}

impl FileRename {
    /// The temp and final names of the `n`th file started in `epoch` in
    /// partition directory `dir` (`""` for none): `part-{epoch:012}-{n:04}.parquet`.
    #[cfg(test)]
    pub(super) fn new(dir: &str, epoch: u64, n: u32) -> Self {
        Self::tagged(dir, "", epoch, n)
    }

    /// Like [`Self::new`], with `tag` after `part-` (a task's files).
    pub(super) fn tagged(dir: &str, tag: &str, epoch: u64, n: u32) -> Self {
        let name = format!("part-{tag}{epoch:012}-{n:04}");
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        Self {
            from: format!("{prefix}.{name}{TEMP_SUFFIX}"),
            to: format!("{prefix}{name}.parquet"),
        }
    }
}

/// `rel` (from a checkpoint) below `root`, refusing paths that leave it.
pub(super) fn resolve(root: &Path, rel: &str) -> Result<PathBuf, ParquetError> {
    let path = Path::new(rel);
    if rel.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(ParquetError::Spec(format!(
            "the checkpoint names the file \"{rel}\", which is not a path inside {}",
            root.display()
        )));
    }
    Ok(root.join(path))
}

pub(super) fn arrow_schema(columns: &[ColumnSpec]) -> SchemaRef {
    crate::sink::row::arrow_schema(columns, TimeUnit::Millisecond)
}

pub(super) fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_bytes(Some(MAX_ROW_GROUP_BYTES))
        .build()
}

#[derive(Debug)]
enum ColumnBuilder {
    Str(StringBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMillisecondBuilder),
}

impl ColumnBuilder {
    fn new(ty: ColumnType) -> Self {
        match ty {
            ColumnType::String => Self::Str(StringBuilder::new()),
            ColumnType::Int64 => Self::I64(Int64Builder::new()),
            ColumnType::Float64 => Self::F64(Float64Builder::new()),
            ColumnType::Bool => Self::Bool(BooleanBuilder::new()),
            ColumnType::TimestampMs => {
                Self::Ts(TimestampMillisecondBuilder::new().with_timezone("UTC"))
            }
        }
    }

    fn append(&mut self, cell: Cell) {
        match (self, cell) {
            (Self::Str(b), Cell::Str(s)) => b.append_value(s),
            (Self::I64(b), Cell::I64(i)) => b.append_value(i),
            (Self::Ts(b), Cell::I64(i)) => b.append_value(i),
            (Self::F64(b), Cell::F64(x)) => b.append_value(x),
            (Self::Bool(b), Cell::Bool(x)) => b.append_value(x),
            (Self::Str(b), Cell::Null) => b.append_null(),
            (Self::I64(b), Cell::Null) => b.append_null(),
            (Self::Ts(b), Cell::Null) => b.append_null(),
            (Self::F64(b), Cell::Null) => b.append_null(),
            (Self::Bool(b), Cell::Null) => b.append_null(),
            (b, cell) => unreachable!("row::decode made a {cell:?} for column {b:?}"),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Str(b) => Arc::new(b.finish()),
            Self::I64(b) => Arc::new(b.finish()),
            Self::F64(b) => Arc::new(b.finish()),
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Ts(b) => Arc::new(b.finish()),
        }
    }
}

/// A file being written under its temp name.
#[derive(Debug)]
pub(super) struct OpenFile {
    pub(super) rename: FileRename,
    path: PathBuf,
    schema: SchemaRef,
    writer: ArrowWriter<File>,
    builders: Vec<ColumnBuilder>,
    /// Rows in `builders`, not yet handed to `writer`.
    buffered: usize,
    pub(super) opened: Instant,
}

impl OpenFile {
    /// Creates (or truncates, on a replay) the temp file of `rename`.
    pub(super) fn create(
        root: &Path,
        rename: FileRename,
        columns: &[ColumnSpec],
        schema: &SchemaRef,
        props: &WriterProperties,
    ) -> Result<Self, ParquetError> {
        let path = root.join(&rename.from);
        let file = File::create(&path).map_err(|e| ParquetError::io("create", &path, e))?;
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props.clone()))
            .map_err(|e| ParquetError::encode("start", &path, e))?;
        Ok(Self {
            rename,
            path,
            schema: schema.clone(),
            writer,
            builders: columns.iter().map(|c| ColumnBuilder::new(c.ty)).collect(),
            buffered: 0,
            opened: Instant::now(),
        })
    }

    /// Buffers one row; its cells have the types of the columns.
    pub(super) fn append(&mut self, row: Vec<Cell>) {
        for (builder, cell) in self.builders.iter_mut().zip(row) {
            builder.append(cell);
        }
        self.buffered += 1;
    }

    pub(super) fn buffered(&self) -> usize {
        self.buffered
    }

    /// Hands the buffered rows to the Parquet writer as one record batch.
    pub(super) fn flush_rows(&mut self) -> Result<(), ParquetError> {
        if self.buffered == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect();
        self.buffered = 0;
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| ParquetError::encode("encode rows for", &self.path, e.into()))?;
        self.writer
            .write(&batch)
            .map_err(|e| ParquetError::encode("write", &self.path, e))
    }

    /// Encoded bytes so far: written, plus the row group in progress
    /// (rows still in builders are not counted).
    pub(super) fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    /// Writes the remaining rows and the footer, and fsyncs the file.
    pub(super) fn close(mut self) -> Result<FileRename, ParquetError> {
        self.flush_rows()?;
        self.writer
            .finish()
            .map_err(|e| ParquetError::encode("finish", &self.path, e))?;
        self.writer
            .inner()
            .sync_all()
            .map_err(|e| ParquetError::io("fsync", &self.path, e))?;
        Ok(self.rename)
    }
}

/// Makes the entries of a directory (created, renamed or deleted files)
/// durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), ParquetError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ParquetError::io("fsync the directory", dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Renames each file from its temp name to its final one, then fsyncs the
/// directories. A file already renamed is fine. A file under neither name
/// is an error when `strict`, else it is skipped and returned.
pub(super) fn publish(
    root: &Path,
    files: &[FileRename],
    strict: bool,
) -> Result<Vec<FileRename>, ParquetError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut missing = Vec::new();
    for f in files {
        let (from, to) = (resolve(root, &f.from)?, resolve(root, &f.to)?);
        match fs::rename(&from, &to) {
            Ok(()) => {
                let dir = to.parent().unwrap_or(root).to_path_buf();
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && to.is_file() => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && !strict => missing.push(f.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ParquetError::Missing { from, to });
            }
            Err(e) => return Err(ParquetError::io("rename", &from, e)),
        }
    }
    for dir in &dirs {
        sync_dir(dir)?;
    }
    Ok(missing)
}

/// What [`sweep`] found in a sink's directory tree.
#[derive(Debug, Default)]
pub(super) struct Swept {
    /// Temp files deleted.
    pub(super) deleted: usize,
    /// Visible `part-*.parquet` files.
    pub(super) visible: usize,
}

/// Deletes every temp file below `dir` whose name has `tag` after
/// `.part-`, and (with no tag: the only writer of the tree) directories
/// left empty by that; counts the visible part files of that tag. A task
/// leaves empty directories alone: another task may be about to write in
/// them.
pub(super) fn sweep(dir: &Path, tag: &str, swept: &mut Swept) -> Result<(), ParquetError> {
    let entries = fs::read_dir(dir).map_err(|e| ParquetError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ParquetError::io("list", dir, e))?;
        let path = entry.path();
        let ty = entry
            .file_type()
            .map_err(|e| ParquetError::io("inspect", &path, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if ty.is_dir() {
            let before = swept.deleted;
            sweep(&path, tag, swept)?;
            if tag.is_empty() && swept.deleted > before && is_empty_dir(&path) {
                // Left by a partition whose only files were temp ones.
                fs::remove_dir(&path).map_err(|e| ParquetError::io("remove", &path, e))?;
            }
        } else if ty.is_file()
            && name
                .strip_prefix(TEMP_PREFIX)
                .is_some_and(|rest| rest.starts_with(tag))
            && name.ends_with(TEMP_SUFFIX)
        {
            fs::remove_file(&path).map_err(|e| ParquetError::io("delete", &path, e))?;
            swept.deleted += 1;
        } else if ty.is_file()
            && name
                .strip_prefix("part-")
                .is_some_and(|rest| rest.starts_with(tag))
            && name.ends_with(".parquet")
        {
            swept.visible += 1;
        }
    }
    Ok(())
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}
