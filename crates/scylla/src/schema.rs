//! Schema migrations: the keyspace and every table, created at start-up.
//!
//! [`migrate`] creates the keyspace when it is missing, then applies the
//! numbered [`Migration`]s that the keyspace's `schema_migrations` table does
//! not list yet, in order, recording each one after its statements ran. Every
//! statement is idempotent (`IF NOT EXISTS`), so a step interrupted half-way
//! is simply run again by the next start, and two processes starting at once
//! converge on the same schema. A keyspace that lists a version newer than
//! this build knows is refused: an old binary must not write to a schema it
//! does not understand.
//!
//! The tables and why they look the way they do are described in
//! `docs/scylla.md`.

use scylla::client::session::Session;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};

use crate::{ScyllaConfig, ScyllaError};

/// The newest schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = 12;

/// `gc_grace_seconds` of the time-series tables: three hours, the default
/// hinted-handoff window. These tables are never deleted from (only TTLs
/// expire), so tombstones cannot be resurrected by a late repair and need
/// not be kept for the default ten days.
const TIME_SERIES_GC_GRACE_SECS: u32 = 3 * 3600;

/// One numbered, idempotent schema step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Its number; steps run in increasing order, each once per keyspace.
    pub version: i32,
    /// What it does, stored next to the version.
    pub description: &'static str,
    /// CQL statements, run in order; each is idempotent.
    pub statements: Vec<String>,
}

/// The `CREATE KEYSPACE` statement. With `vnodes` the keyspace opts out of
/// ScyllaDB's tablets, which do not support the lightweight transactions the
/// registry's conditional writes need; servers that predate tablets (and
/// Cassandra) do not know the option, and get the statement without it.
pub fn create_keyspace_cql(config: &ScyllaConfig, vnodes: bool) -> String {
    let mut cql = format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {} AND durable_writes = true",
        config.keyspace,
        config.replication.to_cql()
    );
    if vnodes {
        cql.push_str(" AND tablets = {'enabled': false}");
    }
    cql
}

/// The `schema_migrations` table that records applied versions.
pub fn create_migrations_table_cql(keyspace: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations (\
         version int PRIMARY KEY, description text, applied_at_ms bigint)"
    )
}

