//! Alerts to webhooks: each transition POSTed as JSON ([`crate::event_json`])
//! to every webhook of its tenant that wants it, signed
//! ([`crate::sign`]), retried with exponential backoff, and dead-lettered
//! when it gives up.
//!
//! - **Isolation.** Each webhook has its own worker and a bounded queue
//!   ([`WebhookConfig::queue`]); a slow or dead receiver delays only its own
//!   deliveries. A transition that finds its webhook's queue full is
//!   dead-lettered at once (reason `queue_full`) rather than holding up the
//!   others. Requests in flight across all webhooks are bounded
//!   ([`WebhookConfig::max_in_flight`]).
//! - **Order.** A webhook gets its transitions in log order (firing before
//!   resolved), one request at a time.
//! - **At least once.** The consumer group commits an offset only when every
//!   delivery of the transitions before it succeeded or was dead-lettered.
//!   After a crash the rest is delivered again: the `Tributary-Alert-Id`
//!   and `Tributary-Alert-State` headers identify a repeat.
//! - **Retries.** Connection failures, timeouts, 408, 429 and 5xx are
//!   retried after 0.5 s, 1 s, 2 s, … up to 60 s (or the receiver's
//!   `Retry-After`, at most 60 s), [`WebhookConfig::max_attempts`] attempts
//!   in all; other answers are final. A delivery given up is appended to
//!   the dead-letter log (`tributary.alerts.dlq.v1`) with the reason, the
//!   webhook and the attempts.
//! - **Where to.** Unless [`WebhookConfig::allow_private`], a webhook may not
//!   reach loopback, private, link-local or other non-public addresses,
//!   whether named directly or resolved; redirects are not followed.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use prost::Message;
use tokio::sync::{Semaphore, mpsc};
use tributary_log::{ConsumerOptions, Log, LogError, Record, StartFrom};
use tributary_proto::v1 as pb;

/// The consumer group of webhook delivery on the alerts log.
pub const GROUP: &str = "tributary-alerts-webhooks";
/// Header names on dead-lettered deliveries.
pub mod dlq_headers {
    pub const REASON: &str = "tributary-dlq-reason";
    pub const WEBHOOK: &str = "tributary-webhook";
    pub const ATTEMPTS: &str = "tributary-attempts";
}
/// Transitions taken per poll.
const POLL: usize = 512;
/// Least time between two reads of the webhooks, when the source cannot
/// say whether they changed.
pub const MIN_REREAD: Duration = Duration::from_millis(10);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A webhook as the delivery needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub tenant: String,
    pub name: String,
    pub url: String,
    pub secret: String,
    /// Empty = every rule.
    pub rules: Vec<String>,
    /// The least `tributary.v1.Severity` sent.
    pub min_severity: i32,
}

impl Webhook {
    fn wants(&self, e: &pb::AlertEvent) -> bool {
        // An unspecified severity is a warning.
        let severity = if e.severity == 0 { 2 } else { e.severity };
        e.tenant == self.tenant
            && !crate::silenced(e)
            && (self.rules.is_empty() || self.rules.contains(&e.rule))
            && severity >= self.min_severity
    }
}

/// Where the delivery reads the webhooks.
#[async_trait]
pub trait WebhookSource: Send + Sync + Debug {
    async fn webhooks(&self) -> Result<Vec<Webhook>, String>;

    /// A number that moves whenever the webhooks change, if the source can
    /// tell (a registry in this process); `None` makes the delivery read
    /// the webhooks again before any transition appended after its last
    /// read (at most every [`MIN_REREAD`]).
    fn generation(&self) -> Option<u64> {
        None
    }
}

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// How often the webhooks are read again.
    pub refresh: Duration,
    /// One request's timeout, connection included.
    pub timeout: Duration,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Transitions waiting per webhook.
    pub queue: usize,
    /// Requests in flight across all webhooks.
    pub max_in_flight: usize,
    /// Let webhooks reach loopback and private addresses (tests, closed
    /// networks).
    pub allow_private: bool,
    /// Where deliveries are counted.
    pub metrics: crate::DeliveryMetrics,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            queue: 1000,
            max_in_flight: 64,
            allow_private: false,
            metrics: crate::DeliveryMetrics::default(),
        }
    }
}

/// One delivery to one webhook.
#[derive(Debug)]
struct Job {
    body: Bytes,
    alert_id: String,
    state: &'static str,
    partition: u32,
    offset: u64,
}

