//! The PostgreSQL schema (`schema/postgres/`): versioned, created on first start.
//!
//! Several nodes may start at once on an empty database: the version is read and the schema
//! applied under a session advisory lock, in one transaction, so exactly one of them creates it.
//! A database newer than this binary is refused; an older one is brought up to date by the
//! steps of [`MIGRATIONS`], in the same transaction.

use anyhow::Context;
use tokio_postgres::{Client, Config};

use super::tls::Target;

/// Version 1: the schema as first shipped.
pub const SCHEMA: &str = include_str!("../../../schema/postgres/v1.sql");
/// The version this binary runs on: [`SCHEMA`] and then every step of [`MIGRATIONS`].
pub const SCHEMA_VERSION: i32 = 2;
/// Steps from the version before each to it, in order. A new database gets version 1 and then
/// every step, so it is built exactly like an upgraded one.
const MIGRATIONS: &[(i32, &str)] = &[(2, include_str!("../../../schema/postgres/v2.sql"))];

/// The advisory lock key that serialises schema changes across nodes.
const SCHEMA_LOCK: i64 = 0x666f_6f74_0001;

/// Where `config` points, without its password: for messages.
pub fn describe(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default)");
    format!("{host}:{port}/{db}")
}

/// Connects to the database, creating it when the server has none by that name, and brings
/// its schema to [`SCHEMA_VERSION`].
pub async fn prepare(target: &Target) -> anyhow::Result<()> {
    let config = &target.config;
    let client = match target.connect().await {
        Ok(client) => client,
        Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) => {
            create_database(target).await?;
            target.connect().await.map_err(|e| flat(config, e))?
        }
        Err(err) => return Err(flat(config, err)),
    };
    migrate(&client).await
}

/// One line saying why `config` could not be used.
fn flat(config: &Config, err: tokio_postgres::Error) -> anyhow::Error {
    let cause = match err.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    };
    anyhow::anyhow!(
        "cannot connect to PostgreSQL at {}: {cause}",
        describe(config)
    )
}

/// Creates the database `config` names, connected to the server's `postgres` database.
async fn create_database(target: &Target) -> anyhow::Result<()> {
    let config = &target.config;
    let name = config.get_dbname().context("no database name")?.to_owned();
    let mut admin = target.clone();
    admin.config.dbname("postgres");
    let client = (admin.connect().await).map_err(|e| flat(&admin.config, e))?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
    {
        Ok(()) => {
            tracing::info!(database = %name, "created the PostgreSQL database");
            Ok(())
        }
        // Another node created it first.
        Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
            Ok(())
        }
        Err(err) => Err(flat(config, err)),
    }
}

/// Applies the schema or its migrations under the schema lock.
async fn migrate(client: &Client) -> anyhow::Result<()> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK])
        .await?;
    let result = async {
        let exists: bool = client
            .query_one("SELECT to_regclass('footfall_schema') IS NOT NULL", &[])
            .await?
            .get(0);
        let version: i32 = if exists {
            client
                .query_one("SELECT version FROM footfall_schema", &[])
                .await?
                .get(0)
        } else {
            0
        };
        if version > SCHEMA_VERSION {
            anyhow::bail!(
                "the database has schema version {version}, newer than this footfall ({SCHEMA_VERSION})"
            );
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        let mut script = String::from("BEGIN;\n");
        if version == 0 {
            script.push_str(SCHEMA);
            script.push_str("\nCREATE TABLE footfall_schema (version integer NOT NULL);\n");
            script.push_str("INSERT INTO footfall_schema VALUES (1);\n");
        }
        for (to, step) in MIGRATIONS.iter().filter(|(to, _)| *to > version.max(1)) {
            if version > 0 {
                tracing::info!(from = to - 1, to, "migrating the PostgreSQL schema");
            }
            script.push_str(step);
            script.push_str(&format!("\nUPDATE footfall_schema SET version = {to};\n"));
        }
        script.push_str("COMMIT;");
        client
            .batch_execute(&script)
            .await
            .context("cannot apply the PostgreSQL schema")?;
        Ok(())
    }
    .await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK])
        .await;
    result
}