/// Every migration, oldest first.
pub fn migrations(config: &ScyllaConfig) -> Vec<Migration> {
    let ks = &config.keyspace;
    let gc = TIME_SERIES_GC_GRACE_SECS;
    vec![
        Migration {
            version: 1,
            description: "time series: points, series_days, series",
            statements: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.points (\
                     tenant text, device text, metric text, day int, ts bigint, \
                     kind tinyint, f double, i bigint, b boolean, s text, \
                     PRIMARY KEY ((tenant, device, metric, day), ts)) \
                     WITH CLUSTERING ORDER BY (ts DESC) \
                     AND compaction = {{'class': 'TimeWindowCompactionStrategy', \
                     'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}} \
                     AND default_time_to_live = {ttl} \
                     AND gc_grace_seconds = {gc}",
                    ttl = config.default_ttl_secs()
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.series_days (\
                     tenant text, device text, metric text, day int, \
                     PRIMARY KEY ((tenant, device, metric), day)) \
                     WITH CLUSTERING ORDER BY (day DESC) \
                     AND gc_grace_seconds = {gc}"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.series (\
                     tenant text, device text, metric text, \
                     PRIMARY KEY ((tenant, device), metric))"
                ),
            ],
        },
        Migration {
            version: 2,
            description: "registry: tenants, devices, credentials, presence",
            statements: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.tenants (\
                     name text PRIMARY KEY, display_name text, created_at_ns bigint, \
                     auto_provision boolean, device_tag text, revision bigint)"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.tenant_names (\
                     shard int, name text, w boolean, PRIMARY KEY (shard, name))"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.devices (\
                     tenant text, id text, labels map<text, text>, metadata map<text, text>, \
                     disabled boolean, created_at_ns bigint, updated_at_ns bigint, \
                     revision bigint, PRIMARY KEY ((tenant, id)))"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.device_ids (\
                     tenant text, id text, w boolean, PRIMARY KEY (tenant, id))"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.credentials (\
                     tenant text, id text, kind text, device text, name text, \
                     token_hash blob, created_at_ns bigint, expires_at_ns bigint, \
                     revoked_at_ns bigint, PRIMARY KEY ((tenant, id)))"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.credential_hashes (\
                     token_hash blob PRIMARY KEY, tenant text, id text)"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.credential_ids (\
                     tenant text, id text, w boolean, PRIMARY KEY (tenant, id))"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.device_credentials (\
                     tenant text, device text, id text, w boolean, \
                     PRIMARY KEY ((tenant, device), id))"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.presence (\
                     tenant text, device text, online boolean, last_seen_ns bigint, \
                     frontend text, PRIMARY KEY ((tenant, device)))"
                ),
            ],
        },
        Migration {
            version: 3,
            description: "registry: tenant quotas",
            statements: vec![format!(
                "ALTER TABLE {ks}.tenants ADD quotas map<text, bigint>"
            )],
        },
        Migration {
            version: 4,
            description: "series counted per tenant (the series quota)",
            statements: vec![format!(
                "CREATE TABLE IF NOT EXISTS {ks}.tenant_series (\
                 tenant text PRIMARY KEY, series counter)"
            )],
        },
        Migration {
            version: 5,
            description: "rollup tiers: from when each is complete",
            statements: vec![format!(
                "CREATE TABLE IF NOT EXISTS {ks}.rollup_tiers (width bigint PRIMARY KEY, since bigint)"
            )],
        },
        Migration {
            version: 6,
            description: "registry: tenant retention per kind of data",
            statements: vec![format!(
                "ALTER TABLE {ks}.tenants ADD retention map<text, text>"
            )],
        },
        Migration {
            version: 7,
            description: "registry: rules, one partition per tenant",
            statements: vec![format!(
                "CREATE TABLE IF NOT EXISTS {ks}.rules (\
                 tenant text, name text, spec text, revision bigint, \
                 PRIMARY KEY (tenant, name))"
            )],
        },
        Migration {
            version: 8,
            description: "checkpoints per consumer group and log partition (rule state)",
            statements: vec![format!(
                "CREATE TABLE IF NOT EXISTS {ks}.checkpoints (\
                 grp text, part int, key blob, value blob, covers bigint static, \
                 PRIMARY KEY ((grp, part), key))"
            )],
        },
        Migration {
            version: 9,
            description: "registry: alert webhooks, one partition per tenant",
            statements: vec![format!(
                "CREATE TABLE IF NOT EXISTS {ks}.webhooks (\
                 tenant text, name text, spec text, revision bigint, \
                 PRIMARY KEY (tenant, name))"
            )],
        },
        Migration {
            version: 10,
            description: "registry: alert silences, one partition per tenant",
            statements: vec![format!(
                "CREATE TABLE IF NOT EXISTS {ks}.silences (\
                 tenant text, name text, spec text, revision bigint, \
                 PRIMARY KEY (tenant, name))"
            )],
        },
        Migration {
            version: 11,
            description: "alert history: by tenant, newest first, and by id",
            statements: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.alerts (\
                     tenant text, started bigint, id text, updated bigint, value blob, \
                     PRIMARY KEY ((tenant), started, id)) \
                     WITH CLUSTERING ORDER BY (started DESC, id DESC)"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.alert_ids (\
                     tenant text, id text, started bigint, \
                     PRIMARY KEY ((tenant, id)))"
                ),
            ],
        },
        Migration {
            version: 12,
            description: "registry: tenant LwM2M metric names",
            statements: vec![format!(
                "ALTER TABLE {ks}.tenants ADD lwm2m_metrics map<text, text>"
            )],
        },
    ]
}

