//! The query service over a real loopback socket, as a client sees it:
//! generated tonic client, JWT metadata, status codes and error details.

mod common;

use std::time::Duration;

use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_types::StatusExt as _;
use tributary_auth::Role;
use tributary_core::live::LiveBatch;
use tributary_core::time::NS_PER_DAY;
use tributary_core::{Point, Value};
use tributary_proto::v1 as pb;
use tributary_proto::v1::AggregateFunction as F;

use common::{DAY0, Fixture, HOUR, authed, device, selector};

#[tokio::test]
async fn query_range_pages_through_every_point_of_a_selector_in_both_orders() {
    let f = Fixture::start().await;
    let token = f.token("acme", Role::Viewer);
    let mut client = f.client().await;

    for order in [pb::Order::Asc, pb::Order::Desc] {
        let mut req = pb::QueryRangeRequest {
            target: Some(selector("type=truck")),
            metrics: vec!["load".into()],
            from_ns: DAY0,
            to_ns: DAY0 + NS_PER_DAY,
            limit: 5,
            order: order as i32,
            ..Default::default()
        };
        let mut rows = Vec::new();
        let mut page_sizes = Vec::new();
        loop {
            let page = client
                .query_range(authed(req.clone(), &token))
                .await
                .expect("query_range")
                .into_inner();
            page_sizes.push(page.series.iter().map(|s| s.points.len()).sum::<usize>());
            for s in &page.series {
                rows.extend(s.points.iter().map(|p| (s.device.clone(), p.ts_ns)));
            }
            if page.next_page_token.is_empty() {
                break;
            }
            req.page_token = page.next_page_token;
        }
        // Trucks e1, t1, t2 with 4 hourly points each, in (device, time) order.
        let hours: Vec<i64> = match order {
            pb::Order::Asc => (0..4).collect(),
            pb::Order::Desc => (0..4).rev().collect(),
        };
        let expected: Vec<_> = ["e1", "t1", "t2"]
            .iter()
            .flat_map(|d| hours.iter().map(move |h| (d.to_string(), DAY0 + h * HOUR)))
            .collect();
        assert_eq!(rows, expected, "{order:?}");
        assert_eq!(page_sizes, [5, 5, 2], "{order:?}");
    }
}

#[tokio::test]
async fn average_load_per_fleet_is_one_call() {
    let f = Fixture::start().await;
    let token = f.token("acme", Role::Viewer);
    let mut client = f.client().await;
    let req = pb::AggregateRequest {
        target: Some(selector("")),
        metrics: vec!["load".into()],
        from_ns: DAY0,
        to_ns: DAY0 + NS_PER_DAY,
        window: "1d".into(),
        functions: vec![F::Avg as i32],
        group_by_label: "fleet".into(),
        ..Default::default()
    };
    let resp = client
        .aggregate(authed(req, &token))
        .await
        .expect("aggregate")
        .into_inner();
    let got: Vec<_> = resp
        .series
        .iter()
        .map(|s| {
            (
                s.group.as_str(),
                s.metric.as_str(),
                s.devices,
                s.buckets[0].start_ns,
                s.buckets[0].count,
                s.buckets[0].avg,
            )
        })
        .collect();
    // Loads are device base + hour: e1 base 10, t1 base 1, t2 base 2, v1 base 3,
    // hours 0..4 (mean 1.5). `other`'s device never shows up.
    assert_eq!(
        got,
        [
            ("East", "load", 1, DAY0, 4, Some(11.5)),
            ("West", "load", 3, DAY0, 12, Some(3.5)),
        ]
    );
}

#[tokio::test]
async fn latest_location_of_every_truck_in_a_fleet() {
    let f = Fixture::start().await;
    let token = f.token("acme", Role::Viewer);
    let mut client = f.client().await;
    let req = pb::LatestRequest {
        target: Some(selector("fleet=West,type=truck")),
        metrics: vec!["lat".into(), "lon".into()],
    };
    let resp = client
        .latest(authed(req, &token))
        .await
        .expect("latest")
        .into_inner();
    let got: Vec<_> = resp
        .values
        .iter()
        .map(|v| (v.device.as_str(), v.metric.as_str(), v.ts_ns))
        .collect();
    let last = DAY0 + 3 * HOUR;
    assert_eq!(
        got,
        [
            ("t1", "lat", last),
            ("t1", "lon", last),
            ("t2", "lat", last),
            ("t2", "lon", last)
        ]
    );
    let lat = resp.values[0].value.as_ref().and_then(|v| v.kind.clone());
    assert_eq!(lat, Some(pb::value::Kind::DoubleValue(51.3)));

    let series = client
        .list_metrics(authed(
            pb::ListMetricsRequest {
                target: Some(device("t1")),
            },
            &token,
        ))
        .await
        .expect("list_metrics")
        .into_inner()
        .series;
    let names: Vec<_> = series.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["lat", "load", "lon"]);
}

