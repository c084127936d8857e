//! The table a PostgreSQL output writes: which columns, of which types,
//! found in the database's catalog (or created from the spec's schema),
//! and the statements that write them.

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::PostgresError;
use crate::spec::parquet::{ColumnSpec, ColumnType};
use crate::spec::postgres::{PostgresSpec, WriteMode};

/// An identifier quoted for SQL: any name the catalog holds is safe in a
/// statement.
pub(super) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The upsert key's columns, quoted as the table has them.
fn key_columns(spec: &PostgresSpec) -> Vec<String> {
    spec.key
        .iter()
        .map(|k| quote(&k.to_ascii_lowercase()))
        .collect()
}

/// One column written: the JSON field it is read from, its name in the
/// table (folded to lowercase when it came from the spec) and its type.
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub spec: ColumnSpec,
    pub sql_name: String,
}

/// The target table, resolved.
#[derive(Debug)]
pub(super) struct Table {
    /// `"schema"."table"`.
    pub qualified: String,
    /// `"schema"`, where the exactly-once bookkeeping tables go too.
    pub schema: String,
    pub columns: Vec<Column>,
    /// Whether it was created by this call.
    pub created: bool,
}

impl Table {
    /// The columns as the row decoder wants them.
    pub fn specs(&self) -> Vec<ColumnSpec> {
        self.columns.iter().map(|c| c.spec.clone()).collect()
    }

    /// `INSERT INTO t (cols) SELECT * FROM unnest($1::text[], ...)`, with
    /// `ON CONFLICT (key) DO UPDATE` for upserts: one statement per batch,
    /// each column one array parameter.
    pub fn insert_statement(&self, spec: &PostgresSpec) -> String {
        let names: Vec<String> = self.columns.iter().map(|c| quote(&c.sql_name)).collect();
        let arrays: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::{}[]", i + 1, array_type(c.spec.ty)))
            .collect();
        let mut sql = format!(
            "INSERT INTO {} ({}) SELECT * FROM unnest({})",
            self.qualified,
            names.join(", "),
            arrays.join(", ")
        );
        if spec.mode == WriteMode::Upsert {
            let key = key_columns(spec);
            let rest: Vec<String> = self
                .columns
                .iter()
                .filter(|c| !spec.key.iter().any(|k| k.eq_ignore_ascii_case(&c.sql_name)))
                .map(|c| format!("{0} = EXCLUDED.{0}", quote(&c.sql_name)))
                .collect();
            if rest.is_empty() {
                sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", key.join(", ")));
            } else {
                sql.push_str(&format!(
                    " ON CONFLICT ({}) DO UPDATE SET {}",
                    key.join(", "),
                    rest.join(", ")
                ));
            }
        }
        sql
    }
}

/// The element type of a column's array parameter.
fn array_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::String => "text",
        ColumnType::Int64 => "int8",
        ColumnType::Float64 => "float8",
        ColumnType::Bool => "bool",
        ColumnType::TimestampMs => "timestamptz",
    }
}

/// The SQL type a column of the spec's schema is created with.
fn create_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::String => "text",
        ColumnType::Int64 => "bigint",
        ColumnType::Float64 => "double precision",
        ColumnType::Bool => "boolean",
        ColumnType::TimestampMs => "timestamptz",
    }
}

/// The column type a table column of type `typname` is written as, if
/// Sluice can write it.
fn column_type(typname: &str) -> Option<ColumnType> {
    Some(match typname {
        "text" | "varchar" | "bpchar" | "name" | "citext" => ColumnType::String,
        "int2" | "int4" | "int8" => ColumnType::Int64,
        "float4" | "float8" | "numeric" => ColumnType::Float64,
        "bool" => ColumnType::Bool,
        "timestamp" | "timestamptz" => ColumnType::TimestampMs,
        _ => return None,
    })
}

/// A column of the table as the catalog has it.
#[derive(Debug)]
struct Catalog {
    name: String,
    typname: String,
    nullable: bool,
    /// A default, an identity or a generated column: the database fills it.
    filled: bool,
}

const CATALOG: &str = "SELECT a.attname::text, t.typname::text, NOT a.attnotnull, \
     (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '') \
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
     WHERE a.attrelid = to_regclass($1)::oid AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY a.attnum";

const UNIQUE_ON: &str = "SELECT EXISTS (SELECT 1 FROM pg_index i \
     WHERE i.indrelid = to_regclass($1)::oid AND i.indisunique AND i.indpred IS NULL \
     AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a \
          WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = $2::text[])";