/// Brings the keyspace of `config` to [`SCHEMA_VERSION`]: creates it and its
/// tables when missing, applies pending migrations, and returns the versions
/// this call applied (empty when the schema was already current).
pub async fn migrate(session: &Session, config: &ScyllaConfig) -> Result<Vec<i32>, ScyllaError> {
    config.validate()?;
    let ks = &config.keyspace;
    create_keyspace(session, config).await?;
    session
        .query_unpaged(create_migrations_table_cql(ks), ())
        .await?;
    let applied = applied_versions(session, ks).await?;
    if let Some(newest) = applied.iter().copied().max()
        && newest > SCHEMA_VERSION
    {
        return Err(ScyllaError::Schema(format!(
            "keyspace {ks} is at schema version {newest}; this build knows versions up to \
             {SCHEMA_VERSION}: upgrade Tributary"
        )));
    }
    let mut done = Vec::new();
    for migration in migrations(config) {
        if applied.contains(&migration.version) {
            continue;
        }
        tracing::info!(
            keyspace = %ks,
            version = migration.version,
            description = migration.description,
            "applying ScyllaDB schema migration"
        );
        for statement in &migration.statements {
            match session.query_unpaged(statement.as_str(), ()).await {
                Ok(_) => {}
                // `ALTER TABLE … ADD` has no IF NOT EXISTS: a column added by
                // a run that stopped before recording the migration is there.
                Err(e) if is_add_column(statement) && is_duplicate_column(&e.to_string()) => {
                    tracing::info!(keyspace = %ks, statement, "column already added");
                }
                Err(e) => return Err(e.into()),
            }
        }
        let now_ms = tributary_core::time::now_ns() / 1_000_000;
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.schema_migrations (version, description, applied_at_ms) \
                     VALUES (?, ?, ?)"
                ),
                (migration.version, migration.description, now_ms),
            )
            .await?;
        done.push(migration.version);
    }
    warn_on_ttl_drift(session, config).await;
    Ok(done)
}

/// Whether `statement` adds a column (`ALTER TABLE … ADD …`).
fn is_add_column(statement: &str) -> bool {
    statement.starts_with("ALTER TABLE ") && statement.contains(" ADD ")
}

/// Whether a server error says the column to add exists already (Scylla and
/// Cassandra word it differently).
fn is_duplicate_column(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("conflicts with an existing column") || e.contains("already exist")
}

/// The versions recorded in `schema_migrations`.
pub async fn applied_versions(session: &Session, keyspace: &str) -> Result<Vec<i32>, ScyllaError> {
    let rows = session
        .query_unpaged(
            format!("SELECT version FROM {keyspace}.schema_migrations"),
            (),
        )
        .await?
        .into_rows_result()
        .map_err(ScyllaError::decode)?;
    let mut versions = Vec::new();
    for row in rows.rows::<(i32,)>().map_err(ScyllaError::decode)? {
        versions.push(row.map_err(ScyllaError::decode)?.0);
    }
    versions.sort_unstable();
    Ok(versions)
}

async fn create_keyspace(session: &Session, config: &ScyllaConfig) -> Result<(), ScyllaError> {
    match session
        .query_unpaged(create_keyspace_cql(config, true), ())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if server_lacks_tablets(&e) => {
            tracing::info!(
                keyspace = %config.keyspace,
                "the cluster does not know tablets; creating a vnode keyspace"
            );
            session
                .query_unpaged(create_keyspace_cql(config, false), ())
                .await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the server refused the `tablets` option because it does not
/// know it (ScyllaDB before 6.0, Cassandra).
fn server_lacks_tablets(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::SyntaxError | DbError::ConfigError | DbError::Invalid,
            message,
        )) => message.to_ascii_lowercase().contains("tablets"),
        _ => false,
    }
}

