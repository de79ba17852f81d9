//! [`ScyllaStore`]: the time-series [`Store`] of distributed mode.
//!
//! Tables (see `docs/scylla.md` for sizes and the reasoning):
//!
//! | table | key | holds |
//! | --- | --- | --- |
//! | `points` | `((tenant, device, metric, day), ts DESC)` | one typed value per row, TTL = what remains of the retention |
//! | `series_days` | `((tenant, device, metric), day DESC)` | the days a series has points in; TTL until its last point expires |
//! | `series` | `((tenant, device), metric)` | the metric names of a device |
//!
//! There is no table of latest values: the latest value of a series is the
//! first row of its newest day partition, which clusters newest first, so
//! it costs two single-partition reads and obeys exactly the rules of
//! `points` (the last write of a timestamp wins, an older point never
//! replaces a newer one, expired points are gone).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use scylla::client::session::Session;
use scylla::response::PagingState;
use scylla::response::query_result::QueryResult;
use scylla::statement::batch::{Batch, BatchStatement, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::MaybeUnset;
use tributary_core::retention::{Keep, RetentionPolicy};
use tributary_core::rollup::{Rollup, RollupKey};
use tributary_core::time::{NS_PER_DAY, NS_PER_SEC, now_ns};
use tributary_core::{Point, Sample, SeriesKey, Value};
use tributary_store::embedded::{MAX_NAME_LEN, MAX_STRING_LEN};
use tributary_store::{DevicePoints, Latest, Order, Store, StoreError};

use crate::config::MAX_TTL_SECS;
use crate::session::Cql;
use crate::{ScyllaConfig, ScyllaError};

/// Value kinds in the `kind` column.
const KIND_F64: i8 = 0;
const KIND_I64: i8 = 1;
const KIND_BOOL: i8 = 2;
const KIND_STR: i8 = 3;

/// Rows of `series_days` fetched per page. Day rows are a few bytes; a
/// year of days fits one page.
const DAYS_PAGE: i32 = 512;
/// Rows of `points` fetched per page of a scan.
const POINTS_PAGE: i32 = 5000;
/// Series whose latest value is read at once by one `latest` call.
const LATEST_FANOUT: usize = 16;
/// Series whose rollups one `scan_rollups_many` call reads at once.
const ROLLUP_SCAN_FANOUT: usize = 16;

/// The time-series [`Store`] on ScyllaDB.
///
/// Writes group each device's points by partition (metric, UTC day), drop
/// points already past the retention, keep the last of several writes of a
/// timestamp, and send each partition's rows as UNLOGGED batches of at most
/// `max_batch_rows` rows and `max_batch_bytes` bytes: a batch never spans two
/// partitions, so it is one mutation on one replica set, routed to it by the
/// token-aware policy. Every statement is prepared and idempotent, so the
/// driver retries it after a timeout, and so does the processor after an
/// error: writing a point again changes nothing.
///
/// Requests in flight are bounded by `max_in_flight`; a call that cannot get
/// a slot within `queue_timeout`, or that meets an overloaded or unavailable
/// cluster, fails with [`StoreError::Backpressure`].
pub struct ScyllaStore {
    cql: Cql,
    statements: Statements,
    keyspace: String,
    /// Every tenant's retention; the configured one until `set_retention`.
    policy: std::sync::RwLock<Arc<RetentionPolicy>>,
    max_batch_rows: usize,
    max_batch_bytes: usize,
    /// Requests one `write` call runs at once (the in-flight bound).
    fanout: usize,
    indexed: IndexCache,
    rollups: crate::rollups::RollupTables,
}

impl fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaStore")
            .field("keyspace", &self.keyspace)
            .field("retention", &self.policy().raw_default())
            .field("max_batch_rows", &self.max_batch_rows)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .finish_non_exhaustive()
    }
}

/// The prepared statements of the store.
struct Statements {
    insert_point: PreparedStatement,
    insert_series_day: PreparedStatement,
    insert_series: PreparedStatement,
    days_asc: PreparedStatement,
    days_desc: PreparedStatement,
    points_asc: PreparedStatement,
    points_desc: PreparedStatement,
    newest_point: PreparedStatement,
    metrics: PreparedStatement,
}

