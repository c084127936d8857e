//! Where a Delta output's table is: found (or created) in a directory or
//! in S3-compatible object storage, its columns added, and the `txn`
//! version of an application read from its log.

use std::sync::Arc;

use deltalake_core::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
};
use deltalake_core::protocol::SaveMode;
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError, ensure_table_uri};

use super::{DeltaError, table};
use crate::spec::delta::DeltaSpec;
use crate::spec::parquet::ColumnSpec;
use crate::spec::{S3_SCHEME, S3Spec};

/// The table at `spec.path` (`version()` is `None` when there is none yet);
/// with `create_dir`, the directory is created when missing.
pub(super) async fn load(
    spec: &DeltaSpec,
    s3: &S3Spec,
    create_dir: bool,
) -> Result<DeltaTable, DeltaError> {
    if let Some(url) = spec.s3_url() {
        return load_s3(url, s3).await;
    }
    let path = spec
        .path
        .to_str()
        .ok_or_else(|| DeltaError::Table(format!("path: {} is not UTF-8", spec.path.display())))?;
    let url = if create_dir {
        ensure_table_uri(path).map_err(|e| DeltaError::table("open", e))?
    } else {
        let abs = std::fs::canonicalize(&spec.path)
            .map_err(|e| DeltaError::Table(format!("path: {}: {e}", spec.path.display())))?;
        url::Url::from_directory_path(abs)
            .map_err(|()| DeltaError::Table(format!("path: {} is not absolute", path)))?
    };
    let table = DeltaTableBuilder::from_url(url)
        .and_then(|b| b.build())
        .map_err(|e| DeltaError::table("open", e))?;
    load_log(table).await
}

/// The table at `s3://bucket/prefix`, through a client with the
/// checkpoint's S3 settings; commits are conditional puts (a version is
/// written only if it does not exist), as checkpoints' owner objects are.
async fn load_s3(url: &str, s3: &S3Spec) -> Result<DeltaTable, DeltaError> {
    let bad = |e: String| DeltaError::Table(format!("path: {url}: {e}"));
    let table_url = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let bucket = table_url.host_str().unwrap_or_default().to_owned();
    let store = s3
        .builder(&bucket)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let root = url::Url::parse(&format!("{S3_SCHEME}{bucket}")).map_err(|e| bad(e.to_string()))?;
    let scheme = url::Url::parse(S3_SCHEME).map_err(|e| bad(e.to_string()))?;
    deltalake_core::logstore::logstore_factories().insert(scheme, Arc::new(S3LogStores));
    let table = DeltaTableBuilder::from_url(table_url)
        .map(|b| b.with_storage_backend(Arc::new(store), root))
        .and_then(|b| b.build())
        .map_err(|e| DeltaError::table("open", e))?;
    load_log(table).await
}

/// The log stores of tables in S3: delta-rs's default one, whose commits
/// are conditional puts.
#[derive(Debug)]
struct S3LogStores;

impl LogStoreFactory for S3LogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &url::Url,
        options: &StorageConfig,
    ) -> deltalake_core::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Reads the table's log (`version()` stays `None` without one).
async fn load_log(mut table: DeltaTable) -> Result<DeltaTable, DeltaError> {
    // Looked for first: loading a missing log logs an error.
    if !table
        .verify_deltatable_existence()
        .await
        .map_err(|e| DeltaError::table("open", e))?
    {
        return Ok(table);
    }
    match table.load().await {
        Ok(()) | Err(DeltaTableError::NotATable(_)) => Ok(table),
        Err(e) => Err(DeltaError::table("open", e)),
    }
}

/// Creates the table with `columns`; another task that created it at the
/// same moment wins, and its table is used (checked like any existing one).
pub(super) async fn create(
    table: DeltaTable,
    spec: &DeltaSpec,
    s3: &S3Spec,
    columns: &[ColumnSpec],
) -> Result<DeltaTable, DeltaError> {
    let created = table
        .create()
        .with_columns(table::fields(columns))
        .with_partition_columns(spec.partition_by.clone())
        .with_save_mode(SaveMode::Ignore)
        .into_future()
        .await;
    match created {
        Ok(t) => Ok(t),
        Err(e) => {
            let again = load(spec, s3, false).await?;
            if again.version().is_none() {
                return Err(DeltaError::table("create", e));
            }
            table::match_columns(&again, spec)?;
            Ok(again)
        }
    }
}

pub(super) async fn add_columns(
    table: DeltaTable,
    missing: &[ColumnSpec],
) -> Result<DeltaTable, DeltaError> {
    table
        .add_columns()
        .with_fields(table::fields(missing))
        .into_future()
        .await
        .map_err(|e| DeltaError::table("add columns to", e))
}

/// The `txn` version of `app_id` in the table (-1: none).
pub(super) async fn version_of(table: &DeltaTable, app_id: &str) -> Result<i64, DeltaError> {
    let Ok(snapshot) = table.snapshot() else {
        return Ok(-1);
    };
    Ok(snapshot
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(|e| DeltaError::table("read", e))?
        .unwrap_or(-1))
}
