//! The conformance suite every [`Store`] implementation passes.
//!
//! Each check writes under its own tenant, named with a random suffix, so the
//! suite can run again and again against one shared ScyllaDB keyspace, and
//! concurrently with other suites. Timestamps are relative to the wall clock
//! (the last four days), so that stores with native expiry keep them: the
//! store under test must keep at least seven days (`retention` of `None` or
//! at least 7 days).
//!
//! The checks panic with a message naming what failed, like `assert!`; call
//! them from a test:
//!
//! ```no_run
//! # async fn example(store: &dyn tributary_store::Store) {
//! // `None`: the store keeps points forever.
//! tributary_store::conformance::run_all(store, None).await;
//! # }
//! ```
//!
//! A write that fails with [`StoreError::Backpressure`] is retried for up to
//! [`BACKPRESSURE_DEADLINE`], as any caller would.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tributary_core::time::{NS_PER_DAY, NS_PER_SEC, now_ns};
use tributary_core::{Point, Sample, SeriesKey, Value};

use tributary_core::rollup::{Parts, Rollup, RollupKey};
use tributary_core::series::{SeriesGate, SeriesRefused};

use crate::{DevicePoints, Order, Store, StoreError};

/// How long a write is retried while the store answers `Backpressure`.
pub const BACKPRESSURE_DEADLINE: Duration = Duration::from_secs(30);

const HOUR: i64 = 3600 * NS_PER_SEC;
const ALL: usize = 1_000_000;

/// Runs every check. `retention` is the retention the store was built with;
/// the retention check runs only when it is set.
pub async fn run_all(store: &dyn Store, retention: Option<Duration>) {
    values_round_trip(store).await;
    range_is_half_open(store).await;
    order_and_limit(store).await;
    scans_cross_days(store).await;
    overwrite_keeps_the_last_value(store).await;
    replay_duplicates_nothing(store).await;
    latest_per_metric(store).await;
    latest_never_regresses(store).await;
    metrics_are_listed_sorted(store).await;
    tenants_and_devices_are_isolated(store).await;
    data_is_visible_after_flush(store).await;
    rollups_round_trip(store).await;
    retention_is_per_tenant(store, retention).await;
    if let Some(retention) = retention {
        retention_hides_expired_points(store, retention).await;
    }
}

/// Doubles, ints, bools and strings come back exactly, edge values included.
pub async fn values_round_trip(store: &dyn Store) {
    let tenant = unique_tenant("values");
    let t0 = base_ts();
    let series: Vec<(&str, Vec<Value>)> = vec![
        (
            "double",
            [
                0.0,
                -0.0,
                1.5,
                -2.25e-300,
                f64::MAX,
                -f64::MAX,
                f64::MIN_POSITIVE,
                21.1,
                1e15,
            ]
            .into_iter()
            .map(Value::F64)
            .collect(),
        ),
        (
            "int",
            [i64::MIN, -1, 0, 1, i64::MAX, 42]
                .into_iter()
                .map(Value::I64)
                .collect(),
        ),
        (
            "bool",
            [true, false, false, true]
                .into_iter()
                .map(Value::Bool)
                .collect(),
        ),
        (
            "string",
            [
                "",
                "ok",
                "ok",
                "ünïcødé 🌊",
                "quote\"comma,eq=",
                &"x".repeat(4096),
            ]
            .into_iter()
            .map(|s| Value::Str(s.to_owned()))
            .collect(),
        ),
    ];
    let points = series
        .iter()
        .flat_map(|(metric, values)| {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| point(metric, t0 + i as i64 * NS_PER_SEC, v.clone()))
        })
        .collect();
    write(store, vec![dp(&tenant, "dev-1", points)]).await;
    flush(store).await;
    for (metric, values) in &series {
        let got = scan(
            store,
            &key(&tenant, "dev-1", metric),
            t0,
            t0 + HOUR,
            Order::Asc,
            ALL,
        )
        .await;
        let want: Vec<Sample> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Sample {
                ts_ns: t0 + i as i64 * NS_PER_SEC,
                value: v.clone(),
            })
            .collect();
        assert_same(&got, &want, &format!("values_round_trip: metric {metric}"));
    }
}

/// `scan` returns `from <= ts < to`.
pub async fn range_is_half_open(store: &dyn Store) {
    let tenant = unique_tenant("range");
    let t0 = base_ts();
    let points = (0..10)
        .map(|i| point("m", t0 + i * NS_PER_SEC, Value::I64(i)))
        .collect();
    write(store, vec![dp(&tenant, "d", points)]).await;
    flush(store).await;
    let k = key(&tenant, "d", "m");
    let s = NS_PER_SEC;
    let cases: [(i64, i64, Vec<i64>); 6] = [
        (t0 + 2 * s, t0 + 5 * s, vec![2, 3, 4]),
        (t0 + 2 * s + 1, t0 + 5 * s + 1, vec![3, 4, 5]),
        (t0 + 5 * s, t0 + 5 * s, vec![]),
        (t0 + 6 * s, t0 + 5 * s, vec![]),
        (t0 + 9 * s, t0 + 100 * s, vec![9]),
        (t0 - 100 * s, t0 + s, vec![0]),
    ];
    for (from, to, want) in cases {
        let got = scan(store, &k, from, to, Order::Asc, ALL).await;
        let want: Vec<i64> = want.into_iter().map(|i| t0 + i * s).collect();
        assert_eq!(
            timestamps(&got),
            want,
            "range_is_half_open: scan [{}, {}) relative to t0",
            from - t0,
            to - t0
        );
    }
    let unknown = scan(
        store,
        &key(&tenant, "d", "nope"),
        t0,
        t0 + HOUR,
        Order::Asc,
        ALL,
    )
    .await;
    assert!(
        unknown.is_empty(),
        "range_is_half_open: an unknown metric has no points"
    );
}