/// Finds the table of `spec` (creating it from the spec's schema when it
/// is missing and `create`), and the columns to write; or why it cannot be
/// written.
pub(super) async fn resolve(
    client: &Client,
    spec: &PostgresSpec,
    create: bool,
) -> Result<Table, PostgresError> {
    let (schema, name) = spec.table_name();
    let qualified = format!("{}.{}", quote(&schema), quote(&name));
    let mut catalog = read_catalog(client, &qualified).await?;
    let mut created = false;
    if catalog.is_empty() {
        let Some(columns) = &spec.schema else {
            return Err(PostgresError::Table(format!(
                "table {schema}.{name} does not exist: create it, or give the output a `schema` \
                 to create it from"
            )));
        };
        if !create {
            let columns = columns
                .iter()
                .map(|c| Column {
                    sql_name: c.name.to_ascii_lowercase(),
                    spec: c.clone(),
                })
                .collect();
            return Ok(Table {
                qualified,
                schema: quote(&schema),
                columns,
                created: false,
            });
        }
        let mut defs: Vec<String> = columns
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}",
                    quote(&c.name.to_ascii_lowercase()),
                    create_type(c.ty),
                    if c.nullable { "" } else { " NOT NULL" }
                )
            })
            .collect();
        if spec.mode == WriteMode::Upsert {
            let key = key_columns(spec);
            defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
        }
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {qualified} ({})",
            defs.join(", ")
        );
        match client.batch_execute(&ddl).await {
            Ok(()) => {
                tracing::info!(table = %qualified, "created the output table from the spec's schema");
                created = true;
            }
            // Another task of the pipeline created it at the same moment
            // (IF NOT EXISTS does not cover a race): it is there now.
            Err(e)
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                    || e.code() == Some(&SqlState::DUPLICATE_TABLE) => {}
            Err(e) => return Err(PostgresError::from_db("create the table", e)),
        }
        catalog = read_catalog(client, &qualified).await?;
    }
    let columns = match &spec.schema {
        Some(schema) => check_schema(schema, &catalog)?,
        None => from_catalog(&catalog)?,
    };
    let table = Table {
        qualified,
        schema: quote(&schema),
        columns,
        created,
    };
    if spec.mode == WriteMode::Upsert {
        for (i, k) in spec.key.iter().enumerate() {
            if !table
                .columns
                .iter()
                .any(|c| c.sql_name.eq_ignore_ascii_case(k))
            {
                return Err(PostgresError::Table(format!(
                    "key[{i}]: \"{k}\" is not a column written to the table"
                )));
            }
        }
        let mut key: Vec<String> = spec.key.iter().map(|k| k.to_ascii_lowercase()).collect();
        key.sort();
        let unique: bool = client
            .query_one(UNIQUE_ON, &[&table.qualified, &key])
            .await
            .map_err(|e| PostgresError::from_db("read the table's indexes", e))?
            .get(0);
        if !unique {
            return Err(PostgresError::Table(format!(
                "key: table {schema}.{name} has no primary key or unique index on exactly ({}); \
                 upserts need one",
                spec.key.join(", ")
            )));
        }
    }
    Ok(table)
}

async fn read_catalog(client: &Client, qualified: &str) -> Result<Vec<Catalog>, PostgresError> {
    let rows = client
        .query(CATALOG, &[&qualified])
        .await
        .map_err(|e| PostgresError::from_db("read the table's columns", e))?;
    Ok(rows
        .iter()
        .map(|r| Catalog {
            name: r.get(0),
            typname: r.get(1),
            nullable: r.get(2),
            filled: r.get(3),
        })
        .collect())
}

/// Without a schema in the spec: every column the database does not fill.
fn from_catalog(catalog: &[Catalog]) -> Result<Vec<Column>, PostgresError> {
    let mut columns = Vec::new();
    for c in catalog.iter().filter(|c| !c.filled) {
        let ty = column_type(&c.typname).ok_or_else(|| {
            PostgresError::Table(format!(
                "column \"{}\" has type {}, which Sluice cannot write (text, varchar, integers, \
                 float, numeric, boolean, timestamp[tz]); give it a default, or list the columns \
                 to write in `schema`",
                c.name, c.typname
            ))
        })?;
        columns.push(Column {
            spec: ColumnSpec {
                name: c.name.clone(),
                ty,
                nullable: c.nullable,
            },
            sql_name: c.name.clone(),
        });
    }
    if columns.is_empty() {
        return Err(PostgresError::Table(
            "the table has no column without a default to write; list the columns in `schema`"
                .to_owned(),
        ));
    }
    Ok(columns)
}

/// With a schema in the spec: its columns, each checked against the
/// table's, and every column left out filled by the database or nullable.
fn check_schema(schema: &[ColumnSpec], catalog: &[Catalog]) -> Result<Vec<Column>, PostgresError> {
    let mut columns = Vec::new();
    for (i, c) in schema.iter().enumerate() {
        let sql_name = c.name.to_ascii_lowercase();
        let Some(found) = catalog.iter().find(|t| t.name == sql_name) else {
            return Err(PostgresError::Table(format!(
                "schema[{i}]: the table has no column \"{sql_name}\""
            )));
        };
        if column_type(&found.typname) != Some(c.ty) {
            return Err(PostgresError::Table(format!(
                "schema[{i}]: column \"{sql_name}\" is {} in the table; a {} field cannot be \
                 written to it",
                found.typname,
                c.ty.name()
            )));
        }
        if c.nullable && !found.nullable {
            return Err(PostgresError::Table(format!(
                "schema[{i}]: column \"{sql_name}\" is NOT NULL in the table; drop `nullable: true`"
            )));
        }
        columns.push(Column {
            spec: c.clone(),
            sql_name,
        });
    }
    if let Some(left) = catalog
        .iter()
        .find(|t| !t.nullable && !t.filled && !columns.iter().any(|c| c.sql_name == t.name))
    {
        return Err(PostgresError::Table(format!(
            "column \"{}\" is NOT NULL without a default and not in `schema`: every insert would fail",
            left.name
        )));
    }
    Ok(columns)
}
