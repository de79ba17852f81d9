//! The Prometheus-compatible query API against a real standalone, with the
//! exact request shapes Grafana's Prometheus data source sends (the `1+1`
//! health check, buildinfo, the metric and label pickers with `match[]`, a
//! range query over POST), and with a third-party client from PyPI
//! (prometheus-api-client, `tests/prom_client.py`). Answers are compared
//! with gRPC `Aggregate` on the same data.
//!
//! The client test fails when prometheus-api-client is missing
//! (`scripts/test.sh` installs it) unless `TRIBUTARY_SKIP_PROM_CLIENT=1`,
//! which it reports loudly.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tributary_proto::v1 as pb;

const HOUR: i64 = 3600;

/// Three devices in two fleets with three whole hours of minute points,
/// ending at the hour `end` (Unix seconds) before now; returns `end`.
async fn seed(s: &Standalone) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = now / HOUR * HOUR;
    let start = end - 3 * HOUR;
    for (i, (device, fleet)) in [("d1", "West"), ("d2", "West"), ("d3", "East")]
        .into_iter()
        .enumerate()
    {
        let token = s
            .registry(&s.admin_token)
            .await
            .create_device(pb::CreateDeviceRequest {
                id: device.into(),
                labels: [("fleet".to_string(), fleet.to_string())]
                    .into_iter()
                    .collect(),
                issue_token: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .token
            .unwrap()
            .token;
        let points: Vec<Value> = (0..180i64)
            .map(|j| {
                let temp = 20.0 + 10.0 * i as f64 + (j % (7 - i as i64)) as f64;
                // d2's counter resets in the middle of the second hour.
                let counter = if i == 1 { (j % 90) * 5 } else { j * 10 };
                json!({"ts": (start + j * 60) * 1000, "values": {"engine.temp": temp, "counter": counter}})
            })
            .collect();
        let resp = reqwest::Client::new()
            .post(s.url("/v1/telemetry"))
            .bearer_auth(&token)
            .json(&points)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }
    // Stored once the latest point of each device is.
    eventually(Duration::from_secs(15), "points stored", || async {
        let latest = s
            .query(&s.admin_token)
            .await
            .latest(pb::LatestRequest {
                target: selector_target(""),
                metrics: vec!["counter".into()],
            })
            .await
            .ok()?
            .into_inner();
        (latest.values.len() == 3
            && latest
                .values
                .iter()
                .all(|v| v.ts_ns == (end - 60) * 1_000_000_000))
        .then_some(())
    })
    .await;
    end
}

/// A Grafana-style form POST.
async fn post_form(
    s: &Standalone,
    token: &str,
    path: &str,
    form: &[(&str, String)],
) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(s.api_url(path))
        .bearer_auth(token)
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(s: &Standalone, token: &str, path_and_query: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .get(s.api_url(path_and_query))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// gRPC Aggregate of `engine.temp` by hour over `[from, to)` seconds:
/// (group, window start s) → the function's value.
async fn grpc_hourly(
    s: &Standalone,
    target: Option<pb::Target>,
    group_by: &str,
    function: pb::AggregateFunction,
    metric: &str,
    (from, to): (i64, i64),
) -> BTreeMap<(String, i64), f64> {
    let resp = s
        .query(&s.admin_token)
        .await
        .aggregate(pb::AggregateRequest {
            target,
            metrics: vec![metric.into()],
            from_ns: from * 1_000_000_000,
            to_ns: to * 1_000_000_000,
            window: "1h".into(),
            functions: vec![function as i32],
            group_by_label: group_by.into(),
            tier: String::new(),
            combine_devices: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = BTreeMap::new();
    for series in resp.series {
        for b in series.buckets {
            let v = match function {
                pb::AggregateFunction::Sum => b.sum,
                pb::AggregateFunction::Avg => b.avg,
                _ => unreachable!(),
            };
            out.insert(
                (series.group.clone(), b.start_ns / 1_000_000_000),
                v.unwrap(),
            );
        }
    }
    out
}

/// A matrix answer as (label value of `by`, t) → value.
fn matrix(data: &Value, by: &str) -> BTreeMap<(String, i64), f64> {
    assert_eq!(data["resultType"], "matrix", "{data}");
    let mut out = BTreeMap::new();
    for series in data["result"].as_array().unwrap() {
        let key = series["metric"][by].as_str().unwrap_or("").to_owned();
        for pair in series["values"].as_array().unwrap() {
            let t = pair[0].as_f64().unwrap() as i64;
            let v: f64 = pair[1].as_str().unwrap().parse().unwrap();
            out.insert((key.clone(), t), v);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_requests_get_prometheus_answers_that_match_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let end = seed(&s).await;
    let admin = s.admin_token.clone();

    // The data source's health check and feature detection.
    let (status, body) = post_form(
        &s,
        &admin,
        "/query",
        &[("query", "1+1".into()), ("time", end.to_string())],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(
        body["data"],
        json!({"resultType": "scalar", "result": [end as f64, "2"]})
    );
    let (status, body) = get(&s, &admin, "/status/buildinfo").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["data"]["version"].as_str().unwrap().starts_with("2."));

    // The metric picker, with and without match[], and a time range.
    let range = format!("start={}&end={}", end - 3 * HOUR, end);
    let (_, body) = get(&s, &admin, &format!("/label/__name__/values?{range}")).await;
    assert_eq!(body["data"], json!(["counter", "engine_temp"]));
    let (_, body) = get(
        &s,
        &admin,
        &format!("/label/__name__/values?match[]=%7Bfleet%3D%22East%22%7D&{range}"),
    )
    .await;
    assert_eq!(body["data"], json!(["counter", "engine_temp"]));
    let (_, body) = get(&s, &admin, "/label/__name__/values?start=1000&end=2000").await;
    assert_eq!(body["data"], json!([]), "no series had data then");
    // The label pickers.
    let (_, body) = get(&s, &admin, "/labels?match[]=engine_temp").await;
    assert_eq!(body["data"], json!(["__name__", "device", "fleet"]));
    let (_, body) = get(&s, &admin, "/label/fleet/values").await;
    assert_eq!(body["data"], json!(["East", "West"]));
    let (_, body) = get(
        &s,
        &admin,
        "/label/device/values?match[]=engine_temp%7Bfleet%3D~%22W.*%22%7D",
    )
    .await;
    assert_eq!(body["data"], json!(["d1", "d2"]));
    let (_, body) = post_form(
        &s,
        &admin,
        "/series",
        &[
            ("match[]", "engine_temp{fleet=\"West\"}".into()),
            ("start", (end - HOUR).to_string()),
            ("end", end.to_string()),
        ],
    )
    .await;
    assert_eq!(
        body["data"],
        json!([
            {"__name__": "engine_temp", "device": "d1", "fleet": "West"},
            {"__name__": "engine_temp", "device": "d2", "fleet": "West"}
        ])
    );
    let (_, body) = get(&s, &admin, "/metadata").await;
    assert_eq!(
        body["data"]["engine_temp"][0]["help"],
        "Tributary metric engine.temp"
    );

    // A range query over POST, as Grafana sends it: the same numbers as
    // the gRPC Aggregate grouped by fleet.
    let window = (end - 3 * HOUR, end);
    let (status, body) = post_form(
        &s,
        &admin,
        "/query_range",
        &[
            (
                "query",
                "sum by (fleet) (sum_over_time(engine_temp[1h]))".into(),
            ),
            ("start", (end - 2 * HOUR).to_string()),
            ("end", end.to_string()),
            ("step", "3600".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got = matrix(&body["data"], "fleet");
    let want: BTreeMap<(String, i64), f64> = grpc_hourly(
        &s,
        selector_target(""),
        "fleet",
        pb::AggregateFunction::Sum,
        "engine.temp",
        window,
    )
    .await
    .into_iter()
    .map(|((g, start), v)| ((g, start + HOUR), v))
    .collect();
    assert_eq!(got.len(), 6, "{body}");
    assert_eq!(got, want);

    let (_, body) = post_form(
        &s,
        &admin,
        "/query_range",
        &[
            (
                "query",
                "avg_over_time(engine_temp{device=\"d1\"}[1h])".into(),
            ),
            ("start", (end - 2 * HOUR).to_string()),
            ("end", end.to_string()),
            ("step", "1h".into()),
        ],
    )
    .await;
    let got = matrix(&body["data"], "device");
    let want: BTreeMap<(String, i64), f64> = grpc_hourly(
        &s,
        device_target("d1"),
        "",
        pb::AggregateFunction::Avg,
        "engine.temp",
        window,
    )
    .await
    .into_iter()
    .map(|((g, start), v)| ((g, start + HOUR), v))
    .collect();
    assert_eq!(got, want);

    // The grouped shape is answered by one grouped Aggregate
    // (`combine_devices`); written so that it cannot be (`* 1`), it is
    // evaluated series by series. Both agree, at a 1 h and a 10 min step.
    for (step, range) in [("3600", "1h"), ("600", "10m")] {
        let ask = |query: String| {
            let form = vec![
                ("query", query),
                ("start", (end - 2 * HOUR).to_string()),
                ("end", end.to_string()),
                ("step", step.to_string()),
            ];
            let (s, admin) = (&s, &admin);
            async move { post_form(s, admin, "/query_range", &form).await }
        };
        for agg in ["avg", "max", "min", "sum", "count"] {
            let (_, pushed) = ask(format!(
                "{agg} by (fleet) (avg_over_time(engine_temp[{range}]))"
            ))
            .await;
            let (_, each) = ask(format!(
                "{agg} by (fleet) (avg_over_time(engine_temp[{range}]) * 1)"
            ))
            .await;
            let (pushed, each) = (
                matrix(&pushed["data"], "fleet"),
                matrix(&each["data"], "fleet"),
            );
            assert!(!pushed.is_empty());
            assert_eq!(pushed.len(), each.len(), "{agg} at {step}");
            for (k, v) in &pushed {
                assert!(
                    (v - each[k]).abs() < 1e-9,
                    "{agg} at {step}, {k:?}: {v} against {}",
                    each[k]
                );
            }
        }
    }

    // Counters: the increase over the hour with d2's reset in it.
    let (_, body) = post_form(
        &s,
        &admin,
        "/query_range",
        &[
            ("query", "increase(counter[1h])".into()),
            ("start", (end - HOUR).to_string()),
            ("end", end.to_string()),
            ("step", "3600".into()),
        ],
    )
    .await;
    let got = matrix(&body["data"], "device");
    assert_eq!(
        got[&("d1".to_string(), end - HOUR)],
        590.0,
        "59 steps of 10"
    );
    assert_eq!(
        got[&("d2".to_string(), end - HOUR)],
        290.0,
        "145 before the reset, 145 after"
    );
    let (_, body) = get(
        &s,
        &admin,
        &format!(
            "/query?query=rate(counter%7Bdevice%3D%22d1%22%7D%5B1h%5D)&time={}",
            end - HOUR
        ),
    )
    .await;
    let rate: f64 = body["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((rate - 590.0 / 3600.0).abs() < 1e-9, "{body}");

    // Arithmetic with scalars, and an instant selector's newest value.
    let (_, body) = get(
        &s,
        &admin,
        &format!("/query?query=max%20by%20(fleet)%20(engine_temp)%20*%202&time={end}"),
    )
    .await;
    assert_eq!(body["data"]["resultType"], "vector");
    let west = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metric"]["fleet"] == "West")
        .unwrap();
    // At end − 60 s (j = 179): d1 = 20 + 179 % 7 = 24, d2 = 30 + 179 % 6 = 35.
    assert_eq!(west["value"][1], "70");
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_prometheus_errors_and_tenants_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let end = seed(&s).await;
    create_tenant(&s, "globex").await;
    let globex = s.operator_token("globex", "operator");
    let admin = s.admin_token.clone();

    // Another tenant sees nothing of default's.
    let (status, body) = get(&s, &globex, "/label/__name__/values").await;
    assert_eq!((status, body["data"].clone()), (StatusCode::OK, json!([])));
    let (_, body) = get(&s, &globex, &format!("/query?query=engine_temp&time={end}")).await;
    assert_eq!(body["data"]["result"], json!([]));
    let (_, body) = get(&s, &globex, "/series?match[]=engine_temp").await;
    assert_eq!(body["data"], json!([]));
    // No token.
    let resp = reqwest::get(s.api_url("/query?query=1%2B1")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "error");

    for (query, expect) in [
        (
            "histogram_quantile(0.9, x)",
            "unsupported function \"histogram_quantile\"",
        ),
        ("engine_temp offset 5m", "offset"),
        ("engine_temp / engine_temp", "two vectors"),
        ("topk(3, engine_temp)", "topk"),
        ("sum(", "parse error"),
    ] {
        let (status, body) = post_form(&s, &admin, "/query", &[("query", query.into())]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["errorType"], "bad_data");
        assert!(
            body["error"].as_str().unwrap().contains(expect),
            "{query}: {body}"
        );
    }
    // Hostile shapes: too many points, a giant regex, a huge query, many
    // match[], a step that shares no divisor with the range.
    let form = |q: &str, step: &str| {
        vec![
            ("query", q.to_owned()),
            ("start", "0".to_owned()),
            ("end", end.to_string()),
            ("step", step.to_owned()),
        ]
    };
    let (status, body) = post_form(&s, &admin, "/query_range", &form("engine_temp", "1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("11000"), "{body}");
    let bomb = format!("engine_temp{{device=~\"{}\"}}", "(a|aa)*".repeat(5000));
    let (status, _) = post_form(&s, &admin, "/query", &[("query", bomb)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post_form(
        &s,
        &admin,
        "/query",
        &[("query", "1+".repeat(100_000) + "1")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let many: Vec<(&str, String)> = (0..100).map(|i| ("match[]", format!("m{i}"))).collect();
    let (status, _) = post_form(&s, &admin, "/series", &many).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = post_form(
        &s,
        &admin,
        "/query_range",
        &[
            ("query", "avg_over_time(engine_temp[3599s])".into()),
            ("start", (end - 86_400 * 7).to_string()),
            ("end", end.to_string()),
            ("step", "3600".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = post_form(&s, &admin, "/query_range", &[("query", "1".into())]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("start"), "{body}");
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_prometheus_client_reads_the_same_numbers() {
    let found = std::process::Command::new("python3")
        .args(["-c", "import prometheus_api_client"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("TRIBUTARY_SKIP_PROM_CLIENT").as_deref() == Ok("1") {
            eprintln!("SKIPPED: prometheus-api-client interop (TRIBUTARY_SKIP_PROM_CLIENT=1)");
            return;
        }
        panic!(
            "python3 with prometheus-api-client not found: `pip install prometheus-api-client` (scripts/test.sh does) or set TRIBUTARY_SKIP_PROM_CLIENT=1"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let end = seed(&s).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/prom_client.py");
    let base = format!("http://{}", s.api);
    let (token, start, stop) = (
        s.admin_token.clone(),
        (end - 2 * HOUR).to_string(),
        end.to_string(),
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args([script, &base, &token, &start, &stop])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["metrics"], json!(["counter", "engine_temp"]));
    assert_eq!(got["fleets"], json!(["East", "West"]));
    assert!(got["labels"].as_array().unwrap().contains(&json!("device")));
    assert_eq!(got["health"][1], "2");
    // The range, compared with gRPC's grouped Aggregate.
    let want = grpc_hourly(
        &s,
        selector_target(""),
        "fleet",
        pb::AggregateFunction::Sum,
        "engine.temp",
        (end - 3 * HOUR, end),
    )
    .await;
    let got_range = matrix(
        &json!({"resultType": "matrix", "result": got["range"]}),
        "fleet",
    );
    let want: BTreeMap<(String, i64), f64> = want
        .into_iter()
        .map(|((g, t), v)| ((g, t + HOUR), v))
        .collect();
    assert_eq!(got_range, want);
    // The instant query: the fleets' average of each device's newest value.
    let west = got["instant"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metric"]["fleet"] == "West")
        .unwrap();
    assert_eq!(west["value"][1], "29.5", "(24 + 35) / 2");
    s.stop();
}

/// The provisioned dashboard (deploy/grafana/dashboards) draws: its
/// variables resolve as Grafana resolves them (label values with
/// `match[]`), and every panel's query answers with data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provisioned_dashboard_draws_from_tributary() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let end = seed(&s).await;
    let admin = s.admin_token.clone();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/dashboards/tributary-devices.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let helm = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../helm/tributary/dashboards/tributary-devices.json"
    );
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        std::fs::read_to_string(helm).unwrap(),
        "the Helm chart ships the same dashboard"
    );

    // Variables, in order: `label_values(name)` or
    // `label_values(selector, name)`, the first value taken ("All" is the
    // variable's `allValue`).
    // Grafana's intervals at a 60 s step with the data source's 60 s
    // `timeInterval`: `$__rate_interval` is four of them.
    let mut vars: Vec<(String, String)> = vec![
        ("$__rate_interval".into(), "240s".into()),
        ("$__interval".into(), "60s".into()),
    ];
    let substitute = |text: &str, vars: &[(String, String)]| {
        vars.iter()
            .fold(text.to_owned(), |t, (k, v)| t.replace(k.as_str(), v))
    };
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        let query = substitute(var["query"]["query"].as_str().unwrap(), &vars);
        let inner = query
            .strip_prefix("label_values(")
            .unwrap()
            .strip_suffix(')')
            .unwrap();
        let url = match inner.rsplit_once(", ") {
            Some((selector, label)) => format!(
                "/label/{label}/values?match[]={}",
                form_urlencoded::byte_serialize(selector.as_bytes()).collect::<String>()
            ),
            None => format!("/label/{inner}/values"),
        };
        let (status, body) = get(&s, &admin, &url).await;
        assert_eq!(status, StatusCode::OK, "{name}: {url}: {body}");
        let first = body["data"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no values: {body}"));
        let value = if var["includeAll"].as_bool() == Some(true) {
            var["allValue"].as_str().unwrap().to_owned()
        } else {
            first.to_owned()
        };
        vars.push((format!("${name}"), value));
    }
    let mut checked = 0;
    let mut panels: Vec<&Value> = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = substitute(target["expr"].as_str().unwrap(), &vars);
            let (status, body) = if target["instant"].as_bool() == Some(true) {
                post_form(
                    &s,
                    &admin,
                    "/query",
                    &[("query", expr.clone()), ("time", end.to_string())],
                )
                .await
            } else {
                post_form(
                    &s,
                    &admin,
                    "/query_range",
                    &[
                        ("query", expr.clone()),
                        ("start", (end - 3 * HOUR).to_string()),
                        ("end", end.to_string()),
                        ("step", "60".into()),
                    ],
                )
                .await
            };
            assert_eq!(status, StatusCode::OK, "{}: {expr}: {body}", panel["title"]);
            assert!(
                !body["data"]["result"].as_array().unwrap().is_empty(),
                "{}: {expr} answered no series",
                panel["title"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 7, "{checked} queries");
    s.stop();
}