/// Ascending and descending order, and `limit` taken from the end read first.
pub async fn order_and_limit(store: &dyn Store) {
    let tenant = unique_tenant("order");
    let t0 = base_ts();
    let points = (0..100)
        .map(|i| point("m", t0 + i * NS_PER_SEC, Value::I64(i)))
        .collect();
    write(store, vec![dp(&tenant, "d", points)]).await;
    flush(store).await;
    let k = key(&tenant, "d", "m");
    let end = t0 + HOUR;
    let ints = |samples: &[Sample]| -> Vec<i64> {
        samples
            .iter()
            .map(|s| if let Value::I64(v) = s.value { v } else { -1 })
            .collect()
    };
    assert_eq!(
        ints(&scan(store, &k, t0, end, Order::Asc, 10).await),
        (0..10).collect::<Vec<_>>(),
        "order_and_limit: asc, limit 10"
    );
    assert_eq!(
        ints(&scan(store, &k, t0, end, Order::Desc, 10).await),
        (90..100).rev().collect::<Vec<_>>(),
        "order_and_limit: desc, limit 10"
    );
    assert_eq!(
        ints(&scan(store, &k, t0, end, Order::Desc, ALL).await),
        (0..100).rev().collect::<Vec<_>>(),
        "order_and_limit: desc, no limit"
    );
    assert_eq!(
        ints(
            &scan(
                store,
                &k,
                t0 + 20 * NS_PER_SEC,
                t0 + 30 * NS_PER_SEC,
                Order::Desc,
                3
            )
            .await
        ),
        vec![29, 28, 27],
        "order_and_limit: desc, limit 3 within a sub-range"
    );
    assert_eq!(
        ints(&scan(store, &k, t0, end, Order::Asc, 100).await).len(),
        100,
        "order_and_limit: limit = count"
    );
    assert!(
        scan(store, &k, t0, end, Order::Asc, 0).await.is_empty(),
        "order_and_limit: limit 0 returns nothing"
    );
}

/// Points spanning several UTC days come back whole, in both orders.
pub async fn scans_cross_days(store: &dyn Store) {
    let tenant = unique_tenant("days");
    let start = day_start(now_ns()) - 4 * NS_PER_DAY + 3 * HOUR;
    // Every 6 hours for 78 hours: five different days.
    let ts: Vec<i64> = (0..14).map(|i| start + i * 6 * HOUR).collect();
    let points = ts
        .iter()
        .enumerate()
        .map(|(i, t)| point("m", *t, Value::F64(i as f64)))
        .collect();
    write(store, vec![dp(&tenant, "d", points)]).await;
    flush(store).await;
    let k = key(&tenant, "d", "m");
    let (from, to) = (start - NS_PER_DAY, start + 5 * NS_PER_DAY);
    assert_eq!(
        timestamps(&scan(store, &k, from, to, Order::Asc, ALL).await),
        ts,
        "scans_cross_days: asc"
    );
    let rev: Vec<i64> = ts.iter().rev().copied().collect();
    assert_eq!(
        timestamps(&scan(store, &k, from, to, Order::Desc, ALL).await),
        rev,
        "scans_cross_days: desc"
    );
    assert_eq!(
        timestamps(&scan(store, &k, from, to, Order::Asc, 5).await),
        ts[..5],
        "scans_cross_days: asc, limit 5"
    );
    assert_eq!(
        timestamps(&scan(store, &k, from, to, Order::Desc, 5).await),
        rev[..5],
        "scans_cross_days: desc, limit 5"
    );
    // From the middle of one day to the middle of another.
    let (a, b) = (ts[3] + 1, ts[9] + 1);
    assert_eq!(
        timestamps(&scan(store, &k, a, b, Order::Asc, ALL).await),
        ts[4..10],
        "scans_cross_days: sub-range"
    );
    assert_eq!(
        timestamps(&scan(store, &k, a, b, Order::Desc, ALL).await),
        ts[4..10].iter().rev().copied().collect::<Vec<_>>(),
        "scans_cross_days: sub-range, desc"
    );
}

/// Writing a timestamp again replaces its value, even with another type.
pub async fn overwrite_keeps_the_last_value(store: &dyn Store) {
    let tenant = unique_tenant("overwrite");
    let t0 = base_ts();
    let k = key(&tenant, "d", "m");
    write(
        store,
        vec![dp(
            &tenant,
            "d",
            vec![
                point("m", t0, Value::F64(1.0)),
                point("m", t0 + 1, Value::F64(1.5)),
            ],
        )],
    )
    .await;
    flush(store).await;
    write(
        store,
        vec![dp(&tenant, "d", vec![point("m", t0, Value::F64(2.0))])],
    )
    .await;
    // Twice in one batch, and again with another type: the last one wins.
    write(
        store,
        vec![dp(
            &tenant,
            "d",
            vec![
                point("m", t0 + 1, Value::F64(5.0)),
                point("m", t0 + 1, Value::F64(6.0)),
                point("m", t0 + 1, Value::I64(7)),
            ],
        )],
    )
    .await;
    flush(store).await;
    let got = scan(store, &k, t0, t0 + HOUR, Order::Asc, ALL).await;
    let want = vec![
        Sample {
            ts_ns: t0,
            value: Value::F64(2.0),
        },
        Sample {
            ts_ns: t0 + 1,
            value: Value::I64(7),
        },
    ];
    assert_same(&got, &want, "overwrite_keeps_the_last_value");
}