#[tokio::test]
async fn subscribe_receives_points_published_to_the_live_hub() {
    let f = Fixture::start().await;
    let token = f.token("acme", Role::Viewer);
    let mut client = f.client().await;
    let req = pb::SubscribeRequest {
        target: Some(selector("fleet=West")),
        metrics: vec!["load".into()],
    };
    let mut stream = client
        .subscribe(authed(req, &token))
        .await
        .expect("subscribe")
        .into_inner();

    let point = |metric: &str| Point {
        metric: metric.into(),
        ts_ns: DAY0 + 5 * HOUR,
        value: Value::F64(9.5),
    };
    // Not wanted: another tenant, a device outside the selector, another metric.
    f.live.publish(LiveBatch {
        tenant: "other".into(),
        device: "t1".into(),
        points: vec![point("load")],
    });
    f.live.publish(LiveBatch {
        tenant: "acme".into(),
        device: "e1".into(),
        points: vec![point("load")],
    });
    f.live.publish(LiveBatch {
        tenant: "acme".into(),
        device: "t1".into(),
        points: vec![point("lat")],
    });
    f.live.publish(LiveBatch {
        tenant: "acme".into(),
        device: "t2".into(),
        points: vec![point("lat"), point("load")],
    });

    let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message within 10 s")
        .expect("stream open")
        .expect("no error");
    assert_eq!(message.device, "t2");
    assert_eq!(message.dropped, 0);
    assert_eq!(message.points.len(), 1);
    assert_eq!(message.points[0].metric, "load");
    assert_eq!(message.points[0].ts_ns, DAY0 + 5 * HOUR);
}

#[tokio::test]
async fn unauthenticated_and_cross_tenant_requests_are_rejected() {
    let f = Fixture::start().await;
    let mut client = f.client().await;
    let latest = |target: pb::Target| pb::LatestRequest {
        target: Some(target),
        metrics: vec![],
    };

    let err = client.latest(latest(selector(""))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .latest(authed(latest(selector("")), "not-a-jwt"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // A viewer of acme may not name another tenant...
    let acme = f.token("acme", Role::Viewer);
    let other_tenant = pb::Target {
        tenant: "other".into(),
        ..selector("")
    };
    let err = client
        .latest(authed(latest(other_tenant.clone()), &acme))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // ...and a token of another tenant does not see acme's devices.
    let other = f.token("other", Role::Viewer);
    let err = client
        .latest(authed(latest(device("t2")), &other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let own = client
        .latest(authed(latest(selector("")), &other))
        .await
        .expect("own tenant")
        .into_inner();
    assert!(
        own.values
            .iter()
            .all(|v| v.device == "t1" && v.ts_ns == DAY0),
        "{:?}",
        own.values
    );
    assert_eq!(own.values.len(), 1);
    // An admin may name it.
    let admin = f.token("acme", Role::Admin);
    let theirs = client
        .latest(authed(latest(other_tenant), &admin))
        .await
        .expect("admin")
        .into_inner();
    assert_eq!(theirs.values, own.values);

    // Subscriptions are authorized too.
    let req = pb::SubscribeRequest {
        target: Some(selector("")),
        metrics: vec![],
    };
    assert_eq!(
        client.subscribe(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let f = Fixture::start().await;
    let token = f.token("acme", Role::Viewer);
    let mut client = f.client().await;
    let field = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let bad = status
            .get_details_bad_request()
            .expect("BadRequest details");
        bad.field_violations
            .into_iter()
            .map(|v| v.field)
            .collect::<Vec<_>>()
    };

    let req = pb::AggregateRequest {
        target: Some(selector("")),
        window: "fortnight".into(),
        from_ns: DAY0,
        to_ns: DAY0 + NS_PER_DAY,
        ..Default::default()
    };
    assert_eq!(
        field(client.aggregate(authed(req, &token)).await.unwrap_err()),
        ["window"]
    );

    let req = pb::QueryRangeRequest {
        target: Some(selector("fleet=")),
        ..Default::default()
    };
    assert!(
        client.query_range(authed(req, &token)).await.is_ok(),
        "`fleet=` selects an empty value"
    );
    let req = pb::QueryRangeRequest {
        target: Some(selector("=West")),
        ..Default::default()
    };
    assert_eq!(
        field(client.query_range(authed(req, &token)).await.unwrap_err()),
        ["target.selector"]
    );
    let req = pb::QueryRangeRequest {
        target: None,
        ..Default::default()
    };
    assert_eq!(
        field(client.query_range(authed(req, &token)).await.unwrap_err()),
        ["target"]
    );
    let req = pb::QueryRangeRequest {
        target: Some(selector("")),
        limit: 100_001,
        ..Default::default()
    };
    assert_eq!(
        field(client.query_range(authed(req, &token)).await.unwrap_err()),
        ["limit"]
    );
    let req = pb::QueryRangeRequest {
        target: Some(selector("")),
        page_token: "bm9wZQ".into(),
        ..Default::default()
    };
    assert_eq!(
        field(client.query_range(authed(req, &token)).await.unwrap_err()),
        ["page_token"]
    );

    let err = client
        .list_metrics(authed(
            pb::ListMetricsRequest {
                target: Some(device("ghost")),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