/// Logs a warning when the `points` table's default TTL is not the
/// configured retention. Points are always written with an explicit TTL, so
/// this only matters to writes made outside Tributary; the table is not
/// altered automatically because services with different settings would
/// keep altering it back and forth.
async fn warn_on_ttl_drift(session: &Session, config: &ScyllaConfig) {
    let found = session
        .query_unpaged(
            "SELECT default_time_to_live FROM system_schema.tables \
             WHERE keyspace_name = ? AND table_name = 'points'",
            (config.keyspace.as_str(),),
        )
        .await
        .ok()
        .and_then(|r| r.into_rows_result().ok())
        .and_then(|rows| rows.maybe_first_row::<(Option<i32>,)>().ok().flatten())
        .and_then(|(ttl,)| ttl);
    let want = i64::from(config.default_ttl_secs());
    if let Some(have) = found
        && i64::from(have) != want
    {
        tracing::warn!(
            keyspace = %config.keyspace,
            table_default_ttl_secs = have,
            configured_retention_secs = want,
            "points.default_time_to_live differs from the configured retention; Tributary writes \
             explicit TTLs, so only other writers are affected (ALTER TABLE to change it)"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Replication;

    fn config() -> ScyllaConfig {
        ScyllaConfig {
            keyspace: "iot".into(),
            retention: Some(Duration::from_secs(30 * 86_400)),
            ..ScyllaConfig::default()
        }
    }

    #[test]
    fn keyspace_replication_comes_from_the_config() {
        let mut c = config();
        assert_eq!(
            create_keyspace_cql(&c, true),
            "CREATE KEYSPACE IF NOT EXISTS iot WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'replication_factor': 3} \
             AND durable_writes = true AND tablets = {'enabled': false}"
        );
        c.replication = Replication::SimpleStrategy {
            replication_factor: 1,
        };
        assert_eq!(
            create_keyspace_cql(&c, false),
            "CREATE KEYSPACE IF NOT EXISTS iot WITH replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 1} AND durable_writes = true"
        );
    }

    #[test]
    fn a_column_added_before_is_recognised() {
        assert!(is_duplicate_column(
            "Invalid column name quotas because it conflicts with an existing column"
        ));
        assert!(is_duplicate_column(
            "Cannot add already existing column \"quotas\""
        ));
        assert!(!is_duplicate_column("Keyspace iot does not exist"));
    }

    #[test]
    fn migrations_are_numbered_in_order_and_idempotent() {
        let all = migrations(&config());
        let versions: Vec<i32> = all.iter().map(|m| m.version).collect();
        assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
        for m in &all {
            assert!(!m.statements.is_empty(), "migration {} is empty", m.version);
            for s in &m.statements {
                // Column additions are made idempotent by `migrate`.
                assert!(
                    s.starts_with("CREATE TABLE IF NOT EXISTS iot.")
                        || (is_add_column(s) && s.starts_with("ALTER TABLE iot.")),
                    "idempotent and qualified with the keyspace: {s}"
                );
            }
        }
        assert!(create_migrations_table_cql("iot").contains("IF NOT EXISTS iot.schema_migrations"));
    }

    #[test]
    fn points_are_day_partitions_in_descending_time_with_twcs_and_the_retention_ttl() {
        let all = migrations(&config());
        let points = all[0]
            .statements
            .iter()
            .find(|s| s.contains("iot.points "))
            .expect("points table");
        for clause in [
            "PRIMARY KEY ((tenant, device, metric, day), ts)",
            "CLUSTERING ORDER BY (ts DESC)",
            "'class': 'TimeWindowCompactionStrategy'",
            "'compaction_window_unit': 'DAYS', 'compaction_window_size': 1",
            "default_time_to_live = 2592000",
            "kind tinyint, f double, i bigint, b boolean, s text",
        ] {
            assert!(
                points.contains(clause),
                "points table lacks {clause:?}: {points}"
            );
        }
        let forever = ScyllaConfig {
            retention: None,
            ..config()
        };
        assert!(migrations(&forever)[0].statements[0].contains("default_time_to_live = 0"));
    }

    #[test]
    fn registry_tables_key_records_by_their_own_partition() {
        let all = migrations(&config());
        let registry = all[1].statements.join("\n");
        for key in [
            "iot.tenants (name text PRIMARY KEY",
            "PRIMARY KEY (shard, name)",
            "PRIMARY KEY ((tenant, id)))",
            "iot.credential_hashes (token_hash blob PRIMARY KEY",
            "PRIMARY KEY ((tenant, device), id)",
            "PRIMARY KEY ((tenant, device)))",
        ] {
            assert!(registry.contains(key), "registry schema lacks {key:?}");
        }
    }

    #[test]
    fn only_a_refused_tablets_option_falls_back_to_vnodes() {
        let refused = |db: DbError, msg: &str| {
            ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, msg.into()))
        };
        assert!(server_lacks_tablets(&refused(
            DbError::SyntaxError,
            "Unknown property 'tablets'"
        )));
        assert!(server_lacks_tablets(&refused(
            DbError::ConfigError,
            "Unrecognized strategy option {tablets}"
        )));
        assert!(!server_lacks_tablets(&refused(
            DbError::Unauthorized,
            "no CREATE permission"
        )));
        assert!(!server_lacks_tablets(&refused(
            DbError::SyntaxError,
            "line 1:0"
        )));
    }
}