/// Writing the same batch again (a log replay) stores nothing twice.
pub async fn replay_duplicates_nothing(store: &dyn Store) {
    let tenant = unique_tenant("replay");
    let t0 = base_ts();
    let batch: Vec<DevicePoints> = (0..3)
        .map(|d| {
            let points = (0..50)
                .flat_map(|i| {
                    let t = t0 + i * 10 * NS_PER_SEC;
                    [
                        point("temp", t, Value::F64(f64::from(i as i32) / 2.0)),
                        point("count", t, Value::I64(i)),
                    ]
                })
                .collect();
            dp(&tenant, &format!("d{d}"), points)
        })
        .collect();
    write(store, batch.clone()).await;
    flush(store).await;
    write(store, batch.clone()).await;
    write(store, batch).await;
    flush(store).await;
    for d in 0..3 {
        for metric in ["temp", "count"] {
            let got = scan(
                store,
                &key(&tenant, &format!("d{d}"), metric),
                t0,
                t0 + HOUR,
                Order::Asc,
                ALL,
            )
            .await;
            assert_eq!(got.len(), 50, "replay_duplicates_nothing: d{d}/{metric}");
            let unique: std::collections::BTreeSet<i64> = got.iter().map(|s| s.ts_ns).collect();
            assert_eq!(
                unique.len(),
                50,
                "replay_duplicates_nothing: d{d}/{metric} has duplicate timestamps"
            );
        }
    }
}

/// `latest` returns the newest point of each metric, sorted by metric.
pub async fn latest_per_metric(store: &dyn Store) {
    let tenant = unique_tenant("latest");
    let t0 = base_ts();
    let points = vec![
        point("c", t0, Value::Bool(true)),
        point("a", t0, Value::F64(1.0)),
        point("a", t0 + 5, Value::F64(5.0)),
        point("a", t0 + 3, Value::F64(3.0)),
        point("b", t0 + 1, Value::Str("on".into())),
        point("c", t0 + 9, Value::Bool(false)),
    ];
    write(store, vec![dp(&tenant, "d", points)]).await;
    flush(store).await;
    let all = must(store.latest(&tenant, "d", &[]).await, "latest");
    let got: Vec<(String, i64, Value)> = all
        .into_iter()
        .map(|l| (l.metric, l.ts_ns - t0, l.value))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".to_owned(), 5, Value::F64(5.0)),
            ("b".to_owned(), 1, Value::Str("on".into())),
            ("c".to_owned(), 9, Value::Bool(false)),
        ],
        "latest_per_metric: every metric"
    );
    let some = must(
        store
            .latest(&tenant, "d", &["c".into(), "a".into(), "missing".into()])
            .await,
        "latest",
    );
    let names: Vec<&str> = some.iter().map(|l| l.metric.as_str()).collect();
    assert_eq!(
        names,
        ["a", "c"],
        "latest_per_metric: chosen metrics, sorted, unknown ones absent"
    );
    let none = must(store.latest(&tenant, "no-such-device", &[]).await, "latest");
    assert!(
        none.is_empty(),
        "latest_per_metric: an unknown device has no latest values"
    );
}

/// An older point arriving later does not replace the latest value; a
/// rewrite of the latest timestamp does.
pub async fn latest_never_regresses(store: &dyn Store) {
    let tenant = unique_tenant("regress");
    let t0 = base_ts();
    let latest_of = async |store: &dyn Store| -> Vec<(i64, Value)> {
        let got = must(
            store.latest(&tenant, "d", &["m".to_owned()]).await,
            "latest",
        );
        got.into_iter().map(|l| (l.ts_ns - t0, l.value)).collect()
    };
    write(
        store,
        vec![dp(&tenant, "d", vec![point("m", t0 + 100, Value::I64(1))])],
    )
    .await;
    flush(store).await;
    write(
        store,
        vec![dp(&tenant, "d", vec![point("m", t0 + 50, Value::I64(0))])],
    )
    .await;
    flush(store).await;
    assert_eq!(
        latest_of(store).await,
        [(100, Value::I64(1))],
        "latest_never_regresses: an older point arrived"
    );
    write(
        store,
        vec![dp(&tenant, "d", vec![point("m", t0 + 100, Value::I64(2))])],
    )
    .await;
    assert_eq!(
        latest_of(store).await,
        [(100, Value::I64(2))],
        "latest_never_regresses: the latest ts was rewritten"
    );
    write(
        store,
        vec![dp(&tenant, "d", vec![point("m", t0 + 200, Value::I64(3))])],
    )
    .await;
    flush(store).await;
    assert_eq!(
        latest_of(store).await,
        [(200, Value::I64(3))],
        "latest_never_regresses: a newer point arrived"
    );
}

/// `list_metrics` returns every metric of a device once, sorted.
pub async fn metrics_are_listed_sorted(store: &dyn Store) {
    let tenant = unique_tenant("list");
    let t0 = base_ts();
    let names = ["zeta", "alpha", "Mid", "beta.x", "a/b", "alpha_2"];
    let points = names
        .iter()
        .enumerate()
        .map(|(i, m)| point(m, t0 + i as i64, Value::I64(1)))
        .collect();
    write(store, vec![dp(&tenant, "d", points)]).await;
    write(
        store,
        vec![dp(
            &tenant,
            "d",
            vec![point("zeta", t0 + 99, Value::I64(2))],
        )],
    )
    .await;
    flush(store).await;
    let mut want: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(
        must(store.list_metrics(&tenant, "d").await, "list_metrics"),
        want,
        "metrics_are_listed_sorted"
    );
    assert!(
        must(store.list_metrics(&tenant, "other").await, "list_metrics").is_empty(),
        "metrics_are_listed_sorted: an unknown device has no metrics"
    );
}