/// The CQL text of every statement of the store, for keyspace `ks`.
pub(crate) fn statement_texts(ks: &str) -> [(&'static str, String); 9] {
    let columns = "ts, kind, f, i, b, s";
    let series = "tenant = ? AND device = ? AND metric = ?";
    [
        (
            "insert_point",
            format!(
                "INSERT INTO {ks}.points (tenant, device, metric, day, ts, kind, f, i, b, s) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            ),
        ),
        (
            "insert_series_day",
            format!(
                "INSERT INTO {ks}.series_days (tenant, device, metric, day) \
                 VALUES (?, ?, ?, ?) USING TTL ?"
            ),
        ),
        (
            "insert_series",
            format!("INSERT INTO {ks}.series (tenant, device, metric) VALUES (?, ?, ?)"),
        ),
        (
            "days_asc",
            format!(
                "SELECT day FROM {ks}.series_days WHERE {series} AND day >= ? AND day <= ? \
                 ORDER BY day ASC"
            ),
        ),
        (
            "days_desc",
            format!(
                "SELECT day FROM {ks}.series_days WHERE {series} AND day >= ? AND day <= ? \
                 ORDER BY day DESC"
            ),
        ),
        (
            "points_asc",
            format!(
                "SELECT {columns} FROM {ks}.points WHERE {series} AND day = ? \
                 AND ts >= ? AND ts < ? ORDER BY ts ASC LIMIT ?"
            ),
        ),
        (
            "points_desc",
            format!(
                "SELECT {columns} FROM {ks}.points WHERE {series} AND day = ? \
                 AND ts >= ? AND ts < ? ORDER BY ts DESC LIMIT ?"
            ),
        ),
        (
            "newest_point",
            format!(
                "SELECT {columns} FROM {ks}.points WHERE {series} AND day = ? AND ts >= ? \
                 ORDER BY ts DESC LIMIT 1"
            ),
        ),
        (
            "metrics",
            format!("SELECT metric FROM {ks}.series WHERE tenant = ? AND device = ?"),
        ),
    ]
}

impl ScyllaStore {
    /// Connects to the cluster of `config`, migrates the schema, and opens
    /// the store.
    pub async fn connect(config: &ScyllaConfig) -> Result<Arc<Self>, ScyllaError> {
        let session = crate::connect(config).await?;
        crate::migrate(&session, config).await?;
        Self::new(session, config).await
    }

    /// Opens the store on a session whose keyspace was migrated
    /// ([`crate::migrate`]); prepares every statement.
    pub async fn new(
        session: Arc<Session>,
        config: &ScyllaConfig,
    ) -> Result<Arc<Self>, ScyllaError> {
        config.validate()?;
        let cql = Cql::new(session, config);
        let prepared =
            futures::future::try_join_all(statement_texts(&config.keyspace).into_iter().map(
                |(name, text)| {
                    let cql = &cql;
                    async move { Ok::<_, ScyllaError>((name, cql.prepare(text, true).await?)) }
                },
            ))
            .await?;
        let mut prepared: HashMap<&str, PreparedStatement> = prepared.into_iter().collect();
        let mut take = |name: &str| {
            prepared.remove(name).ok_or_else(|| {
                ScyllaError::Schema(format!("store statement {name} was not prepared"))
            })
        };
        let mut statements = Statements {
            insert_point: take("insert_point")?,
            insert_series_day: take("insert_series_day")?,
            insert_series: take("insert_series")?,
            days_asc: take("days_asc")?,
            days_desc: take("days_desc")?,
            points_asc: take("points_asc")?,
            points_desc: take("points_desc")?,
            newest_point: take("newest_point")?,
            metrics: take("metrics")?,
        };
        statements.days_asc.set_page_size(DAYS_PAGE);
        statements.days_desc.set_page_size(DAYS_PAGE);
        statements.points_asc.set_page_size(POINTS_PAGE);
        statements.points_desc.set_page_size(POINTS_PAGE);
        let rollups = crate::rollups::RollupTables::new(&cql, &config.keyspace).await?;
        Ok(Arc::new(Self {
            cql,
            statements,
            keyspace: config.keyspace.clone(),
            policy: std::sync::RwLock::new(Arc::new(RetentionPolicy::new(
                Keep::from_duration(config.retention),
                tributary_core::rollup::Tiers::none(),
            ))),
            max_batch_rows: config.max_batch_rows,
            max_batch_bytes: config.max_batch_bytes,
            fanout: config.max_in_flight,
            indexed: IndexCache::new(config.index_cache_entries),
            rollups,
        }))
    }

    /// Creates the rollup tables of `tiers` (`rollups_1m`, …) when missing,
    /// and prepares their statements. Rollups of other tiers are refused.
    pub async fn prepare_rollup_tiers(
        &self,
        tiers: &tributary_core::rollup::Tiers,
    ) -> Result<(), ScyllaError> {
        self.rollups.prepare(&self.cql, &self.keyspace, tiers).await
    }

    fn policy(&self) -> Arc<RetentionPolicy> {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Buckets of `tenant`'s tier `width_ns` starting before this are expired.
    fn rollup_floor(&self, tenant: &str, width_ns: i64) -> i64 {
        self.policy()
            .of(tenant)
            .tier(width_ns)
            .bucket_floor(now_ns(), width_ns)
    }

    /// The oldest timestamp of `tenant` still inside its raw retention at `now`.
    fn floor_ns(&self, tenant: &str, now: i64) -> i64 {
        self.policy().of(tenant).raw.floor(now)
    }

    async fn run(&self, job: Job<'_>) -> Result<(), ScyllaError> {
        match job {
            Job::Points {
                tenant,
                device,
                metric,
                day,
                rows,
            } => {
                let values: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        let v = ValueColumns::of(r.value);
                        (
                            tenant, device, metric, day, r.ts, v.kind, v.f, v.i, v.b, v.s, r.ttl,
                        )
                    })
                    .collect();
                if let [single] = values.as_slice() {
                    self.cql
                        .execute(&self.statements.insert_point, single)
                        .await?;
                } else {
                    let statement =
                        BatchStatement::PreparedStatement(self.statements.insert_point.clone());
                    let mut batch = Batch::new_with_statements(
                        BatchType::Unlogged,
                        vec![statement; values.len()],
                    );
                    batch.set_is_idempotent(true);
                    self.cql.batch(&batch, values).await?;
                }
            }
            Job::Day {
                tenant,
                device,
                metric,
                day,
                ttl,
                key,
            } => {
                self.cql
                    .execute(
                        &self.statements.insert_series_day,
                        (tenant, device, metric, day, ttl),
                    )
                    .await?;
                self.indexed.insert(key);
            }
            Job::Series {
                tenant,
                device,
                metric,
                key,
            } => {
                self.cql
                    .execute(&self.statements.insert_series, (tenant, device, metric))
                    .await?;
                self.indexed.insert(key);
            }
        }
        Ok(())
    }

    /// The days of `series` between `first` and `last` (inclusive) that
    /// have points, in `order`, fetched a page at a time.
    fn days<'s>(&'s self, series: &'s SeriesKey, range: (i32, i32), order: Order) -> Days<'s> {
        Days {
            store: self,
            series,
            range,
            order,
            next_page: Some(PagingState::start()),
            buffered: VecDeque::new(),
        }
    }

    /// Appends the points of one day partition with `from <= ts < to` to
    /// `out`, in `order`, until `out` holds `limit`.
    async fn scan_day(
        &self,
        series: &SeriesKey,
        day: i32,
        (from, to): (i64, i64),
        order: Order,
        limit: usize,
        out: &mut Vec<Sample>,
    ) -> Result<(), ScyllaError> {
        let statement = match order {
            Order::Asc => &self.statements.points_asc,
            Order::Desc => &self.statements.points_desc,
        };
        let remaining = limit.saturating_sub(out.len());
        let cql_limit = i32::try_from(remaining).unwrap_or(i32::MAX);
        let values = (
            series.tenant.as_str(),
            series.device.as_str(),
            series.metric.as_str(),
            day,
            from,
            to,
            cql_limit,
        );
        let mut state = PagingState::start();
        while out.len() < limit {
            let (result, next) = self.cql.page(statement, values, state).await?;
            decode_samples(result, limit, out)?;
            match next.into_paging_control_flow() {
                ControlFlow::Break(()) => break,
                ControlFlow::Continue(s) => state = s,
            }
        }
        Ok(())
    }

    /// The newest sample of a series inside the retention, if any: the
    /// first row of the newest day partition that has one.
    async fn newest(&self, series: &SeriesKey, now: i64) -> Result<Option<Sample>, ScyllaError> {
        let floor = self.floor_ns(&series.tenant, now);
        let mut days = self.days(series, (day_of(floor), i32::MAX), Order::Desc);
        while let Some(day) = days.next().await? {
            let values = (
                series.tenant.as_str(),
                series.device.as_str(),
                series.metric.as_str(),
                day,
                floor,
            );
            let result = self
                .cql
                .execute(&self.statements.newest_point, values)
                .await?;
            let mut samples = Vec::with_capacity(1);
            decode_samples(result, 1, &mut samples)?;
            if let Some(sample) = samples.pop() {
                return Ok(Some(sample));
            }
        }
        Ok(None)
    }
}

/// A cursor over the `series_days` rows of one series.
struct Days<'s> {
    store: &'s ScyllaStore,
    series: &'s SeriesKey,
    range: (i32, i32),
    order: Order,
    /// Where the next page starts; `None` once the last page was fetched.
    next_page: Option<PagingState>,
    buffered: VecDeque<i32>,
}

