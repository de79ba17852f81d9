//! `QueryRange`: raw points of many series, paged.
//!
//! Series are visited in (device, metric) order; the points of each series
//! come in the requested time order. A page holds at most `limit` points over
//! all its series (and stays under the response byte budget). When more
//! points remain, the page carries a token with a cursor on its last point:
//! the next page starts right after that point, so pages never overlap and
//! never skip, in either order.
//!
//! The token is opaque to clients (base64 of a small JSON document) and bound
//! to the query it came from: tenant, target, metrics, range and order. The
//! page size may change between pages. When `to_ns` is 0 ("now"), the first
//! page fixes "now" in the token so that every page reads the same range.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tributary_core::SeriesKey;
use tributary_core::directory::DeviceInfo;
use tributary_core::envelope::value_to_pb;
use tributary_core::{Sample, Value};
use tributary_proto::v1 as pb;
use tributary_store::{Order, Store};

use crate::error::QueryError;
use crate::target::{TargetSpec, TimeRange, parse_metrics};

/// Points per page when the request says 0.
pub(crate) const DEFAULT_LIMIT: usize = 10_000;
/// Most points per page a request may ask for.
pub(crate) const MAX_LIMIT: usize = 100_000;
/// Longest page token accepted, in bytes.
const MAX_TOKEN_LEN: usize = 4096;
/// The token format version.
const TOKEN_VERSION: u8 = 1;
/// Encoding overhead of a repeated message field: tag and length prefix.
const FIELD_OVERHEAD: usize = 4;

/// Where a page stopped: its last point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) device: String,
    pub(crate) metric: String,
    pub(crate) ts_ns: i64,
}

/// A validated `QueryRangeRequest`.
#[derive(Debug, Clone)]
pub(crate) struct RangeQuery {
    /// Sorted; empty means every metric of each device.
    pub(crate) metrics: Vec<String>,
    pub(crate) range: TimeRange,
    pub(crate) limit: usize,
    pub(crate) order: Order,
    /// Continue after this point.
    pub(crate) cursor: Option<Cursor>,
    /// Identifies the query for its page tokens.
    fingerprint: u64,
}

impl RangeQuery {
    /// Validates a request of `tenant` for `target`. `now_ns` resolves `to_ns = 0`.
    pub(crate) fn from_pb(
        tenant: &str,
        target: &TargetSpec,
        req: &pb::QueryRangeRequest,
        max_metrics: usize,
        now_ns: i64,
    ) -> Result<Self, QueryError> {
        let metrics = parse_metrics(&req.metrics, max_metrics)?;
        let limit = match usize::try_from(req.limit) {
            Ok(0) => DEFAULT_LIMIT,
            Ok(n) if n <= MAX_LIMIT => n,
            _ => {
                return Err(QueryError::invalid(
                    "limit",
                    format!(
                        "{} is more than the maximum of {MAX_LIMIT} points per page",
                        req.limit
                    ),
                ));
            }
        };
        let order = match pb::Order::try_from(req.order) {
            Ok(pb::Order::Asc) => Order::Asc,
            Ok(pb::Order::Desc) => Order::Desc,
            Err(_) => {
                return Err(QueryError::invalid(
                    "order",
                    format!("unknown order {}", req.order),
                ));
            }
        };
        let fingerprint = fingerprint(tenant, target, &metrics, req.from_ns, req.to_ns, order);
        let (range, cursor) = if req.page_token.is_empty() {
            (TimeRange::new(req.from_ns, req.to_ns, now_ns)?, None)
        } else {
            let token = PageToken::decode(&req.page_token, fingerprint)?;
            (
                TimeRange::new(req.from_ns, token.to, now_ns)?,
                Some(token.cursor()),
            )
        };
        Ok(Self {
            metrics,
            range,
            limit,
            order,
            cursor,
            fingerprint,
        })
    }