/// Tenants and devices never see each other's points.
pub async fn tenants_and_devices_are_isolated(store: &dyn Store) {
    let (a, b) = (unique_tenant("iso-a"), unique_tenant("iso-b"));
    let t0 = base_ts();
    write(
        store,
        vec![
            dp(
                &a,
                "d1",
                vec![
                    point("m", t0, Value::I64(1)),
                    point("only-a", t0, Value::I64(9)),
                ],
            ),
            dp(
                &b,
                "d1",
                vec![
                    point("m", t0, Value::I64(2)),
                    point("m", t0 + 1, Value::I64(22)),
                ],
            ),
            dp(&a, "d2", vec![point("m", t0, Value::I64(3))]),
        ],
    )
    .await;
    flush(store).await;
    let values =
        |samples: Vec<Sample>| -> Vec<Value> { samples.into_iter().map(|s| s.value).collect() };
    for (tenant, device, want) in [
        (&a, "d1", vec![Value::I64(1)]),
        (&b, "d1", vec![Value::I64(2), Value::I64(22)]),
        (&a, "d2", vec![Value::I64(3)]),
    ] {
        let got = values(
            scan(
                store,
                &key(tenant, device, "m"),
                t0,
                t0 + HOUR,
                Order::Asc,
                ALL,
            )
            .await,
        );
        assert_eq!(
            got, want,
            "tenants_and_devices_are_isolated: {tenant}/{device}"
        );
    }
    assert!(
        scan(
            store,
            &key(&b, "d1", "only-a"),
            t0,
            t0 + HOUR,
            Order::Asc,
            ALL
        )
        .await
        .is_empty(),
        "tenants_and_devices_are_isolated: a metric of tenant A is not visible in tenant B"
    );
    assert_eq!(
        must(store.list_metrics(&a, "d1").await, "list_metrics"),
        ["m", "only-a"]
    );
    assert_eq!(
        must(store.list_metrics(&b, "d1").await, "list_metrics"),
        ["m"]
    );
    let latest_b = must(store.latest(&b, "d1", &[]).await, "latest");
    assert_eq!(
        latest_b.len(),
        1,
        "tenants_and_devices_are_isolated: latest of tenant B"
    );
    assert_eq!(latest_b[0].value, Value::I64(22));
}

/// Whatever was written before a flush is readable after it, across
/// several flushes.
pub async fn data_is_visible_after_flush(store: &dyn Store) {
    let tenant = unique_tenant("visible");
    let t0 = base_ts();
    let k = key(&tenant, "d", "m");
    for round in 0..5i64 {
        let points = (0..20)
            .map(|i| point("m", t0 + (round * 20 + i) * NS_PER_SEC, Value::I64(round)))
            .collect();
        write(store, vec![dp(&tenant, "d", points)]).await;
        flush(store).await;
        let got = scan(store, &k, t0, t0 + HOUR, Order::Asc, ALL).await;
        assert_eq!(
            got.len() as i64,
            (round + 1) * 20,
            "data_is_visible_after_flush: after flush {round}"
        );
    }
}

/// A tenant's own retention holds for its data alone: its raw points past
/// it are neither returned nor counted as latest, while another tenant's of
/// the same age are; its rollup rows past their tier's retention are
/// neither kept nor returned. `configured` is the store's own retention
/// (the default); the policy is set back to it at the end.
pub async fn retention_is_per_tenant(store: &dyn Store, configured: Option<Duration>) {
    use std::sync::Arc;
    use tributary_core::retention::{Keep, RetentionPolicy, RetentionSettings};
    use tributary_core::rollup::Tiers;
    let defaults = || RetentionPolicy::new(Keep::from_duration(configured), Tiers::default());
    let short = unique_tenant("retention-short");
    let other = unique_tenant("retention-other");
    let policy = defaults();
    policy.set(
        &short,
        &RetentionSettings::from_named([("raw", "2h"), ("1m", "1d")]).expect("valid settings"),
    );
    store.set_retention(Arc::new(policy));
    let now = now_ns();
    let (old, fresh) = (now - 3 * HOUR, now - HOUR / 2);
    for tenant in [&short, &other] {
        write(
            store,
            vec![dp(
                tenant,
                "d",
                vec![
                    point("t", old, Value::F64(1.0)),
                    point("t", fresh, Value::F64(2.0)),
                ],
            )],
        )
        .await;
    }
    flush(store).await;
    let series = key(&short, "d", "t");
    let got = scan(store, &series, now - 4 * HOUR, now, Order::Asc, ALL).await;
    assert_eq!(
        timestamps(&got),
        [fresh],
        "retention_is_per_tenant: raw points past the tenant's two hours"
    );
    let got = scan(
        store,
        &key(&other, "d", "t"),
        now - 4 * HOUR,
        now,
        Order::Asc,
        ALL,
    )
    .await;
    assert_eq!(
        timestamps(&got),
        [old, fresh],
        "retention_is_per_tenant: another tenant keeps the default"
    );

    let minute = 60 * NS_PER_SEC;
    let rk = |width_ns: i64, ts: i64| RollupKey {
        series: series.clone(),
        width_ns,
        start_ns: ts - ts.rem_euclid(width_ns),
    };
    let expired = now - 2 * NS_PER_DAY;
    let one = |ts: i64| {
        Rollup::of(&[Sample {
            ts_ns: ts,
            value: Value::F64(1.0),
        }])
    };
    must(
        store
            .write_rollups(&[
                (rk(minute, expired), one(expired)),
                (rk(minute, old), one(old)),
                (rk(60 * minute, expired), one(expired)),
            ])
            .await,
        "write rollups",
    );
    must(store.apply_retention(now_ns()).await, "apply_retention");
    let starts = |rows: Vec<(i64, Rollup)>| rows.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
    let minutes = must(
        store
            .scan_rollups(&series, minute, now - 3 * NS_PER_DAY, now, ALL)
            .await,
        "scan minutes",
    );
    assert_eq!(
        starts(minutes),
        [rk(minute, old).start_ns],
        "retention_is_per_tenant: minute buckets past the tenant's day"
    );
    let hours = must(
        store
            .scan_rollups(&series, 60 * minute, now - 3 * NS_PER_DAY, now, ALL)
            .await,
        "scan hours",
    );
    assert_eq!(
        starts(hours),
        [rk(60 * minute, expired).start_ns],
        "retention_is_per_tenant: hour buckets are kept for ever"
    );
    let got = scan(store, &series, now - 4 * HOUR, now, Order::Asc, ALL).await;
    assert_eq!(
        timestamps(&got),
        [fresh],
        "retention_is_per_tenant: after apply_retention"
    );
    store.set_retention(Arc::new(defaults()));
}