impl Days<'_> {
    async fn next(&mut self) -> Result<Option<i32>, ScyllaError> {
        while self.buffered.is_empty() {
            let Some(state) = self.next_page.take() else {
                return Ok(None);
            };
            let statement = match self.order {
                Order::Asc => &self.store.statements.days_asc,
                Order::Desc => &self.store.statements.days_desc,
            };
            let s = self.series;
            let values = (
                s.tenant.as_str(),
                s.device.as_str(),
                s.metric.as_str(),
                self.range.0,
                self.range.1,
            );
            let (result, next) = self.store.cql.page(statement, values, state).await?;
            self.buffered.extend(days(result)?);
            self.next_page = match next.into_paging_control_flow() {
                ControlFlow::Break(()) => None,
                ControlFlow::Continue(state) => Some(state),
            };
        }
        Ok(self.buffered.pop_front())
    }
}

/// One request of a write.
enum Job<'a> {
    /// Rows of one partition: one statement, or an UNLOGGED batch.
    Points {
        tenant: &'a str,
        device: &'a str,
        metric: &'a str,
        day: i32,
        rows: &'a [Row<'a>],
    },
    /// The `series_days` row of a (series, day).
    Day {
        tenant: &'a str,
        device: &'a str,
        metric: &'a str,
        day: i32,
        ttl: i32,
        key: u128,
    },
    /// The `series` row of a series.
    Series {
        tenant: &'a str,
        device: &'a str,
        metric: &'a str,
        key: u128,
    },
}

#[async_trait]
impl Store for ScyllaStore {
    async fn get_rollups(&self, keys: &[RollupKey]) -> Result<Vec<Option<Rollup>>, StoreError> {
        self.rollups.get(&self.cql, keys).await
    }

    async fn write_rollups(&self, rows: &[(RollupKey, Rollup)]) -> Result<(), StoreError> {
        self.rollups.write(&self.cql, rows, &self.policy()).await
    }

    async fn scan_rollups(
        &self,
        series: &SeriesKey,
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Rollup)>, StoreError> {
        let from_ns = from_ns.max(self.rollup_floor(&series.tenant, width_ns));
        self.rollups
            .scan(&self.cql, series, width_ns, from_ns, to_ns, limit)
            .await
    }

    /// Many series at once: `ROLLUP_SCAN_FANOUT` single-partition scans in
    /// flight (each bounded by the in-flight slots), results in order.
    async fn scan_rollups_many(
        &self,
        series: &[SeriesKey],
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit_each: usize,
    ) -> Result<Vec<Vec<(i64, Rollup)>>, StoreError> {
        let mut out = Vec::with_capacity(series.len());
        for chunk in series.chunks(ROLLUP_SCAN_FANOUT) {
            let mut scans = Vec::with_capacity(chunk.len());
            for s in chunk {
                let from_ns = from_ns.max(self.rollup_floor(&s.tenant, width_ns));
                scans.push(
                    self.rollups
                        .scan(&self.cql, s, width_ns, from_ns, to_ns, limit_each),
                );
            }
            out.extend(futures::future::try_join_all(scans).await?);
        }
        Ok(out)
    }

    async fn rollups_since(&self, width_ns: i64) -> Result<Option<i64>, StoreError> {
        self.rollups.since(&self.cql, width_ns).await
    }