    /// The part of the range still to read from a series, after the cursor.
    /// `None` when the series lies entirely before the cursor, or nothing is left.
    fn bounds(&self, device: &str, metric: &str) -> Option<(i64, i64)> {
        let TimeRange {
            mut from_ns,
            mut to_ns,
        } = self.range;
        if let Some(c) = &self.cursor {
            match (device, metric).cmp(&(c.device.as_str(), c.metric.as_str())) {
                std::cmp::Ordering::Less => return None,
                std::cmp::Ordering::Equal => match self.order {
                    Order::Asc => from_ns = from_ns.max(c.ts_ns.checked_add(1)?),
                    Order::Desc => to_ns = to_ns.min(c.ts_ns),
                },
                std::cmp::Ordering::Greater => {}
            }
        }
        (from_ns < to_ns).then_some((from_ns, to_ns))
    }
}

/// Reads one page of `query` over `devices` (sorted by id) of `tenant`. The
/// encoded page stays within about `max_bytes`, but holds at least one point.
pub(crate) async fn run(
    store: &dyn Store,
    tenant: &str,
    devices: &[DeviceInfo],
    query: &RangeQuery,
    max_bytes: usize,
) -> Result<pb::QueryRangeResponse, QueryError> {
    let mut page = Page::new(query.limit, max_bytes);
    let first_device = query.cursor.as_ref().map(|c| c.device.as_str());
    for device in devices
        .iter()
        .filter(|d| first_device.is_none_or(|first| d.id.as_str() >= first))
    {
        let listed_metrics;
        let metrics = if query.metrics.is_empty() {
            listed_metrics = store.list_metrics(tenant, &device.id).await?;
            &listed_metrics
        } else {
            &query.metrics
        };
        for metric in metrics {
            let Some((from_ns, to_ns)) = query.bounds(&device.id, metric) else {
                continue;
            };
            let key = SeriesKey::new(tenant, device.id.as_str(), metric.as_str());
            if page.is_full() {
                // The page is complete; only find out whether another follows.
                if store
                    .scan(&key, from_ns, to_ns, query.order, 1)
                    .await?
                    .is_empty()
                {
                    continue;
                }
                return page.finish(query, true);
            }
            // One more than fits tells whether this series goes on.
            let samples = store
                .scan(&key, from_ns, to_ns, query.order, page.remaining + 1)
                .await?;
            if page.push_series(&device.id, metric, samples) {
                return page.finish(query, true);
            }
        }
    }
    page.finish(query, false)
}

/// A page being filled.
#[derive(Debug)]
struct Page {
    series: Vec<pb::Series>,
    /// Points that still fit.
    remaining: usize,
    /// Encoded bytes that still fit.
    bytes_left: usize,
    /// Set when the byte budget ended the page.
    out_of_bytes: bool,
    last: Option<Cursor>,
}

impl Page {
    fn new(limit: usize, max_bytes: usize) -> Self {
        Self {
            series: Vec::new(),
            remaining: limit,
            bytes_left: max_bytes,
            out_of_bytes: false,
            last: None,
        }
    }

    fn is_full(&self) -> bool {
        self.remaining == 0 || self.out_of_bytes
    }

    /// Adds what fits of one series' samples. Returns true when samples were
    /// left over, that is when the page ended inside this series.
    fn push_series(&mut self, device: &str, metric: &str, samples: Vec<Sample>) -> bool {
        let mut header = device.len() + metric.len() + 3 * FIELD_OVERHEAD;
        let mut points = Vec::new();
        let mut left_over = false;
        for sample in samples {
            if self.remaining == 0 {
                left_over = true;
                break;
            }
            let point = sample_to_pb(sample);
            let size = point.encoded_len() + FIELD_OVERHEAD + header;
            if size > self.bytes_left && self.last.is_some() {
                self.out_of_bytes = true;
                left_over = true;
                break;
            }
            header = 0;
            self.bytes_left = self.bytes_left.saturating_sub(size);
            self.remaining -= 1;
            self.last = Some(Cursor {
                device: device.to_string(),
                metric: metric.to_string(),
                ts_ns: point.ts_ns,
            });
            points.push(point);
        }
        if !points.is_empty() {
            self.series.push(pb::Series {
                device: device.to_string(),
                metric: metric.to_string(),
                points,
            });
        }
        left_over
    }