/// Points older than `now - retention` are not returned. The store must
/// have been built with this `retention` (at least one second).
pub async fn retention_hides_expired_points(store: &dyn Store, retention: Duration) {
    let retention_ns = i64::try_from(retention.as_nanos()).unwrap_or(i64::MAX);
    assert!(
        retention_ns >= NS_PER_SEC,
        "retention_hides_expired_points needs a retention of at least 1 s"
    );
    let tenant = unique_tenant("retention");
    let margin = (retention_ns / 4).min(HOUR);
    let now = now_ns();
    let cutoff = now.saturating_sub(retention_ns);
    let expired = [
        cutoff.saturating_sub(2 * margin),
        cutoff.saturating_sub(margin),
    ];
    let kept = [cutoff.saturating_add(margin), now - margin];
    let points = expired
        .iter()
        .chain(&kept)
        .map(|t| point("m", *t, Value::I64(*t)))
        .collect();
    write(store, vec![dp(&tenant, "d", points)]).await;
    flush(store).await;
    let removed = store.apply_retention(now_ns()).await;
    must(removed, "apply_retention");
    let from = cutoff.saturating_sub(retention_ns).saturating_sub(HOUR);
    let got = scan(
        store,
        &key(&tenant, "d", "m"),
        from,
        now + HOUR,
        Order::Asc,
        ALL,
    )
    .await;
    // A point within `margin` of the cutoff may expire while the check runs.
    assert_eq!(
        timestamps(&got),
        kept,
        "retention_hides_expired_points: points older than now - retention"
    );
    let latest = must(store.latest(&tenant, "d", &[]).await, "latest");
    assert_eq!(
        latest.first().map(|l| l.ts_ns),
        Some(kept[1]),
        "retention_hides_expired_points: latest"
    );
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A tenant name no other run uses: `conf-<check>-<12 hex digits>`.
/// Rollups of the default tiers (1m, 1h, 1d) are read back as written,
/// replaced by a later write, and scanned by bucket start with a limit; one
/// series' or tier's buckets never show in another's.
pub async fn rollups_round_trip(store: &dyn Store) {
    const MINUTE: i64 = 60 * NS_PER_SEC;
    let tenant = unique_tenant("rollups");
    let base = day_start(base_ts());
    // The series exist: they have points.
    write(
        store,
        vec![dp(
            &tenant,
            "d1",
            vec![
                point("t", base, Value::F64(1.0)),
                point("u", base, Value::F64(1.0)),
            ],
        )],
    )
    .await;
    let series = key(&tenant, "d1", "t");
    let rollup_of = |values: &[f64], first_ts: i64| {
        let samples: Vec<Sample> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Sample {
                ts_ns: first_ts + i as i64 * NS_PER_SEC,
                value: Value::F64(*v),
            })
            .collect();
        Rollup::of(&samples)
    };
    let rk = |series: &SeriesKey, width_ns: i64, start_ns: i64| RollupKey {
        series: series.clone(),
        width_ns,
        start_ns,
    };
    let mut rows = Vec::new();
    for m in 0..5 {
        let start = base + m * MINUTE;
        rows.push((
            rk(&series, MINUTE, start),
            rollup_of(&[m as f64, 2.0], start),
        ));
    }
    rows.push((rk(&series, 60 * MINUTE, base), rollup_of(&[9.0], base)));
    let mut with_string = rollup_of(&[1.5], base);
    with_string.add(&Sample {
        ts_ns: base + 30 * NS_PER_SEC,
        value: Value::Str("on".into()),
    });
    rows.push((rk(&series, NS_PER_DAY, base), with_string.clone()));
    must(store.write_rollups(&rows).await, "write rollups");

    // From when a tier is complete: the first time recorded stays. (A
    // width no other check uses, since the store is shared.)
    let width = (RandomState::new().hash_one(unique_tenant("w")) % 1_000_000_000) as i64 + 1;
    assert_eq!(must(store.rollups_since(width).await, "since"), None);
    assert_eq!(
        must(store.mark_rollups_since(width, 500).await, "mark"),
        500
    );
    assert_eq!(
        must(store.mark_rollups_since(width, 900).await, "mark again"),
        500
    );
    assert_eq!(must(store.rollups_since(width).await, "since"), Some(500));

    let other = key(&tenant, "d1", "u");
    let got = must(
        store
            .get_rollups(&[
                rk(&series, MINUTE, base + 2 * MINUTE),
                rk(&series, MINUTE, base + 7 * MINUTE),
                rk(&other, MINUTE, base),
                rk(&series, NS_PER_DAY, base),
            ])
            .await,
        "get rollups",
    );
    assert_eq!(
        got,
        vec![
            Some(rollup_of(&[2.0, 2.0], base + 2 * MINUTE)),
            None,
            None,
            Some(with_string)
        ],
        "rollups: present, absent bucket, other series, day tier with a string"
    );

    // A later write replaces a bucket.
    let replaced = rollup_of(&[7.0, 8.0, 9.0], base + MINUTE);
    must(
        store
            .write_rollups(&[(rk(&series, MINUTE, base + MINUTE), replaced.clone())])
            .await,
        "rewrite a rollup",
    );
    let scanned = must(
        store
            .scan_rollups(&series, MINUTE, base + MINUTE, base + 4 * MINUTE, 100)
            .await,
        "scan rollups",
    );
    let starts: Vec<i64> = scanned.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        starts,
        vec![base + MINUTE, base + 2 * MINUTE, base + 3 * MINUTE],
        "rollup scan is [from, to) by bucket start, in order"
    );
    assert_eq!(scanned[0].1, replaced, "the rewritten bucket");
    let limited = must(
        store
            .scan_rollups(&series, MINUTE, base, base + NS_PER_DAY, 2)
            .await,
        "scan rollups with a limit",
    );
    assert_eq!(limited.len(), 2, "limit");
    let hours = must(
        store
            .scan_rollups(&series, 60 * MINUTE, base, base + NS_PER_DAY, 100)
            .await,
        "scan the hour tier",
    );
    assert_eq!(hours.len(), 1, "tiers are apart: {hours:?}");
    assert!(
        must(
            store
                .scan_rollups(&other, MINUTE, base, base + NS_PER_DAY, 100)
                .await,
            "scan another series"
        )
        .is_empty(),
        "series are apart"
    );

    // A fold hands over what each series' scan returns, series by series,
    // in order, limited per series; a fold that reads only some parts of a
    // bucket gets those parts right.
    let keys = [series.clone(), other.clone(), key(&tenant, "nobody", "t")];
    let sums_only = Parts {
        spread: false,
        ends: false,
    };
    for (from, to, limit) in [
        (base, base + NS_PER_DAY, 100),
        (base + MINUTE, base + 4 * MINUTE, 100),
        (base, base + NS_PER_DAY, 2),
    ] {
        let mut expected: Vec<(usize, i64, Rollup)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let rows = must(
                store.scan_rollups(k, MINUTE, from, to, limit).await,
                "scan one series",
            );
            expected.extend(rows.into_iter().map(|(s, r)| (i, s, r)));
        }
        assert!(!expected.is_empty(), "the scan found buckets");
        for parts in [Parts::ALL, sums_only] {
            let folded = must(
                store
                    .fold_rollups_many(&keys, MINUTE, from, to, limit, Box::new(Collect::of(parts)))
                    .await,
                "fold many",
            );
            let folded: Box<dyn std::any::Any> = folded;
            let folded = folded.downcast::<Collect>().expect("the fold given back");
            let project = |rows: &[(usize, i64, Rollup)]| -> Vec<String> {
                rows.iter()
                    .map(|(i, s, r)| {
                        let ends = parts.ends.then(|| (r.first.clone(), r.last.clone()));
                        let spread = parts.spread.then_some((r.mean, r.m2));
                        format!(
                            "{i} {s} n={} num={} sum={} min={} max={} {spread:?} {ends:?}",
                            r.count, r.numeric, r.sum, r.min, r.max
                        )
                    })
                    .collect()
            };
            assert_eq!(
                project(&folded.got),
                project(&expected),
                "fold of [{from}, {to}) limit {limit}, {parts:?}"
            );
        }
        let many = must(
            store
                .scan_rollups_many(&keys, MINUTE, from, to, limit)
                .await,
            "scan many",
        );
        let many: Vec<(usize, i64, Rollup)> = many
            .into_iter()
            .enumerate()
            .flat_map(|(i, rows)| rows.into_iter().map(move |(s, r)| (i, s, r)))
            .collect();
        assert_eq!(many, expected, "scan many of [{from}, {to}) limit {limit}");
    }
}