/// Offsets whose deliveries are not all done, per partition.
#[derive(Debug, Default)]
struct Tracker {
    remaining: BTreeMap<u32, BTreeMap<u64, usize>>,
    /// Per partition, the offset after the newest record seen.
    next: BTreeMap<u32, u64>,
    /// What was last committed.
    committed: BTreeMap<u32, u64>,
}

impl Tracker {
    fn seen(&mut self, partition: u32, offset: u64, deliveries: usize) {
        self.next.insert(partition, offset + 1);
        if deliveries > 0 {
            self.remaining
                .entry(partition)
                .or_default()
                .insert(offset, deliveries);
        }
    }

    fn done(&mut self, partition: u32, offset: u64) {
        if let Some(p) = self.remaining.get_mut(&partition)
            && let Some(n) = p.get_mut(&offset)
        {
            *n -= 1;
            if *n == 0 {
                p.remove(&offset);
            }
        }
    }

    /// The offsets to commit now: per partition, the first not done.
    fn commit_now(&mut self) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        for (&p, &next) in &self.next {
            let upto = self
                .remaining
                .get(&p)
                .and_then(|m| m.keys().next().copied())
                .unwrap_or(next);
            if self.committed.get(&p) != Some(&upto) {
                out.push((p, upto));
            }
        }
        out
    }
}

/// A webhook's worker.
struct Worker {
    webhook: Webhook,
    tx: mpsc::Sender<Job>,
}

/// What workers share.
struct Shared {
    client: reqwest::Client,
    config: WebhookConfig,
    in_flight: Semaphore,
    dead_letters: Arc<dyn Log>,
    done: mpsc::UnboundedSender<(u32, u64)>,
}

/// Delivers every transition of `alerts` to the webhooks of `source` until
/// `stop`. See the [module docs](self).
pub async fn deliver(
    alerts: Arc<dyn Log>,
    dead_letters: Arc<dyn Log>,
    source: Arc<dyn WebhookSource>,
    config: WebhookConfig,
    stop: impl Future<Output = ()>,
) -> Result<(), LogError> {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(Resolver {
            allow_private: config.allow_private,
        }))
        .build()
        .map_err(|e| LogError::Backend(format!("webhook client: {e}")))?;
    let shared = Arc::new(Shared {
        client,
        in_flight: Semaphore::new(config.max_in_flight.max(1)),
        config: config.clone(),
        dead_letters,
        done: done_tx,
    });
    let mut consumer = alerts
        .consumer(ConsumerOptions {
            group: Some(GROUP.into()),
            start: StartFrom::Earliest,
        })
        .await?;
    let mut workers: HashMap<(String, String), Worker> = HashMap::new();
    let mut last_refresh: Option<Instant> = None;
    // When the webhooks in force were read (wall clock, ms): a transition
    // appended later may be for a webhook created meanwhile.
    let mut read_at_ms = i64::MIN;
    // The source's generation at that read.
    let mut read_generation: Option<u64> = None;
    let mut tracker = Tracker::default();
    tokio::pin!(stop);
    loop {
        let records = tokio::select! {
            () = &mut stop => return Ok(()),
            r = consumer.poll(POLL, Duration::from_millis(200)) => r?,
        };
        // Read the webhooks again when due, or before delivering a
        // transition appended after they were read (at most every
        // `MIN_REREAD`), so that a webhook gets every transition appended
        // after it was created.
        // A source that tells when the webhooks changed is read only then.
        let generation = source.generation();
        let newer = records.iter().any(|r| r.timestamp_ms >= read_at_ms)
            && (generation.is_none() || generation != read_generation);
        if newer
            && generation.is_none()
            && let Some(at) = last_refresh
        {
            tokio::time::sleep(MIN_REREAD.saturating_sub(at.elapsed())).await;
        }
        if newer || last_refresh.is_none_or(|at| at.elapsed() >= config.refresh) {
            last_refresh = Some(Instant::now());
            let started_ms = now_ms();
            read_generation = generation;
            match source.webhooks().await {
                Ok(hooks) => {
                    refresh(&mut workers, hooks, &shared);
                    read_at_ms = started_ms;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the webhooks; keeping those known")
                }
            }
        }
        for r in &records {
            let mut queued = 0;
            if let Ok(e) = pb::AlertEvent::decode(r.value.as_ref()) {
                if crate::silenced(&e) {
                    shared.config.metrics.count("webhook", "silenced");
                }
                let body = Bytes::from(crate::event_json(&e).to_string());
                for w in workers.values().filter(|w| w.webhook.wants(&e)) {
                    let job = Job {
                        body: body.clone(),
                        alert_id: e.alert_id.clone(),
                        state: crate::state_name(e.state()),
                        partition: r.partition,
                        offset: r.offset,
                    };
                    match w.tx.try_send(job) {
                        Ok(()) => queued += 1,
                        Err(
                            mpsc::error::TrySendError::Full(job)
                            | mpsc::error::TrySendError::Closed(job),
                        ) => {
                            dead_letter(&shared, &w.webhook, &job, "queue_full", 0).await;
                        }
                    }
                }
            } else {
                tracing::warn!(
                    partition = r.partition,
                    offset = r.offset,
                    "alerts log: a record that is not an AlertEvent, skipped"
                );
            }
            tracker.seen(r.partition, r.offset, queued);
        }
        while let Ok((p, o)) = done_rx.try_recv() {
            tracker.done(p, o);
        }
        let offsets = tracker.commit_now();
        if !offsets.is_empty() {
            match consumer.commit(&offsets).await {
                Ok(()) => tracker.committed.extend(offsets),
                Err(e) => {
                    tracing::warn!(error = %e, "webhook delivery: commit failed; retried later")
                }
            }
        }
    }
}