    fn finish(self, query: &RangeQuery, more: bool) -> Result<pb::QueryRangeResponse, QueryError> {
        let next_page_token = match (more, self.last) {
            (false, _) => String::new(),
            (true, Some(cursor)) => PageToken::new(query, cursor).encode()?,
            (true, None) => {
                return Err(QueryError::Internal(
                    "a page ended before its first point".into(),
                ));
            }
        };
        Ok(pb::QueryRangeResponse {
            series: self.series,
            next_page_token,
            retained_from_ns: 0,
        })
    }
}

pub(crate) fn sample_to_pb(sample: Sample) -> pb::SamplePoint {
    let value = match sample.value {
        // Moves the string instead of cloning it.
        Value::Str(s) => pb::Value {
            kind: Some(pb::value::Kind::StringValue(s)),
        },
        other => value_to_pb(&other),
    };
    pb::SamplePoint {
        ts_ns: sample.ts_ns,
        value: Some(value),
    }
}

/// What a page token carries. Field names are short: the token travels in
/// every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PageToken {
    /// Format version.
    v: u8,
    /// Fingerprint of the query, in hex.
    q: String,
    /// The end of the range, fixed by the first page.
    to: i64,
    /// The cursor: device, metric and timestamp of the last point returned.
    d: String,
    m: String,
    t: i64,
}

impl PageToken {
    fn new(query: &RangeQuery, cursor: Cursor) -> Self {
        Self {
            v: TOKEN_VERSION,
            q: format!("{:016x}", query.fingerprint),
            to: query.range.to_ns,
            d: cursor.device,
            m: cursor.metric,
            t: cursor.ts_ns,
        }
    }

    fn encode(&self) -> Result<String, QueryError> {
        let json = serde_json::to_vec(self)
            .map_err(|e| QueryError::Internal(format!("encoding a page token: {e}")))?;
        Ok(URL_SAFE_NO_PAD.encode(json))
    }

    fn decode(token: &str, fingerprint: u64) -> Result<Self, QueryError> {
        let invalid = |why: &str| QueryError::invalid("page_token", why);
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("too long to be a page token"));
        }
        let json = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| invalid("not a page token"))?;
        let parsed: Self =
            serde_json::from_slice(&json).map_err(|_| invalid("not a page token"))?;
        if parsed.v != TOKEN_VERSION {
            return Err(invalid("page token of an unsupported version"));
        }
        if parsed.q != format!("{fingerprint:016x}") {
            return Err(invalid(
                "page token of a different query; repeat the request's target, metrics, from_ns, to_ns and order",
            ));
        }
        Ok(parsed)
    }

    fn cursor(self) -> Cursor {
        Cursor {
            device: self.d,
            metric: self.m,
            ts_ns: self.t,
        }
    }
}

/// A stable 64-bit FNV-1a hash of the parameters that define the query's
/// result set. Each field is length-prefixed so that fields cannot run
/// together. Stable across builds and processes, unlike `DefaultHasher`.
fn fingerprint(
    tenant: &str,
    target: &TargetSpec,
    metrics: &[String],
    from_ns: i64,
    to_ns: i64,
    order: Order,
) -> u64 {
    let mut h = Fnv1a::default();
    h.field(tenant.as_bytes());
    h.field(target.to_string().as_bytes());
    h.field(&(metrics.len() as u64).to_le_bytes());
    for m in metrics {
        h.field(m.as_bytes());
    }
    h.field(&from_ns.to_le_bytes());
    h.field(&to_ns.to_le_bytes());
    h.field(&[u8::from(order == Order::Desc)]);
    h.0
}