    async fn mark_rollups_since(&self, width_ns: i64, since_ns: i64) -> Result<i64, StoreError> {
        self.rollups.mark_since(&self.cql, width_ns, since_ns).await
    }

    async fn write(&self, batch: &[DevicePoints]) -> Result<(), StoreError> {
        validate(batch)?;
        let now = now_ns();
        let policy = self.policy();
        let raw = |tenant: &str| policy.of(tenant).raw.ns();
        let partitions = group_by_partition(batch, now, &raw);
        let mut jobs = Vec::new();
        let mut seen = HashSet::new();
        for (tenant, device, part) in &partitions {
            let (tenant, device, metric, day) = (*tenant, *device, part.metric, part.day);
            for rows in batches(
                tenant,
                device,
                part,
                self.max_batch_rows,
                self.max_batch_bytes,
            ) {
                jobs.push(Job::Points {
                    tenant,
                    device,
                    metric,
                    day,
                    rows,
                });
            }
            let day_key = self.indexed.key(&("day", tenant, device, metric, day));
            if !self.indexed.contains(day_key)
                && seen.insert(day_key)
                && let Some(ttl) = day_ttl(day, now, raw(tenant))
            {
                jobs.push(Job::Day {
                    tenant,
                    device,
                    metric,
                    day,
                    ttl,
                    key: day_key,
                });
            }
            let series_key = self.indexed.key(&("series", tenant, device, metric));
            if !self.indexed.contains(series_key) && seen.insert(series_key) {
                jobs.push(Job::Series {
                    tenant,
                    device,
                    metric,
                    key: series_key,
                });
            }
        }
        stream::iter(jobs.into_iter().map(Ok))
            .try_for_each_concurrent(self.fanout, |job| self.run(job))
            .await
            .map_err(StoreError::from)
    }

    /// Nothing to do: a write returns once the cluster acknowledged it at the
    /// configured consistency level, and an acknowledged write is in the
    /// commit log of that many replicas, so it is already as durable as
    /// ScyllaDB makes anything.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn list_metrics(&self, tenant: &str, device: &str) -> Result<Vec<String>, StoreError> {
        let mut metrics = Vec::new();
        let mut state = PagingState::start();
        loop {
            let (result, next) = self
                .cql
                .page(&self.statements.metrics, (tenant, device), state)
                .await?;
            let rows = result.into_rows_result().map_err(ScyllaError::decode)?;
            for row in rows.rows::<(String,)>().map_err(ScyllaError::decode)? {
                metrics.push(row.map_err(ScyllaError::decode)?.0);
            }
            match next.into_paging_control_flow() {
                ControlFlow::Break(()) => break,
                ControlFlow::Continue(s) => state = s,
            }
        }
        metrics.sort();
        metrics.dedup();
        Ok(metrics)
    }

    async fn scan(
        &self,
        series: &SeriesKey,
        from_ns: i64,
        to_ns: i64,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Sample>, StoreError> {
        let from = from_ns.max(self.floor_ns(&series.tenant, now_ns()));
        if limit == 0 || from >= to_ns {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut days = self.days(series, (day_of(from), day_of(to_ns - 1)), order);
        while let Some(day) = days.next().await? {
            self.scan_day(series, day, (from, to_ns), order, limit, &mut out)
                .await?;
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn latest(
        &self,
        tenant: &str,
        device: &str,
        metrics: &[String],
    ) -> Result<Vec<Latest>, StoreError> {
        let mut names: Vec<String> = if metrics.is_empty() {
            self.list_metrics(tenant, device).await?
        } else {
            metrics.to_vec()
        };
        names.sort();
        names.dedup();
        let now = now_ns();
        let found: Vec<Option<Latest>> = stream::iter(names)
            .map(|metric| async move {
                let series = SeriesKey::new(tenant, device, metric);
                let newest = self.newest(&series, now).await?;
                Ok::<_, ScyllaError>(newest.map(|s| Latest {
                    metric: series.metric,
                    ts_ns: s.ts_ns,
                    value: s.value,
                }))
            })
            .buffered(LATEST_FANOUT)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Expiry is native: every point is written with the TTL that remains of
    /// the retention, and `scan` and `latest` also hide anything older than
    /// `now - retention` (points written under a longer retention). Nothing
    /// to delete here, so this returns 0.
    async fn apply_retention(&self, _now_ns: i64) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn set_retention(&self, policy: Arc<RetentionPolicy>) {
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
    }
}

/// Checks a batch before any of it is written, with the embedded store's
/// limits so that both backends accept the same data.
fn validate(batch: &[DevicePoints]) -> Result<(), StoreError> {
    let name = |what: &str, s: &str| {
        if s.is_empty() {
            Err(StoreError::Invalid(format!("{what} must not be empty")))
        } else if s.len() > MAX_NAME_LEN {
            Err(StoreError::Invalid(format!(
                "{what} longer than {MAX_NAME_LEN} bytes"
            )))
        } else {
            Ok(())
        }
    };
    for dp in batch {
        name("tenant", &dp.tenant)?;
        name("device", &dp.device)?;
        for p in &dp.points {
            name("metric", &p.metric)?;
            if let Value::Str(s) = &p.value
                && s.len() > MAX_STRING_LEN
            {
                return Err(StoreError::Invalid(format!(
                    "{}: string value longer than {MAX_STRING_LEN} bytes",
                    p.metric
                )));
            }
        }
    }
    Ok(())
}

/// The day bucket (days since the Unix epoch, UTC) of a timestamp. Every
/// `i64` nanosecond timestamp is within ±106,752 days, so this never clamps.
pub(crate) fn day_of(ts_ns: i64) -> i32 {
    let day = ts_ns.div_euclid(NS_PER_DAY);
    i32::try_from(day).unwrap_or(if day < 0 { i32::MIN } else { i32::MAX })
}

/// The TTL, in seconds, of a point written at `now`: what remains of its
/// retention, rounded up so that it never expires early. `Some(0)` (no
/// expiry) without retention; `None` if it has already expired and must not
/// be written.
pub(crate) fn point_ttl(ts_ns: i64, now_ns: i64, retention_ns: Option<i64>) -> Option<i32> {
    let Some(retention) = retention_ns else {
        return Some(0);
    };
    let remaining = ts_ns.saturating_add(retention).saturating_sub(now_ns);
    if remaining <= 0 {
        return None;
    }
    let secs = (remaining / NS_PER_SEC + i64::from(remaining % NS_PER_SEC != 0))
        .min(i64::from(MAX_TTL_SECS));
    i32::try_from(secs).ok()
}

/// The TTL of a `series_days` row: until the last instant of its day is past
/// the retention, so the row outlives every point it points at. The same
/// expiry whichever point of the day writes it.
pub(crate) fn day_ttl(day: i32, now_ns: i64, retention_ns: Option<i64>) -> Option<i32> {
    let next_day = (i64::from(day) + 1).saturating_mul(NS_PER_DAY);
    point_ttl(next_day.saturating_sub(1), now_ns, retention_ns)
}

/// One row of `points` to write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row<'a> {
    pub(crate) ts: i64,
    pub(crate) value: &'a Value,
    pub(crate) ttl: i32,
}

/// The rows of one partition (a metric's UTC day) of one device's write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PartitionRows<'a> {
    pub(crate) metric: &'a str,
    pub(crate) day: i32,
    /// Sorted by timestamp, one row per timestamp: the last point given for it.
    pub(crate) rows: Vec<Row<'a>>,
}

/// Groups a device's points by partition, keeps the last point of each
/// timestamp (rows of one batch share one write timestamp, so the server
/// could not tell which came last), and drops points already expired.
pub(crate) fn partition_rows<'a>(
    points: impl IntoIterator<Item = &'a Point>,
    now_ns: i64,
    retention_ns: Option<i64>,
) -> Vec<PartitionRows<'a>> {
    // (metric, day) -> ts -> (value, TTL); later points replace earlier ones.
    type Groups<'p> = BTreeMap<(&'p str, i32), BTreeMap<i64, (&'p Value, i32)>>;
    let mut groups = Groups::new();
    for p in points {
        let Some(ttl) = point_ttl(p.ts_ns, now_ns, retention_ns) else {
            continue;
        };
        groups
            .entry((p.metric.as_str(), day_of(p.ts_ns)))
            .or_default()
            .insert(p.ts_ns, (&p.value, ttl));
    }
    groups
        .into_iter()
        .map(|((metric, day), rows)| PartitionRows {
            metric,
            day,
            rows: rows
                .into_iter()
                .map(|(ts, (value, ttl))| Row { ts, value, ttl })
                .collect(),
        })
        .collect()
}