/// Starts workers for new and changed webhooks; ends those of webhooks
/// gone (after their queued deliveries).
fn refresh(
    workers: &mut HashMap<(String, String), Worker>,
    hooks: Vec<Webhook>,
    shared: &Arc<Shared>,
) {
    let mut keep = HashMap::new();
    for hook in hooks {
        let key = (hook.tenant.clone(), hook.name.clone());
        match workers.remove(&key) {
            Some(w) if w.webhook == hook => {
                keep.insert(key, w);
            }
            _ => {
                let (tx, rx) = mpsc::channel(shared.config.queue.max(1));
                tokio::spawn(work(hook.clone(), rx, shared.clone()));
                keep.insert(key, Worker { webhook: hook, tx });
            }
        }
    }
    *workers = keep;
}

/// Why one attempt failed.
enum Failure {
    /// Worth another attempt, after at least this long.
    Retry(String, Option<Duration>),
    Final(String),
}

/// A webhook's worker: its deliveries in order, one at a time.
async fn work(hook: Webhook, mut rx: mpsc::Receiver<Job>, shared: Arc<Shared>) {
    while let Some(job) = rx.recv().await {
        let mut backoff = shared.config.first_backoff;
        let mut attempt = 1;
        loop {
            let result = {
                let _permit = shared.in_flight.acquire().await;
                let started = Instant::now();
                let result = send(&shared, &hook, &job, attempt).await;
                shared
                    .config
                    .metrics
                    .webhook_request(started.elapsed().as_secs_f64());
                result
            };
            match result {
                Ok(()) => {
                    shared.config.metrics.count("webhook", "delivered");
                    break;
                }
                Err(Failure::Retry(why, after)) if attempt < shared.config.max_attempts => {
                    shared.config.metrics.count("webhook", "retried");
                    let wait = after.unwrap_or(backoff).min(shared.config.max_backoff);
                    tracing::debug!(tenant = %hook.tenant, webhook = %hook.name, attempt, reason = %why, retry_in_ms = wait.as_millis() as u64, "webhook delivery retried");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(shared.config.max_backoff);
                    attempt += 1;
                }
                Err(Failure::Retry(why, _) | Failure::Final(why)) => {
                    dead_letter(&shared, &hook, &job, &why, attempt).await;
                    break;
                }
            }
        }
        let _ = shared.done.send((job.partition, job.offset));
    }
}

/// One attempt.
async fn send(shared: &Shared, hook: &Webhook, job: &Job, attempt: u32) -> Result<(), Failure> {
    if !shared.config.allow_private {
        check_destination(&hook.url).await?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let response = shared
        .client
        .post(&hook.url)
        .header("content-type", "application/json")
        .header(
            "tributary-signature",
            crate::sign::signature(&hook.secret, now, &job.body),
        )
        .header("tributary-alert-id", &job.alert_id)
        .header("tributary-alert-state", job.state)
        .header("tributary-delivery-attempt", attempt.to_string())
        .body(job.body.clone())
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) if e.is_builder() => return Err(Failure::Final(format!("request: {e}"))),
        Err(e) => return Err(Failure::Retry(format!("request: {e}"), None)),
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let why = format!("HTTP {}", status.as_u16());
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Err(Failure::Retry(why, retry_after))
    } else {
        Err(Failure::Final(why))
    }
}