#[derive(Debug)]
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use tributary_core::selector::Selector;

    use super::*;
    use crate::testkit::MemStore;

    const BIG: usize = 1 << 30;

    fn device(id: &str) -> DeviceInfo {
        DeviceInfo {
            id: id.into(),
            labels: Default::default(),
            disabled: false,
        }
    }

    fn all() -> TargetSpec {
        TargetSpec::Selector(Selector::default())
    }

    /// d1/a: 1..=5, d1/b: 10, d2/a: 2,4, d3: nothing, d4/a: 7 (ints = ts).
    fn fixture() -> (MemStore, Vec<DeviceInfo>) {
        let store = MemStore::default();
        let ints = |ts: &[i64]| ts.iter().map(|t| (*t, Value::I64(*t))).collect::<Vec<_>>();
        store.put("acme", "d1", "a", &ints(&[1, 2, 3, 4, 5]));
        store.put("acme", "d1", "b", &ints(&[10]));
        store.put("acme", "d2", "a", &ints(&[2, 4]));
        store.put("acme", "d4", "a", &ints(&[7]));
        store.put("other", "d1", "a", &ints(&[1]));
        (store, ["d1", "d2", "d3", "d4"].map(device).to_vec())
    }

    fn request(limit: u32, order: pb::Order) -> pb::QueryRangeRequest {
        pb::QueryRangeRequest {
            from_ns: 0,
            to_ns: 100,
            limit,
            order: order as i32,
            ..Default::default()
        }
    }

    /// Flattens a page to (device, metric, ts).
    fn flat(page: &pb::QueryRangeResponse) -> Vec<(String, String, i64)> {
        page.series
            .iter()
            .flat_map(|s| {
                s.points
                    .iter()
                    .map(|p| (s.device.clone(), s.metric.clone(), p.ts_ns))
            })
            .collect()
    }

    /// Every page of a query, following tokens.
    async fn pages(
        store: &MemStore,
        devices: &[DeviceInfo],
        mut req: pb::QueryRangeRequest,
        max_bytes: usize,
    ) -> Vec<pb::QueryRangeResponse> {
        let mut out = Vec::new();
        loop {
            let q = RangeQuery::from_pb("acme", &all(), &req, 100, 1_000).unwrap();
            let page = run(store, "acme", devices, &q, max_bytes).await.unwrap();
            let token = page.next_page_token.clone();
            out.push(page);
            assert!(out.len() < 100, "paging does not terminate");
            if token.is_empty() {
                return out;
            }
            req.page_token = token;
        }
    }

    fn row(d: &str, m: &str, ts: i64) -> (String, String, i64) {
        (d.to_string(), m.to_string(), ts)
    }

    #[tokio::test]
    async fn ascending_pages_continue_exactly_across_series() {
        let (store, devices) = fixture();
        let pages = pages(&store, &devices, request(3, pb::Order::Asc), BIG).await;
        let sizes: Vec<_> = pages.iter().map(|p| flat(p).len()).collect();
        assert_eq!(sizes, [3, 3, 3]);
        let rows: Vec<_> = pages.iter().flat_map(flat).collect();
        let expected = vec![
            row("d1", "a", 1),
            row("d1", "a", 2),
            row("d1", "a", 3),
            row("d1", "a", 4),
            row("d1", "a", 5),
            row("d1", "b", 10),
            row("d2", "a", 2),
            row("d2", "a", 4),
            row("d4", "a", 7),
        ];
        assert_eq!(rows, expected);
        // Pages span series and devices, each series reported once per page.
        let series = |p: &pb::QueryRangeResponse| {
            p.series
                .iter()
                .map(|s| format!("{}/{}", s.device, s.metric))
                .collect::<Vec<_>>()
        };
        assert_eq!(series(&pages[1]), ["d1/a", "d1/b"]);
        assert_eq!(series(&pages[2]), ["d2/a", "d4/a"]);
    }

    #[tokio::test]
    async fn descending_pages_reverse_time_within_each_series() {
        let (store, devices) = fixture();
        let rows: Vec<_> = pages(&store, &devices, request(2, pb::Order::Desc), BIG)
            .await
            .iter()
            .flat_map(flat)
            .collect();
        let expected = vec![
            row("d1", "a", 5),
            row("d1", "a", 4),
            row("d1", "a", 3),
            row("d1", "a", 2),
            row("d1", "a", 1),
            row("d1", "b", 10),
            row("d2", "a", 4),
            row("d2", "a", 2),
            row("d4", "a", 7),
        ];
        assert_eq!(rows, expected);
    }

    #[tokio::test]
    async fn a_page_that_ends_with_the_data_has_no_token() {
        let (store, devices) = fixture();
        // 9 points in all: exactly one page, no token.
        let pages_of_9 = pages(&store, &devices, request(9, pb::Order::Asc), BIG).await;
        assert_eq!(pages_of_9.len(), 1);
        assert_eq!(flat(&pages_of_9[0]).len(), 9);
        // A page that ends at the end of d2/a is followed by d4/a, past the empty d3.
        let req = pb::QueryRangeRequest {
            metrics: vec!["a".into()],
            ..request(7, pb::Order::Asc)
        };
        let p = pages(&store, &devices, req, BIG).await;
        assert_eq!(p.len(), 2);
        assert_eq!(flat(&p[1]), [row("d4", "a", 7)]);
    }

    #[tokio::test]
    async fn range_is_half_open_and_named_metrics_limit_the_series() {
        let (store, devices) = fixture();
        let req = pb::QueryRangeRequest {
            from_ns: 2,
            to_ns: 5,
            metrics: vec!["a".into(), "missing".into()],
            ..request(0, pb::Order::Asc)
        };
        let rows: Vec<_> = pages(&store, &devices, req, BIG)
            .await
            .iter()
            .flat_map(flat)
            .collect();
        assert_eq!(
            rows,
            [
                row("d1", "a", 2),
                row("d1", "a", 3),
                row("d1", "a", 4),
                row("d2", "a", 2),
                row("d2", "a", 4)
            ]
        );
    }

    #[tokio::test]
    async fn byte_budget_ends_pages_early_without_losing_points() {
        let store = MemStore::default();
        let big: Vec<_> = (0..10).map(|t| (t, Value::Str("x".repeat(1000)))).collect();
        store.put("acme", "d1", "fw", &big);
        let devices = vec![device("d1")];
        let pages = pages(&store, &devices, request(0, pb::Order::Asc), 3_500).await;
        assert!(pages.len() >= 3, "{} pages", pages.len());
        for page in &pages {
            assert!(
                page.encoded_len() <= 3_500,
                "page of {} bytes",
                page.encoded_len()
            );
        }
        let ts: Vec<_> = pages.iter().flat_map(flat).map(|r| r.2).collect();
        assert_eq!(ts, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn now_is_fixed_by_the_first_page() {
        let store = MemStore::default();
        store.put(
            "acme",
            "d1",
            "a",
            &[(10, Value::F64(1.0)), (20, Value::F64(2.0))],
        );
        let devices = vec![device("d1")];
        let req = pb::QueryRangeRequest {
            to_ns: 0,
            ..request(1, pb::Order::Asc)
        };
        let q = RangeQuery::from_pb("acme", &all(), &req, 100, 25).unwrap();
        let first = run(&store, "acme", &devices, &q, BIG).await.unwrap();
        assert_eq!(flat(&first), [row("d1", "a", 10)]);
        // A point arrives after "now" of the first page; the later page, read
        // at a later now, still ends where the first page's range ended.
        store.put("acme", "d1", "a", &[(30, Value::F64(3.0))]);
        let req = pb::QueryRangeRequest {
            page_token: first.next_page_token,
            ..req
        };
        let q = RangeQuery::from_pb("acme", &all(), &req, 100, 1_000).unwrap();
        let second = run(&store, "acme", &devices, &q, BIG).await.unwrap();
        assert_eq!(flat(&second), [row("d1", "a", 20)]);
        assert!(second.next_page_token.is_empty());
    }

    #[tokio::test]
    async fn tokens_of_other_queries_are_rejected() {
        let (store, devices) = fixture();
        let req = request(2, pb::Order::Asc);
        let q = RangeQuery::from_pb("acme", &all(), &req, 100, 1_000).unwrap();
        let token = run(&store, "acme", &devices, &q, BIG)
            .await
            .unwrap()
            .next_page_token;
        assert!(!token.is_empty());

        let field = |tenant: &str, target: &TargetSpec, r: pb::QueryRangeRequest| {
            match RangeQuery::from_pb(
                tenant,
                target,
                &pb::QueryRangeRequest {
                    page_token: token.clone(),
                    ..r
                },
                100,
                1_000,
            ) {
                Err(QueryError::InvalidArgument { field, .. }) => field,
                other => panic!("expected a page_token error, got {other:?}"),
            }
        };
        assert_eq!(
            field("acme", &all(), request(2, pb::Order::Desc)),
            "page_token"
        );
        assert_eq!(
            field("other", &all(), request(2, pb::Order::Asc)),
            "page_token"
        );
        assert_eq!(
            field(
                "acme",
                &TargetSpec::Device("d1".into()),
                request(2, pb::Order::Asc)
            ),
            "page_token"
        );
        let other_metrics = pb::QueryRangeRequest {
            metrics: vec!["a".into()],
            ..request(2, pb::Order::Asc)
        };
        assert_eq!(field("acme", &all(), other_metrics), "page_token");
        let other_from = pb::QueryRangeRequest {
            from_ns: 1,
            ..request(2, pb::Order::Asc)
        };
        assert_eq!(field("acme", &all(), other_from), "page_token");
        // The page size may change between pages.
        let bigger = pb::QueryRangeRequest {
            page_token: token.clone(),
            ..request(50, pb::Order::Asc)
        };
        assert!(RangeQuery::from_pb("acme", &all(), &bigger, 100, 1_000).is_ok());

        for garbage in ["%%%", "e30", &"A".repeat(5000)] {
            let r = pb::QueryRangeRequest {
                page_token: garbage.to_string(),
                ..request(2, pb::Order::Asc)
            };
            assert!(matches!(
                RangeQuery::from_pb("acme", &all(), &r, 100, 1_000),
                Err(QueryError::InvalidArgument { ref field, .. }) if field == "page_token"
            ));
        }
    }

    #[test]
    fn limits_are_checked() {
        let q = RangeQuery::from_pb("acme", &all(), &request(0, pb::Order::Asc), 100, 0).unwrap();
        assert_eq!(q.limit, DEFAULT_LIMIT);
        let q =
            RangeQuery::from_pb("acme", &all(), &request(100_000, pb::Order::Asc), 100, 0).unwrap();
        assert_eq!(q.limit, MAX_LIMIT);
        let err = RangeQuery::from_pb("acme", &all(), &request(100_001, pb::Order::Asc), 100, 0)
            .unwrap_err();
        assert!(matches!(err, QueryError::InvalidArgument { ref field, .. } if field == "limit"));
        let bad_order = pb::QueryRangeRequest {
            order: 7,
            ..request(1, pb::Order::Asc)
        };
        let err = RangeQuery::from_pb("acme", &all(), &bad_order, 100, 0).unwrap_err();
        assert!(matches!(err, QueryError::InvalidArgument { ref field, .. } if field == "order"));
    }

    #[tokio::test]
    async fn every_point_is_returned_once_for_any_page_size() {
        let (store, devices) = fixture();
        for order in [pb::Order::Asc, pb::Order::Desc] {
            for limit in 1..=10 {
                let rows: Vec<_> = pages(&store, &devices, request(limit, order), BIG)
                    .await
                    .iter()
                    .flat_map(flat)
                    .collect();
                let unique: BTreeSet<_> = rows.iter().cloned().collect();
                assert_eq!(
                    (rows.len(), unique.len()),
                    (9, 9),
                    "limit {limit}, {order:?}"
                );
            }
        }
    }
}