/// [`partition_rows`] for a whole write: the points of a device are taken
/// together, in batch order, even when the batch holds several messages of
/// that device, so that the last point of a timestamp wins across them too
/// (their requests run concurrently, so the server could not order them).
pub(crate) fn group_by_partition<'b>(
    batch: &'b [DevicePoints],
    now_ns: i64,
    retention_ns: &dyn Fn(&str) -> Option<i64>,
) -> Vec<(&'b str, &'b str, PartitionRows<'b>)> {
    let mut devices: BTreeMap<(&str, &str), Vec<&Point>> = BTreeMap::new();
    for dp in batch {
        devices
            .entry((dp.tenant.as_str(), dp.device.as_str()))
            .or_default()
            .extend(&dp.points);
    }
    devices
        .into_iter()
        .flat_map(|((tenant, device), points)| {
            partition_rows(points, now_ns, retention_ns(tenant))
                .into_iter()
                .map(move |part| (tenant, device, part))
        })
        .collect()
}

/// Splits a partition's rows into batches of at most `max_rows` rows and
/// about `max_bytes` bytes of values (a single larger row gets a batch of
/// its own).
pub(crate) fn batches<'p>(
    tenant: &str,
    device: &str,
    part: &'p PartitionRows<'p>,
    max_rows: usize,
    max_bytes: usize,
) -> Vec<&'p [Row<'p>]> {
    let key_bytes = tenant.len() + device.len() + part.metric.len() + 4;
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, row) in part.rows.iter().enumerate() {
        let size = key_bytes + row_value_bytes(row.value);
        let count = i - start;
        if count > 0 && (count >= max_rows.max(1) || bytes + size > max_bytes) {
            out.push(&part.rows[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < part.rows.len() {
        out.push(&part.rows[start..]);
    }
    out
}

/// Bytes of a row besides its partition key: ts, kind, TTL, the value, and
/// about 8 bytes of framing per column.
fn row_value_bytes(value: &Value) -> usize {
    let value = match value {
        Value::F64(_) | Value::I64(_) => 8,
        Value::Bool(_) => 1,
        Value::Str(s) => s.len(),
    };
    8 + 1 + 4 + value + 4 * 8
}

/// A value as the typed columns of `points`. The columns of the other types
/// are *unset*, not null: binding null would write a tombstone per column
/// and row, while an unset column is left untouched. A column left over
/// from an earlier write of the same timestamp with another type is never
/// read, because `kind` says which column holds the value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ValueColumns<'a> {
    pub(crate) kind: i8,
    pub(crate) f: MaybeUnset<f64>,
    pub(crate) i: MaybeUnset<i64>,
    pub(crate) b: MaybeUnset<bool>,
    pub(crate) s: MaybeUnset<&'a str>,
}

impl<'a> ValueColumns<'a> {
    pub(crate) fn of(value: &'a Value) -> Self {
        let unset = Self {
            kind: KIND_F64,
            f: MaybeUnset::Unset,
            i: MaybeUnset::Unset,
            b: MaybeUnset::Unset,
            s: MaybeUnset::Unset,
        };
        match value {
            Value::F64(v) => Self {
                kind: KIND_F64,
                f: MaybeUnset::Set(*v),
                ..unset
            },
            Value::I64(v) => Self {
                kind: KIND_I64,
                i: MaybeUnset::Set(*v),
                ..unset
            },
            Value::Bool(v) => Self {
                kind: KIND_BOOL,
                b: MaybeUnset::Set(*v),
                ..unset
            },
            Value::Str(v) => Self {
                kind: KIND_STR,
                s: MaybeUnset::Set(v.as_str()),
                ..unset
            },
        }
    }
}

/// The columns of a `points` row as read: `ts, kind, f, i, b, s`.
pub(crate) type PointColumns<'r> = (
    i64,
    Option<i8>,
    Option<f64>,
    Option<i64>,
    Option<bool>,
    Option<&'r str>,
);

/// Turns a row read from `points` back into a sample.
pub(crate) fn decode_point(row: PointColumns<'_>) -> Result<Sample, ScyllaError> {
    let (ts_ns, kind, f, i, b, s) = row;
    let value = match kind {
        Some(KIND_F64) => f.map(Value::F64),
        Some(KIND_I64) => i.map(Value::I64),
        Some(KIND_BOOL) => b.map(Value::Bool),
        Some(KIND_STR) => s.map(|s| Value::Str(s.to_owned())),
        _ => None,
    };
    let value = value.ok_or_else(|| {
        ScyllaError::Decode(format!(
            "points row at ts {ts_ns} has kind {kind:?} without its value column"
        ))
    })?;
    Ok(Sample { ts_ns, value })
}

/// Appends the samples of a `points` result to `out`, up to `limit` in all.
fn decode_samples(
    result: QueryResult,
    limit: usize,
    out: &mut Vec<Sample>,
) -> Result<(), ScyllaError> {
    let rows = result.into_rows_result().map_err(ScyllaError::decode)?;
    for row in rows
        .rows::<PointColumns<'_>>()
        .map_err(ScyllaError::decode)?
    {
        if out.len() >= limit {
            break;
        }
        out.push(decode_point(row.map_err(ScyllaError::decode)?)?);
    }
    Ok(())
}

/// The days of a `series_days` result.
fn days(result: QueryResult) -> Result<Vec<i32>, ScyllaError> {
    let rows = result.into_rows_result().map_err(ScyllaError::decode)?;
    rows.rows::<(i32,)>()
        .map_err(ScyllaError::decode)?
        .map(|r| r.map(|(day,)| day).map_err(ScyllaError::decode))
        .collect()
}

/// Remembers which index rows (`series`, `series_days`) this process wrote,
/// so that each is written once instead of with every batch. Keys are 128-bit
/// hashes under two random seeds, so a false "already written" (which would
/// hide a day from scans) is as likely as a collision of random 128-bit
/// values. When full, the cache is emptied: its cost is only rewrites.
///
/// Skipping a cached `series_days` row is safe because the row's TTL runs to
/// the expiry of the last point its day can hold: while a point of that day
/// can still be written, the row is there.
pub(crate) struct IndexCache {
    capacity: usize,
    seeds: (RandomState, RandomState),
    keys: Mutex<HashSet<u128>>,
}

impl IndexCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seeds: (RandomState::new(), RandomState::new()),
            keys: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn key(&self, parts: &impl Hash) -> u128 {
        (u128::from(self.seeds.0.hash_one(parts)) << 64) | u128::from(self.seeds.1.hash_one(parts))
    }

    pub(crate) fn contains(&self, key: u128) -> bool {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&key)
    }

    pub(crate) fn insert(&self, key: u128) {
        if self.capacity == 0 {
            return;
        }
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if keys.len() >= self.capacity {
            keys.clear();
        }
        keys.insert(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = NS_PER_DAY;
    const HOUR: i64 = 3600 * NS_PER_SEC;

    fn point(metric: &str, ts_ns: i64, value: Value) -> Point {
        Point {
            metric: metric.into(),
            ts_ns,
            value,
        }
    }

    #[test]
    fn days_are_utc_days_since_the_epoch_and_never_overflow() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY - 1), 0);
        assert_eq!(day_of(DAY), 1);
        assert_eq!(day_of(-1), -1);
        assert_eq!(day_of(i64::MAX), 106_751);
        assert_eq!(day_of(i64::MIN), -106_752);
        // 2024-05-01T00:00:00Z is day 19844.
        assert_eq!(day_of(1_714_521_600 * NS_PER_SEC), 19_844);
    }

    #[test]
    fn the_ttl_is_what_remains_of_the_retention_rounded_up() {
        let now = 1_000 * DAY;
        let week = 7 * DAY;
        assert_eq!(point_ttl(now, now, Some(week)), Some(7 * 86_400));
        assert_eq!(point_ttl(now - 6 * DAY, now, Some(week)), Some(86_400));
        // Half a second left: one second, never zero (zero would mean forever).
        assert_eq!(
            point_ttl(now - week + NS_PER_SEC / 2, now, Some(week)),
            Some(1)
        );
        assert_eq!(point_ttl(now - week, now, Some(week)), None, "expires now");
        assert_eq!(point_ttl(now - 8 * DAY, now, Some(week)), None);
        assert_eq!(point_ttl(i64::MIN, now, Some(week)), None);
        assert_eq!(
            point_ttl(now - 100 * DAY, now, None),
            Some(0),
            "no retention: no TTL"
        );
        // Far future points are capped at the server's 20-year limit.
        assert_eq!(
            point_ttl(i64::MAX, now, Some(week)),
            Some(MAX_TTL_SECS as i32)
        );
    }

    #[test]
    fn a_day_row_lives_as_long_as_the_last_point_its_day_can_hold() {
        let now = 1_000 * DAY + 12 * HOUR;
        let retention = Some(3 * DAY);
        // Today's row: until the end of today plus three days.
        assert_eq!(day_ttl(1_000, now, retention), Some(12 * 3600 + 3 * 86_400));
        // Whatever point of the day writes it, the row outlives it.
        for offset in [0, HOUR, 23 * HOUR] {
            let ts = 999 * DAY + offset;
            let point = point_ttl(ts, now, retention).expect("not expired");
            let day = day_ttl(999, now, retention).expect("not expired");
            assert!(day >= point, "day row {day} s < point {point} s");
        }
        assert_eq!(
            day_ttl(996, now, retention),
            None,
            "every point of that day expired"
        );
        assert_eq!(day_ttl(5, now, None), Some(0));
        assert!(day_ttl(i32::MAX, now, retention).is_some());
    }

    #[test]
    fn points_group_by_metric_and_day_and_the_last_write_of_a_timestamp_wins() {
        let now = 10 * DAY;
        let t = 9 * DAY + HOUR;
        let points = vec![
            point("temp", t, Value::F64(1.0)),
            point("temp", t + DAY, Value::F64(9.0)),
            point("temp", t, Value::F64(2.0)),
            point("hum", t, Value::I64(40)),
            point("temp", t - 1, Value::F64(0.5)),
            point("temp", t, Value::Str("last".into())),
        ];
        let parts = partition_rows(&points, now, None);
        type Summary<'p> = Vec<(&'p str, i32, Vec<(i64, Value)>)>;
        let summary: Summary<'_> = parts
            .iter()
            .map(|p| {
                (
                    p.metric,
                    p.day,
                    p.rows.iter().map(|r| (r.ts - t, r.value.clone())).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("hum", 9, vec![(0, Value::I64(40))]),
                (
                    "temp",
                    9,
                    vec![(-1, Value::F64(0.5)), (0, Value::Str("last".into()))]
                ),
                ("temp", 10, vec![(DAY, Value::F64(9.0))]),
            ]
        );
        assert!(parts.iter().flat_map(|p| &p.rows).all(|r| r.ttl == 0));
    }

    #[test]
    fn the_last_point_of_a_timestamp_wins_across_messages_of_one_device() {
        let t = 5 * DAY;
        let dp = |tenant: &str, device: &str, points: Vec<Point>| DevicePoints {
            tenant: tenant.into(),
            device: device.into(),
            points,
        };
        let batch = vec![
            dp("a", "d1", vec![point("m", t, Value::I64(1))]),
            dp("a", "d2", vec![point("m", t, Value::I64(20))]),
            dp("b", "d1", vec![point("m", t, Value::I64(30))]),
            dp(
                "a",
                "d1",
                vec![
                    point("m", t, Value::I64(2)),
                    point("m", t + 1, Value::I64(3)),
                ],
            ),
        ];
        let grouped = group_by_partition(&batch, 6 * DAY, &|_| None);
        type Summary<'p> = Vec<(&'p str, &'p str, Vec<(i64, &'p Value)>)>;
        let summary: Summary<'_> = grouped
            .iter()
            .map(|(tenant, device, part)| {
                (
                    *tenant,
                    *device,
                    part.rows.iter().map(|r| (r.ts - t, r.value)).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a", "d1", vec![(0, &Value::I64(2)), (1, &Value::I64(3))]),
                ("a", "d2", vec![(0, &Value::I64(20))]),
                ("b", "d1", vec![(0, &Value::I64(30))]),
            ],
            "one partition per device and metric-day; the later message wins"
        );
    }

    #[test]
    fn expired_points_are_not_written() {
        let now = 100 * DAY;
        let points = vec![
            point("m", now - 10 * DAY, Value::I64(1)),
            point("m", now - HOUR, Value::I64(2)),
        ];
        let parts = partition_rows(&points, now, Some(7 * DAY));
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].rows.len(), 1);
        assert_eq!(parts[0].rows[0].value, &Value::I64(2));
        assert_eq!(parts[0].rows[0].ttl, 7 * 86_400 - 3600);
    }

    #[test]
    fn batches_hold_one_partition_and_respect_row_and_byte_bounds() {
        let values: Vec<Value> = (0..250).map(Value::I64).collect();
        let part = PartitionRows {
            metric: "m",
            day: 1,
            rows: values
                .iter()
                .enumerate()
                .map(|(i, v)| Row {
                    ts: i as i64,
                    value: v,
                    ttl: 0,
                })
                .collect(),
        };
        let sizes: Vec<usize> = batches("t", "d", &part, 100, 1 << 20)
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, [100, 100, 50]);

        let big = Value::Str("x".repeat(3000));
        let small = Value::I64(1);
        let part = PartitionRows {
            metric: "m",
            day: 1,
            rows: vec![
                Row {
                    ts: 0,
                    value: &small,
                    ttl: 0,
                },
                Row {
                    ts: 1,
                    value: &big,
                    ttl: 0,
                },
                Row {
                    ts: 2,
                    value: &big,
                    ttl: 0,
                },
                Row {
                    ts: 3,
                    value: &small,
                    ttl: 0,
                },
            ],
        };
        let split = batches("t", "d", &part, 100, 4096);
        let ts: Vec<Vec<i64>> = split
            .iter()
            .map(|b| b.iter().map(|r| r.ts).collect())
            .collect();
        assert_eq!(
            ts,
            vec![vec![0, 1], vec![2, 3]],
            "a batch stays under 4096 bytes"
        );
        let huge = Value::Str("x".repeat(10_000));
        let part = PartitionRows {
            metric: "m",
            day: 1,
            rows: vec![Row {
                ts: 0,
                value: &huge,
                ttl: 0,
            }],
        };
        assert_eq!(
            batches("t", "d", &part, 100, 4096).len(),
            1,
            "a row larger than the bound goes alone"
        );
        let empty = PartitionRows {
            metric: "m",
            day: 1,
            rows: vec![],
        };
        assert!(batches("t", "d", &empty, 100, 4096).is_empty());
    }

    /// What the server would store for a bound column.
    fn read<T>(column: MaybeUnset<T>) -> Option<T> {
        match column {
            MaybeUnset::Set(v) => Some(v),
            MaybeUnset::Unset => None,
        }
    }

    #[test]
    fn values_round_trip_through_their_columns() {
        let values = [
            Value::F64(-0.0),
            Value::F64(f64::MAX),
            Value::F64(f64::MIN_POSITIVE),
            Value::F64(f64::NAN),
            Value::I64(i64::MIN),
            Value::I64(i64::MAX),
            Value::Bool(true),
            Value::Bool(false),
            Value::Str(String::new()),
            Value::Str("ünïcødé 🌊".into()),
        ];
        for (n, value) in values.iter().enumerate() {
            let c = ValueColumns::of(value);
            let set = |present: bool| usize::from(present);
            let columns_set = set(matches!(c.f, MaybeUnset::Set(_)))
                + set(matches!(c.i, MaybeUnset::Set(_)))
                + set(matches!(c.b, MaybeUnset::Set(_)))
                + set(matches!(c.s, MaybeUnset::Set(_)));
            assert_eq!(columns_set, 1, "{value:?}: exactly one column is set");
            let back = decode_point((
                n as i64,
                Some(c.kind),
                read(c.f),
                read(c.i),
                read(c.b),
                read(c.s),
            ))
            .expect("decodes");
            assert_eq!(back.ts_ns, n as i64);
            match (value, &back.value) {
                (Value::F64(a), Value::F64(b)) => assert_eq!(a.to_bits(), b.to_bits()),
                (a, b) => assert_eq!(a, b),
            }
        }
    }

    #[test]
    fn a_stale_column_of_another_type_is_ignored_and_a_missing_one_is_an_error() {
        // The row was a double, then rewritten as an int: `f` is still there.
        let row = (5, Some(KIND_I64), Some(1.5), Some(7), None, None);
        assert_eq!(decode_point(row).expect("decodes").value, Value::I64(7));
        let missing = (5, Some(KIND_STR), Some(1.5), None, None, None);
        assert!(matches!(decode_point(missing), Err(ScyllaError::Decode(_))));
        let unknown = (5, Some(9), Some(1.5), None, None, None);
        assert!(matches!(decode_point(unknown), Err(ScyllaError::Decode(_))));
        let none = (5, None, Some(1.5), None, None, None);
        assert!(matches!(decode_point(none), Err(ScyllaError::Decode(_))));
    }

    #[test]
    fn bad_batches_are_refused_before_anything_is_written() {
        let dp = |tenant: &str, metric: &str, value: Value| DevicePoints {
            tenant: tenant.into(),
            device: "d".into(),
            points: vec![point(metric, 0, value)],
        };
        assert!(validate(&[dp("t", "m", Value::I64(1))]).is_ok());
        assert!(matches!(
            validate(&[dp("", "m", Value::I64(1))]),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            validate(&[dp("t", "", Value::I64(1))]),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            validate(&[dp("t", &"m".repeat(MAX_NAME_LEN + 1), Value::I64(1))]),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            validate(&[dp("t", "m", Value::Str("x".repeat(MAX_STRING_LEN + 1)))]),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn the_index_cache_remembers_until_full_then_starts_over() {
        let cache = IndexCache::new(2);
        let a = cache.key(&("day", "t", "d", "m", 1));
        let b = cache.key(&("day", "t", "d", "m", 2));
        let c = cache.key(&("series", "t", "d", "m"));
        assert_ne!(a, b);
        assert_eq!(a, cache.key(&("day", "t", "d", "m", 1)), "keys are stable");
        assert_ne!(
            cache.key(&("t", "dm")),
            cache.key(&("td", "m")),
            "name boundaries are part of the key"
        );
        assert!(!cache.contains(a));
        cache.insert(a);
        cache.insert(b);
        assert!(cache.contains(a) && cache.contains(b));
        cache.insert(c);
        assert!(cache.contains(c));
        assert!(!cache.contains(a), "emptied when full");
        let off = IndexCache::new(0);
        off.insert(a);
        assert!(!off.contains(a), "capacity 0 disables the cache");
    }

    #[test]
    fn statements_bind_full_partition_keys_and_mark_ttls() {
        let texts = statement_texts("ks");
        let text = |name: &str| {
            texts
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t.as_str())
                .expect("statement exists")
        };
        assert!(text("insert_point").ends_with("USING TTL ?"));
        assert!(text("insert_series_day").ends_with("USING TTL ?"));
        for name in ["points_asc", "points_desc", "newest_point"] {
            assert!(
                text(name).contains("tenant = ? AND device = ? AND metric = ? AND day = ?"),
                "{name} reads one partition"
            );
        }
        assert!(text("points_asc").contains("ORDER BY ts ASC LIMIT ?"));
        assert!(text("points_desc").contains("ORDER BY ts DESC LIMIT ?"));
        assert!(text("days_asc").contains("ORDER BY day ASC"));
    }
}