/// Appends a delivery given up to the dead-letter log; a failure to do so
/// is logged (the transition itself stays in the alerts log).
async fn dead_letter(shared: &Shared, hook: &Webhook, job: &Job, reason: &str, attempts: u32) {
    shared.config.metrics.count("webhook", "dead_lettered");
    tracing::warn!(tenant = %hook.tenant, webhook = %hook.name, alert_id = %job.alert_id, reason, attempts, "webhook delivery dead-lettered");
    let record = Record {
        key: Bytes::from(format!("{}/{}", hook.tenant, hook.name)),
        value: job.body.clone(),
        headers: vec![
            (dlq_headers::REASON.into(), Bytes::from(reason.to_owned())),
            (dlq_headers::WEBHOOK.into(), Bytes::from(hook.name.clone())),
            (
                dlq_headers::ATTEMPTS.into(),
                Bytes::from(attempts.to_string()),
            ),
        ],
        timestamp_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    };
    if let Err(e) = shared.dead_letters.append(record).await {
        tracing::error!(error = %e, "could not dead-letter a webhook delivery");
    }
}

/// Refuses a URL whose host is, or resolves only to, non-public
/// addresses: a final answer, not retried. (The client's resolver filters
/// too, so a name that changes its answer meanwhile still cannot reach
/// one.)
async fn check_destination(url: &str) -> Result<(), Failure> {
    if let Some(ip) = literal_ip(url) {
        return if is_public(ip) {
            Ok(())
        } else {
            Err(Failure::Final(format!("{ip} is not a public address")))
        };
    }
    let Some((host, port)) = url.parse::<http::Uri>().ok().and_then(|u| {
        let port = u.port_u16().unwrap_or(if u.scheme_str() == Some("https") {
            443
        } else {
            80
        });
        Some((u.host()?.to_owned(), port))
    }) else {
        return Err(Failure::Final("not a URL".into()));
    };
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(a) => a.collect(),
        Err(e) => return Err(Failure::Retry(format!("resolving {host}: {e}"), None)),
    };
    if addrs.iter().any(|a| is_public(a.ip())) {
        Ok(())
    } else {
        Err(Failure::Final(format!(
            "{host} resolves to no public address"
        )))
    }
}

/// The host of `url` when it is an IP address.
fn literal_ip(url: &str) -> Option<IpAddr> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80) // link local
        }
    }
}

/// Resolves names, keeping public addresses only unless allowed.
struct Resolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_count_as_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        assert_eq!(
            literal_ip("http://[::1]:8080/x"),
            Some("::1".parse().unwrap())
        );
        assert_eq!(literal_ip("https://example.com/x"), None);
    }

    #[test]
    fn offsets_commit_only_past_deliveries_all_done() {
        let mut t = Tracker::default();
        t.seen(0, 0, 0);
        t.seen(0, 1, 2);
        t.seen(0, 2, 1);
        t.seen(1, 5, 0);
        assert_eq!(t.commit_now(), [(0, 1), (1, 6)]);
        t.committed.extend([(0, 1), (1, 6)]);
        t.done(0, 2);
        assert_eq!(t.commit_now(), [], "offset 1 still waits");
        t.done(0, 1);
        assert_eq!(t.commit_now(), [], "one of two");
        t.done(0, 1);
        assert_eq!(t.commit_now(), [(0, 3)]);
    }
}

#[cfg(test)]
mod delivery_tests {
    use std::sync::Mutex;