/// A fold that keeps what it is given, asking for `parts`.
struct Collect {
    parts: Parts,
    got: Vec<(usize, i64, Rollup)>,
}

impl Collect {
    fn of(parts: Parts) -> Self {
        Self {
            parts,
            got: Vec::new(),
        }
    }
}

impl crate::RollupFold for Collect {
    fn bucket(&mut self, series: usize, start_ns: i64, rollup: &Rollup) {
        self.got.push((series, start_ns, rollup.clone()));
    }

    fn parts(&self) -> Parts {
        self.parts
    }
}

/// Runs every check of a [`SeriesGate`]: the gate of a store with a series
/// limit. `gate` must not have a store-wide limit below 100 series.
pub async fn series_gate_run_all(gate: &dyn SeriesGate) {
    series_gate_known_series_cost_nothing(gate).await;
    series_gate_refuses_a_whole_batch_past_the_quota(gate).await;
    series_gate_counts_tenants_apart(gate).await;
}

/// A series admitted once is admitted again, even at a quota it fills.
pub async fn series_gate_known_series_cost_nothing(gate: &dyn SeriesGate) {
    let tenant = unique_tenant("gate-known");
    for round in 0..3 {
        assert_eq!(
            gate.admit(&tenant, "d1", &["a", "b"], 2).await,
            Ok(()),
            "round {round}: two series within a quota of 2"
        );
    }
    assert_eq!(
        gate.admit(&tenant, "d1", &["a"], 2).await,
        Ok(()),
        "a known series at a full quota"
    );
}

/// New series past the quota are refused, none of the batch is created,
/// and the same metric of another device is another series.
pub async fn series_gate_refuses_a_whole_batch_past_the_quota(gate: &dyn SeriesGate) {
    let tenant = unique_tenant("gate-quota");
    assert_eq!(gate.admit(&tenant, "d1", &["a", "b"], 3).await, Ok(()));
    assert_eq!(
        gate.admit(&tenant, "d1", &["c", "d"], 3).await,
        Err(SeriesRefused::TenantQuota { limit: 3 }),
        "two new series, one place left"
    );
    assert_eq!(
        gate.admit(&tenant, "d1", &["c"], 3).await,
        Ok(()),
        "the refused batch created nothing, so c fits"
    );
    assert_eq!(
        gate.admit(&tenant, "d2", &["a"], 3).await,
        Err(SeriesRefused::TenantQuota { limit: 3 }),
        "d2/a is a series of its own"
    );
    assert_eq!(
        gate.admit(&tenant, "d2", &["a"], 4).await,
        Ok(()),
        "a raised quota takes effect"
    );
}

