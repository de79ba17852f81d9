//! Rollups on a real standalone: the processor keeps them as telemetry
//! arrives (late and overwritten points included), and `Aggregate` answers
//! from them exactly as from raw points, saying which tier answered.

mod common;

use std::time::Duration;

use common::*;
use tributary_proto::v1 as pb;

const MS: i64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_read_rollups_and_equal_a_raw_scan() {
    let dir = tempfile::tempdir().unwrap();
    // One-second and one-minute tiers, read as soon as rolled up, so that
    // the test need not wait for minutes to pass.
    let config = dir.path().join("tributary.toml");
    std::fs::write(&config, "[query]\nrollup_min_age_secs = 0\n").unwrap();
    let s = Standalone::start_with(
        &dir.path().join("data"),
        &[
            "--rollup-tiers".as_ref(),
            "1s,1m".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    );
    let token = create_device_in(&s, "default", "pump-1").await;
    // Points from the next whole second on (the tiers are complete from the
    // first bucket boundary after the processor started).
    let now = tributary_core::time::now_ns();
    let t0 = now - now.rem_euclid(1000 * MS) + 2000 * MS;
    let http = reqwest::Client::new();
    let post = |points: serde_json::Value| {
        let http = http.clone();
        let url = s.url("/v1/telemetry");
        let token = token.clone();
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&points)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
        }
    };
    // In order, then late (into earlier seconds), then overwritten.
    let in_order: Vec<_> = (0..40)
        .map(|i| serde_json::json!({"ts": (t0 + i * 100 * MS) / MS, "values": {"flow": i as f64 * 0.5}}))
        .collect();
    post(serde_json::Value::Array(in_order)).await;
    // Once those are rolled up, a late point and an overwrite must
    // recompute their buckets.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while counter(&s, "tributary_processor_rollup_buckets_written_total").await < 4.0 {
        assert!(std::time::Instant::now() < deadline, "no rollups written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    post(serde_json::json!([{"ts": (t0 + 150 * MS) / MS, "values": {"flow": 99.0}}])).await;
    post(serde_json::json!([{"ts": (t0 + 1200 * MS) / MS, "values": {"flow": -7.0}}])).await;

    let mut q = s.query(&s.admin_token).await;
    let request = |tier: &str| flow_per_second(t0 - 5000 * MS, t0 + 4000 * MS, tier);
    let raw = q
        .aggregate(request("raw"))
        .await
        .expect("raw aggregate")
        .into_inner();
    assert_eq!(raw.tier, "raw");
    let buckets = &raw.series[0].buckets;
    assert_eq!(buckets.len(), 4, "{buckets:?}");
    assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), 41);
    // Once the range has ended (rollup buckets are read only when they are
    // over) and the processor has flushed, the planner's answer is the raw
    // one, from the 1s tier.
    while tributary_core::time::now_ns() < t0 + 4000 * MS {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let planned = q
            .aggregate(request(""))
            .await
            .expect("aggregate")
            .into_inner();
        if planned.tier == "1s" && planned.series == raw.series {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the 1s tier never answered like raw: {planned:?} vs {raw:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The late and the overwritten points recomputed their buckets (until
    // then, the planner read their buckets raw)...
    eventually(Duration::from_secs(20), "buckets recomputed", || async {
        (counter(&s, "tributary_processor_rollup_buckets_recomputed_total").await >= 2.0)
            .then_some(())
    })
    .await;
    // ...and the rollups answer like raw.
    let planned = q
        .aggregate(request(""))
        .await
        .expect("aggregate")
        .into_inner();
    assert_eq!(planned.series, raw.series);
    assert_eq!(planned.tier, "1s");
    // The CLI says which tier answered.
    let out = cli(
        &s,
        &[
            "series",
            "agg",
            "--device",
            "pump-1",
            "--window",
            "1s",
            "--fn",
            "count,stddev",
            "--from",
            &tributary_core::time::format_rfc3339(t0 - 5000 * MS),
            "--to",
            &tributary_core::time::format_rfc3339(t0 + 4000 * MS),
        ],
    )
    .await;
    assert!(
        out.contains("\"tier\":\"1s\"") || out.contains("\"tier\": \"1s\""),
        "{out}"
    );
}

/// A counter of the ops listener (0 when absent).
async fn counter(s: &Standalone, name: &str) -> f64 {
    let metrics = reqwest::get(format!("http://{}/metrics", s.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Flags of a standalone with 1 s and 1 min tiers read at once.
fn start(data: &std::path::Path, config: &std::path::Path) -> Standalone {
    Standalone::start_with(
        data,
        &[
            "--rollup-tiers".as_ref(),
            "1s,1m".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_equal_raw_after_kill_9_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tributary.toml");
    std::fs::write(&config, "[query]\nrollup_min_age_secs = 0\n").unwrap();
    let data = dir.path().join("data");
    let s = start(&data, &config);
    let token = create_device_in(&s, "default", "pump-1").await;
    let now = tributary_core::time::now_ns();
    let t0 = now - now.rem_euclid(1000 * MS) + 2000 * MS;
    let http = reqwest::Client::new();
    // Batches in time order with a late and an overwritten point each,
    // posted until the process is killed: the processor is killed with
    // rollups written, half written, or not written for the last records.
    for batch in 0..30i64 {
        let mut points: Vec<serde_json::Value> = (0..20)
            .map(|i| {
                let ts = t0 + (batch * 20 + i) * 10 * MS;
                serde_json::json!({"ts": ts / MS, "values": {"flow": (batch * 20 + i) as f64}})
            })
            .collect();
        if batch > 0 {
            let late = t0 + (batch * 20 - 7) * 10 * MS + 3 * MS;
            points.push(serde_json::json!({"ts": late / MS, "values": {"flow": -1.0}}));
            let again = t0 + (batch * 20 - 3) * 10 * MS;
            points.push(serde_json::json!({"ts": again / MS, "values": {"flow": 1e6}}));
        }
        let r = http
            .post(s.url("/v1/telemetry"))
            .bearer_auth(&token)
            .json(&points)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    s.crash();
    let s = start(&data, &config);
    let end = t0 + 30 * 20 * 10 * MS;
    while tributary_core::time::now_ns() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut q = s.query(&s.admin_token).await;
    let request = |tier: &str| flow_per_second(t0 - 1000 * MS, end + 1000 * MS, tier);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let raw = q.aggregate(request("raw")).await.expect("raw").into_inner();
        let planned = q
            .aggregate(request(""))
            .await
            .expect("planned")
            .into_inner();
        let points: u64 = raw
            .series
            .iter()
            .flat_map(|s| &s.buckets)
            .map(|b| b.count)
            .sum();
        // 600 in order and 29 late; the overwrites replace.
        if points == 30 * 20 + 29 && planned.tier == "1s" && planned.series == raw.series {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after kill -9 and replay the rollups never matched raw ({points} raw points): {planned:?} vs {raw:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `flow` of pump-1 per second over `[from, to)`, every function, from
/// `tier` (`""`: the planner; `"raw"`).
fn flow_per_second(from_ns: i64, to_ns: i64, tier: &str) -> pb::AggregateRequest {
    use pb::AggregateFunction as F;
    pb::AggregateRequest {
        target: device_target("pump-1"),
        metrics: vec!["flow".into()],
        from_ns,
        to_ns,
        window: "1s".into(),
        functions: [F::Avg, F::Min, F::Max, F::Sum, F::Stddev, F::First, F::Last]
            .iter()
            .map(|f| *f as i32)
            .collect(),
        tier: tier.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_retention_expires_raw_points_while_rollups_answer() {
    const MINUTE: i64 = 60_000 * MS;
    const HOUR: i64 = 60 * MINUTE;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tributary.toml");
    std::fs::write(&config, "[query]\nrollup_min_age_secs = 0\n").unwrap();
    let s = start(&dir.path().join("data"), &config);
    // The tenant keeps raw points an hour, its rollups for ever.
    let out = cli(&s, &["tenants", "set-retention", "default", "raw=1h"]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("JSON rows");
    assert!(
        rows.iter()
            .any(|r| r["kind"] == "raw" && r["retention"] == "1h" && r["source"] == "tenant"),
        "{out}"
    );
    let token = create_device_in(&s, "default", "pump-1").await;
    let now = tributary_core::time::now_ns();
    let old = now - now.rem_euclid(MINUTE) - 3 * HOUR;
    let recent = now - now.rem_euclid(MINUTE) - 10 * MINUTE;
    let http = reqwest::Client::new();
    let post = |ts0: i64| {
        let points: Vec<_> = (0..30)
            .map(|i| serde_json::json!({"ts": (ts0 + i * 1000 * MS) / MS, "values": {"flow": i as f64}}))
            .collect();
        http.post(s.url("/v1/telemetry"))
            .bearer_auth(&token)
            .json(&points)
            .send()
    };
    // Three hours old is past the raw retention, but the rollups keep it:
    // accepted.
    for ts0 in [old, recent] {
        let r = post(ts0).await.unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    }

    let mut q = s.query(&s.admin_token).await;
    let per_minute = |tier: &str| {
        use pb::AggregateFunction as F;
        pb::AggregateRequest {
            target: device_target("pump-1"),
            metrics: vec!["flow".into()],
            from_ns: old - HOUR,
            to_ns: recent + 2 * MINUTE,
            window: "1m".into(),
            functions: vec![F::Sum as i32],
            tier: tier.into(),
            ..Default::default()
        }
    };
    let planned = eventually(
        Duration::from_secs(30),
        "the 1m tier for both minutes",
        || {
            let mut q = q.clone();
            let request = per_minute("");
            async move {
                let planned = q.aggregate(request).await.unwrap().into_inner();
                let counts: Vec<u64> = planned
                    .series
                    .iter()
                    .flat_map(|s| &s.buckets)
                    .map(|b| b.count)
                    .collect();
                (planned.tier == "1m" && counts == [30, 30]).then_some(planned)
            }
        },
    )
    .await;
    assert_eq!(planned.retained_from_ns, 0, "the 1m tier is kept for ever");
    let sums: Vec<f64> = planned.series[0]
        .buckets
        .iter()
        .filter_map(|b| b.sum)
        .collect();
    assert_eq!(sums, [435.0, 435.0]);

    // A raw scan only has the last hour, and says so.
    let raw = q.aggregate(per_minute("raw")).await.unwrap().into_inner();
    let counts: Vec<u64> = raw
        .series
        .iter()
        .flat_map(|s| &s.buckets)
        .map(|b| b.count)
        .collect();
    assert_eq!(counts, [30]);
    let kept_from = now - HOUR;
    assert!(
        (kept_from..kept_from + 5 * MINUTE).contains(&raw.retained_from_ns),
        "retained_from_ns {} is not about an hour ago",
        raw.retained_from_ns
    );
    let range = q
        .query_range(pb::QueryRangeRequest {
            target: device_target("pump-1"),
            metrics: vec!["flow".into()],
            from_ns: old - HOUR,
            to_ns: now,
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        range.series[0].points.len(),
        30,
        "only the last hour's points"
    );
    assert!(range.retained_from_ns >= kept_from);

    // Once no kind of its data is kept three hours, such points are refused.
    cli(
        &s,
        &["tenants", "set-retention", "default", "1s=2h", "1m=2h"],
    )
    .await;
    let body = eventually(Duration::from_secs(10), "the old points refused", || {
        let sent = post(old);
        async move {
            let r = sent.await.unwrap();
            if r.status() == 400 {
                Some(r.text().await.unwrap())
            } else {
                None
            }
        }
    })
    .await;
    assert!(body.contains("longest retention (2h)"), "{body}");
}

/// Points written for old buckets (a backfill) count in aggregates as soon
/// as they are readable raw, not only once the processor's next rollup
/// update (every few seconds) has caught up with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_counts_in_aggregates_as_soon_as_it_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let token = create_device_in(&s, "default", "late").await;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = now_s / 3600 * 3600;
    let start = end - 3 * 3600;
    let points: Vec<serde_json::Value> = (0..180i64)
        .map(|j| serde_json::json!({"ts": (start + j * 60) * 1000, "values": {"v": j}}))
        .collect();
    let resp = reqwest::Client::new()
        .post(s.url("/v1/telemetry"))
        .bearer_auth(&token)
        .json(&points)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::NO_CONTENT);
    let mut query = s.query(&s.admin_token).await;
    // Readable raw: the newest point is there.
    eventually(Duration::from_secs(10), "the backfill readable", || {
        let mut query = query.clone();
        async move {
            let latest = query
                .latest(pb::LatestRequest {
                    target: device_target("late"),
                    metrics: vec!["v".into()],
                })
                .await
                .ok()?
                .into_inner();
            (latest.values.first()?.ts_ns == (end - 60) * 1_000_000_000).then_some(())
        }
    })
    .await;
    // At once, an hourly aggregate (answered from the hour tier where its
    // rollups are complete) counts every point.
    let agg = query
        .aggregate(pb::AggregateRequest {
            target: device_target("late"),
            metrics: vec!["v".into()],
            from_ns: start * 1_000_000_000,
            to_ns: end * 1_000_000_000,
            window: "1h".into(),
            functions: vec![pb::AggregateFunction::Count as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let counts: Vec<u64> = agg
        .series
        .iter()
        .flat_map(|s| s.buckets.iter().map(|b| b.count))
        .collect();
    assert_eq!(counts, vec![60, 60, 60], "tier {}", agg.tier);
    s.stop();
}