    use axum::http::{HeaderMap, StatusCode};
    use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};

    use super::*;

    /// A receiver that answers each request with the next status of a
    /// script (then 200), keeping what it got.
    #[derive(Clone, Default)]
    struct Receiver {
        script: Arc<Mutex<Vec<u16>>>,
        got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    }

    async fn serve(receiver: Receiver) -> SocketAddr {
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |axum::extract::State(r): axum::extract::State<Receiver>,
                     headers: HeaderMap,
                     body: String| async move {
                        r.got.lock().unwrap().push((headers, body));
                        let mut script = r.script.lock().unwrap();
                        let status = if script.is_empty() {
                            200
                        } else {
                            script.remove(0)
                        };
                        StatusCode::from_u16(status).unwrap()
                    },
                ),
            )
            .with_state(receiver);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    #[derive(Debug)]
    struct Fixed(Vec<Webhook>);

    #[async_trait]
    impl WebhookSource for Fixed {
        async fn webhooks(&self) -> Result<Vec<Webhook>, String> {
            Ok(self.0.clone())
        }
    }

    fn hook(name: &str, url: String) -> Webhook {
        Webhook {
            tenant: "acme".into(),
            name: name.into(),
            url,
            secret: "whsec_test".into(),
            rules: Vec::new(),
            min_severity: 0,
        }
    }

    fn event(device: &str, state: pb::AlertState, severity: pb::Severity) -> Record {
        let e = pb::AlertEvent {
            alert_id: format!("id-{device}"),
            tenant: "acme".into(),
            rule: "hot".into(),
            device: device.into(),
            state: state as i32,
            severity: severity as i32,
            ..Default::default()
        };
        Record {
            key: Bytes::from(format!("acme/{device}")),
            value: Bytes::from(e.encode_to_vec()),
            headers: Vec::new(),
            timestamp_ms: 0,
        }
    }

    async fn logs(dir: &std::path::Path) -> (Arc<dyn Log>, Arc<dyn Log>) {
        let alerts: Arc<dyn Log> = EmbeddedLog::open(
            dir.join("alerts"),
            EmbeddedLogConfig::new("tributary.alerts.v1", 1),
        )
        .await
        .unwrap();
        let dlq: Arc<dyn Log> = EmbeddedLog::open(
            dir.join("dlq"),
            EmbeddedLogConfig::new("tributary.alerts.dlq.v1", 1),
        )
        .await
        .unwrap();
        (alerts, dlq)
    }

    fn fast() -> WebhookConfig {
        WebhookConfig {
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_attempts: 4,
            allow_private: true,
            ..WebhookConfig::default()
        }
    }

    async fn wait(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn dead_letters(dlq: &Arc<dyn Log>) -> Vec<(String, String)> {
        let mut c = dlq.consumer(ConsumerOptions::default()).await.unwrap();
        let mut out = Vec::new();
        loop {
            let records = c.poll(100, Duration::from_millis(200)).await.unwrap();
            if records.is_empty() {
                return out;
            }
            for r in records {
                let header = |name: &str| {
                    r.headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                out.push((header(dlq_headers::WEBHOOK), header(dlq_headers::REASON)));
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliveries_are_signed_retried_in_order_and_dead_lettered_when_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (alerts, dlq) = logs(dir.path()).await;
        // `flaky` fails twice with 503, then takes everything; `gone`
        // answers 404 for good; `picky` wants only critical alerts.
        let flaky = Receiver {
            script: Arc::new(Mutex::new(vec![503, 503])),
            ..Receiver::default()
        };
        let gone = Receiver {
            script: Arc::new(Mutex::new(vec![404; 100])),
            ..Receiver::default()
        };
        let picky = Receiver::default();
        let hooks = vec![
            hook(
                "flaky",
                format!("http://{}/hook", serve(flaky.clone()).await),
            ),
            hook("gone", format!("http://{}/hook", serve(gone.clone()).await)),
            Webhook {
                min_severity: pb::Severity::Critical as i32,
                ..hook(
                    "picky",
                    format!("http://{}/hook", serve(picky.clone()).await),
                )
            },
        ];
        alerts
            .append_batch(vec![
                event("d1", pb::AlertState::Firing, pb::Severity::Warning),
                event("d1", pb::AlertState::Resolved, pb::Severity::Warning),
                event("d2", pb::AlertState::Firing, pb::Severity::Critical),
            ])
            .await
            .unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(deliver(
            alerts.clone(),
            dlq.clone(),
            Arc::new(Fixed(hooks)),
            fast(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        wait("flaky to get all three", || {
            flaky.got.lock().unwrap().len() >= 5
        })
        .await;
        wait("picky to get the critical one", || {
            !picky.got.lock().unwrap().is_empty()
        })
        .await;
        wait("gone's three dead letters", || {
            gone.got.lock().unwrap().len() >= 3
        })
        .await;
        let mut dead = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while dead.len() < 3 {
            assert!(Instant::now() < deadline, "dead letters: {dead:?}");
            dead = dead_letters(&dlq).await;
        }
        stop_tx.send(()).unwrap();
        run.await.unwrap().unwrap();

        // flaky: two refused attempts, then the three in log order, each
        // signed over its body.
        let got = flaky.got.lock().unwrap().clone();
        let delivered: Vec<(String, String, String)> = got[2..]
            .iter()
            .map(|(h, body)| {
                let v: serde_json::Value = serde_json::from_str(body).unwrap();
                (
                    v["device"].as_str().unwrap().to_owned(),
                    v["state"].as_str().unwrap().to_owned(),
                    h["tributary-alert-state"].to_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            delivered,
            [
                ("d1".into(), "firing".into(), "firing".into()),
                ("d1".into(), "resolved".into(), "resolved".into()),
                ("d2".into(), "firing".into(), "firing".into()),
            ]
        );
        let attempts: Vec<&str> = got[..3]
            .iter()
            .map(|(h, _)| h["tributary-delivery-attempt"].to_str().unwrap())
            .collect();
        assert_eq!(attempts, ["1", "2", "3"], "the same delivery, retried");
        for (headers, body) in &got {
            let sig = headers["tributary-signature"].to_str().unwrap();
            let t: i64 = sig
                .strip_prefix("t=")
                .and_then(|s| s.split(',').next())
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                sig,
                crate::sign::signature("whsec_test", t, body.as_bytes())
            );
        }
        // picky: the critical one only.
        let picky_got = picky.got.lock().unwrap().clone();
        assert_eq!(picky_got.len(), 1);
        assert!(picky_got[0].1.contains("\"d2\""));
        // gone: one attempt each (404 is final), all dead-lettered.
        assert_eq!(gone.got.lock().unwrap().len(), 3);
        assert_eq!(dead, vec![("gone".to_owned(), "HTTP 404".to_owned()); 3]);
        // Everything was settled: a new run delivers only what is new.
        alerts
            .append(event("d9", pb::AlertState::Firing, pb::Severity::Warning))
            .await
            .unwrap();
        let again = Receiver::default();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let url = format!("http://{}/hook", serve(again.clone()).await);
        let run = tokio::spawn(deliver(
            alerts,
            dlq,
            Arc::new(Fixed(vec![hook("flaky", url)])),
            fast(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        wait("the new transition", || {
            !again.got.lock().unwrap().is_empty()
        })
        .await;
        stop_tx.send(()).unwrap();
        run.await.unwrap().unwrap();
        let bodies: Vec<String> = again
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect();
        assert_eq!(
            bodies.len(),
            1,
            "committed ones are not sent again: {bodies:?}"
        );
        assert!(bodies[0].contains("\"d9\""), "{bodies:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn private_addresses_are_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let (alerts, dlq) = logs(dir.path()).await;
        let receiver = Receiver::default();
        let addr = serve(receiver.clone()).await;
        alerts
            .append(event("d1", pb::AlertState::Firing, pb::Severity::Warning))
            .await
            .unwrap();
        let hooks = vec![
            hook("loopback", format!("http://{addr}/hook")),
            hook(
                "localhost",
                format!("http://localhost:{}/hook", addr.port()),
            ),
            hook("metadata", "http://169.254.169.254/latest/meta-data".into()),
            hook("v6", format!("http://[::1]:{}/hook", addr.port())),
        ];
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(deliver(
            alerts,
            dlq.clone(),
            Arc::new(Fixed(hooks)),
            WebhookConfig {
                allow_private: false,
                ..fast()
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        let mut dead = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while dead.len() < 4 {
            assert!(Instant::now() < deadline, "dead letters: {dead:?}");
            dead = dead_letters(&dlq).await;
        }
        stop_tx.send(()).unwrap();
        run.await.unwrap().unwrap();
        dead.sort();
        assert_eq!(
            dead,
            [
                (
                    "localhost".to_owned(),
                    "localhost resolves to no public address".to_owned()
                ),
                (
                    "loopback".to_owned(),
                    "127.0.0.1 is not a public address".to_owned()
                ),
                (
                    "metadata".to_owned(),
                    "169.254.169.254 is not a public address".to_owned()
                ),
                ("v6".to_owned(), "::1 is not a public address".to_owned()),
            ],
            "each refused at once, not retried"
        );
        assert!(receiver.got.lock().unwrap().is_empty(), "never called");
    }
}