/// One tenant at its quota leaves another's untouched.
pub async fn series_gate_counts_tenants_apart(gate: &dyn SeriesGate) {
    let full = unique_tenant("gate-full");
    let other = unique_tenant("gate-other");
    assert_eq!(gate.admit(&full, "d1", &["a"], 1).await, Ok(()));
    assert_eq!(
        gate.admit(&full, "d1", &["b"], 1).await,
        Err(SeriesRefused::TenantQuota { limit: 1 })
    );
    assert_eq!(
        gate.admit(&other, "d1", &["a", "b"], 2).await,
        Ok(()),
        "another tenant's quota is its own"
    );
}

fn unique_tenant(check: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // RandomState is seeded per process from the OS; mix in time and a counter.
    let h = RandomState::new().hash_one((now_ns(), n, std::process::id()));
    format!("conf-{check}-{:012x}", h & 0xffff_ffff_ffff)
}

/// A round timestamp two days ago: inside any retention of at least 7 days.
fn base_ts() -> i64 {
    day_start(now_ns()) - 2 * NS_PER_DAY + 7 * HOUR
}

fn day_start(ts: i64) -> i64 {
    ts.div_euclid(NS_PER_DAY) * NS_PER_DAY
}

fn point(metric: &str, ts_ns: i64, value: Value) -> Point {
    Point {
        metric: metric.to_owned(),
        ts_ns,
        value,
    }
}

fn dp(tenant: &str, device: &str, points: Vec<Point>) -> DevicePoints {
    DevicePoints {
        tenant: tenant.to_owned(),
        device: device.to_owned(),
        points,
    }
}

fn key(tenant: &str, device: &str, metric: &str) -> SeriesKey {
    SeriesKey::new(tenant, device, metric)
}

fn timestamps(samples: &[Sample]) -> Vec<i64> {
    samples.iter().map(|s| s.ts_ns).collect()
}

fn must<T>(r: Result<T, StoreError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

/// Writes, retrying while the store pushes back.
async fn write(store: &dyn Store, batch: Vec<DevicePoints>) {
    let deadline = Instant::now() + BACKPRESSURE_DEADLINE;
    let mut pause = Duration::from_millis(5);
    loop {
        match store.write(&batch).await {
            Ok(()) => return,
            Err(StoreError::Backpressure) if Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
}

async fn flush(store: &dyn Store) {
    must(store.flush().await, "flush");
}

async fn scan(
    store: &dyn Store,
    k: &SeriesKey,
    from: i64,
    to: i64,
    order: Order,
    limit: usize,
) -> Vec<Sample> {
    must(store.scan(k, from, to, order, limit).await, "scan")
}

/// Equality that tells `-0.0` from `0.0`.
fn assert_same(got: &[Sample], want: &[Sample], what: &str) {
    let bits = |s: &[Sample]| -> Vec<(i64, Option<u64>, Value)> {
        s.iter()
            .map(|p| {
                (
                    p.ts_ns,
                    if let Value::F64(x) = p.value {
                        Some(x.to_bits())
                    } else {
                        None
                    },
                    p.value.clone(),
                )
            })
            .collect()
    };
    assert_eq!(bits(got), bits(want), "{what}");
}

/// Runs every check of a [`crate::CheckpointStore`].
pub async fn checkpoint_run_all(store: &dyn crate::CheckpointStore) {
    checkpoints_round_trip(store).await;
    checkpoint_limits(store).await;
}

/// Rows change incrementally with their offset; groups and partitions are
/// apart.
pub async fn checkpoints_round_trip(store: &dyn crate::CheckpointStore) {
    let group = unique_tenant("ckpt");
    assert_eq!(
        must(store.load_checkpoint(&group, 3).await, "load"),
        None,
        "nothing saved yet"
    );
    let row = |k: &str, v: &str| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()));
    must(
        store
            .save_checkpoint(
                &group,
                3,
                100,
                vec![row("b", "2"), row("a", "1"), row("a\0x", "3")],
            )
            .await,
        "save",
    );
    must(
        store
            .save_checkpoint(&group, 4, 7, vec![row("a", "other partition")])
            .await,
        "save another partition",
    );
    let got = must(store.load_checkpoint(&group, 3).await, "load").expect("saved");
    assert_eq!(got.offset, 100);
    let bytes = |rows: &[(&str, &str)]| -> Vec<(Vec<u8>, Vec<u8>)> {
        rows.iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    };
    assert_eq!(
        got.rows,
        bytes(&[("a", "1"), ("a\0x", "3"), ("b", "2")]),
        "rows sorted by key"
    );
    // A second save changes some rows, deletes one, keeps the rest.
    must(
        store
            .save_checkpoint(
                &group,
                3,
                250,
                vec![row("b", "22"), (b"a".to_vec(), None), row("c", "3")],
            )
            .await,
        "save again",
    );
    let got = must(store.load_checkpoint(&group, 3).await, "load").expect("saved");
    assert_eq!(got.offset, 250);
    assert_eq!(got.rows, bytes(&[("a\0x", "3"), ("b", "22"), ("c", "3")]));
    // An offset with no changes.
    must(
        store.save_checkpoint(&group, 3, 300, Vec::new()).await,
        "save offset",
    );
    assert_eq!(
        must(store.load_checkpoint(&group, 3).await, "load").map(|c| c.offset),
        Some(300)
    );
    let other = must(store.load_checkpoint(&group, 4).await, "load").expect("saved");
    assert_eq!(other.rows, bytes(&[("a", "other partition")]));
    let another_group = format!("{group}-x");
    assert_eq!(
        must(store.load_checkpoint(&another_group, 3).await, "load"),
        None,
        "groups are apart"
    );
}

/// Oversized keys and values are refused before anything changes.
pub async fn checkpoint_limits(store: &dyn crate::CheckpointStore) {
    let group = unique_tenant("ckpt-limits");
    let big_key = vec![b'k'; crate::checkpoint::MAX_CHECKPOINT_KEY + 1];
    let big_value = vec![0u8; crate::checkpoint::MAX_CHECKPOINT_VALUE + 1];
    for changes in [
        vec![
            (b"ok".to_vec(), Some(b"1".to_vec())),
            (big_key, Some(b"1".to_vec())),
        ],
        vec![(b"ok".to_vec(), Some(big_value))],
        vec![(Vec::new(), Some(b"1".to_vec()))],
    ] {
        assert!(
            matches!(
                store.save_checkpoint(&group, 0, 1, changes).await,
                Err(StoreError::Invalid(_))
            ),
            "refused"
        );
    }
    assert_eq!(
        must(store.load_checkpoint(&group, 0).await, "load"),
        None,
        "nothing of a refused save was kept"
    );
}

/// Every alert-history check.
pub async fn alerts_run_all(store: &dyn crate::AlertStore) {
    alerts_round_trip(store).await;
    alerts_listing(store).await;
    alerts_expiry(store).await;
    alert_limits(store).await;
}

fn alert(tenant: &str, id: &str, started: i64, updated: i64) -> crate::StoredAlert {
    crate::StoredAlert {
        tenant: tenant.to_owned(),
        alert_id: id.to_owned(),
        started_at_ns: started,
        updated_at_ns: updated,
        value: format!("{id}@{updated}").into_bytes(),
    }
}

/// An alert reads back exactly; a later write of the same id replaces it.
pub async fn alerts_round_trip(store: &dyn crate::AlertStore) {
    let t = unique_tenant("alerts");
    assert_eq!(must(store.get_alert(&t, "a1").await, "get"), None);
    must(
        store.put_alerts(vec![alert(&t, "a1", 100, 100)]).await,
        "put",
    );
    assert_eq!(
        must(store.get_alert(&t, "a1").await, "get"),
        Some(alert(&t, "a1", 100, 100))
    );
    must(
        store.put_alerts(vec![alert(&t, "a1", 100, 250)]).await,
        "put",
    );
    assert_eq!(
        must(store.get_alert(&t, "a1").await, "get"),
        Some(alert(&t, "a1", 100, 250)),
        "replaced"
    );
    let other = unique_tenant("alerts");
    assert_eq!(
        must(store.get_alert(&other, "a1").await, "get"),
        None,
        "tenants are apart"
    );
    assert_eq!(
        must(store.list_alerts(&t, (0, 1000), None, 10).await, "list").len(),
        1,
        "one alert, not one per write"
    );
}

/// Newest first, within the range, in pages.
pub async fn alerts_listing(store: &dyn crate::AlertStore) {
    let t = unique_tenant("alerts");
    let other = unique_tenant("alerts");
    let mut all = Vec::new();
    for i in 0..10_i64 {
        // Two alerts start at each time.
        all.push(alert(&t, &format!("a{i}"), 100 + i / 2 * 10, 1));
    }
    all.push(alert(&other, "x", 120, 1));
    must(store.put_alerts(all).await, "put");
    let ids =
        |v: Vec<crate::StoredAlert>| -> Vec<String> { v.into_iter().map(|a| a.alert_id).collect() };
    let page = must(store.list_alerts(&t, (0, i64::MAX), None, 3).await, "list");
    assert_eq!(ids(page.clone()), ["a9", "a8", "a7"]);
    let last = page.last().unwrap();
    let next = must(
        store
            .list_alerts(
                &t,
                (0, i64::MAX),
                Some((last.started_at_ns, last.alert_id.clone())),
                3,
            )
            .await,
        "list",
    );
    assert_eq!(ids(next), ["a6", "a5", "a4"]);
    // [110, 130): the alerts that started at 110 and 120.
    let ranged = must(store.list_alerts(&t, (110, 130), None, 100).await, "list");
    assert_eq!(ids(ranged), ["a5", "a4", "a3", "a2"]);
    assert!(
        must(store.list_alerts(&t, (130, 130), None, 100).await, "list").is_empty(),
        "an empty range"
    );
    assert_eq!(
        ids(must(
            store.list_alerts(&other, (0, i64::MAX), None, 100).await,
            "list"
        )),
        ["x"]
    );
}

/// Alerts that last changed before the cutoff go, with their ids.
pub async fn alerts_expiry(store: &dyn crate::AlertStore) {
    let t = unique_tenant("alerts");
    must(
        store
            .put_alerts(vec![alert(&t, "old", 10, 50), alert(&t, "new", 20, 500)])
            .await,
        "put",
    );
    let expired = must(store.expire_alerts(100).await, "expire");
    let left = must(store.list_alerts(&t, (0, i64::MAX), None, 10).await, "list");
    if expired == 0 {
        // A store with a TTL expires by itself.
        return;
    }
    assert!(expired >= 1);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].alert_id, "new");
    assert_eq!(must(store.get_alert(&t, "old").await, "get"), None);
}

/// Oversized ids and values are refused, and nothing of the call is kept.
pub async fn alert_limits(store: &dyn crate::AlertStore) {
    let t = unique_tenant("alerts");
    let mut big = alert(&t, "big", 1, 1);
    big.value = vec![0; crate::alerts::MAX_ALERT_VALUE + 1];
    for bad in [big, alert(&t, &"i".repeat(65), 1, 1), alert(&t, "", 1, 1)] {
        let r = store.put_alerts(vec![alert(&t, "ok", 1, 1), bad]).await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
    }
    assert_eq!(must(store.get_alert(&t, "ok").await, "get"), None);
}
