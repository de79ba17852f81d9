//! What every service process shares: shutdown signals, listeners, and the
//! operations endpoint (`/metrics`, `/healthz`, `/readyz`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use prometheus_client::registry::Registry as MetricsRegistry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A stop signal: turns true on SIGTERM or SIGINT.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        let _ = stop_tx.send(true);
    });
    stop_rx
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A future that resolves when `stop` turns true.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Connections the kernel may hold for a listener before they are
/// accepted: a fleet reconnecting at once fills a short queue while the
/// server is busy, and every dropped SYN costs that client a one-second
/// retransmission. Linux caps it at `net.core.somaxconn` (4,096 by
/// default since 5.4).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with a [`LISTEN_BACKLOG`] queue, naming it in the error.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let bound = (|| {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As `TcpListener::bind` does: a restarted server rebinds its port
        // while the old connections are in TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    })();
    bound.with_context(|| format!("binding the {what} listener on {addr}"))
}

/// Tells the operator where the bootstrap admin token is. It is printed
/// only to a terminal: where stdout is a log (a container, a service
/// manager), a credential printed there would be readable by everyone who
/// reads the logs, so only its file (mode 0600) is named.
#[allow(clippy::print_stdout)]
pub fn announce_admin_token(token: &str, file: &std::path::Path) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        println!(
            "\nAdmin token (shown once; also saved to {}):\n\n{token}\n",
            file.display()
        );
    } else {
        println!(
            "Admin token saved to {} (mode 0600); not printed, since stdout is not a terminal",
            file.display()
        );
    }
}

/// Named service tasks of one process.
#[derive(Debug, Default)]
pub struct Tasks(Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>);

impl Tasks {
    /// Runs `fut` as the service `name`.
    pub fn spawn(
        &mut self,
        name: &'static str,
        fut: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.0.push((name, tokio::spawn(fut)));
    }

    /// Waits for every task; returns the first error, after logging each.
    pub async fn join(self) -> anyhow::Result<()> {
        let mut first_error = None;
        for (name, task) in self.0 {
            match task.await {
                Ok(Ok(())) => tracing::info!(service = name, "stopped"),
                Ok(Err(e)) => {
                    tracing::error!(service = name, error = format!("{e:#}"), "service failed");
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(anyhow::anyhow!("{name} task panicked: {e}"));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The operations endpoint of a process, and its readiness flag.
#[derive(Debug, Clone)]
pub struct Ops {
    ready: Arc<AtomicBool>,
}

impl Ops {
    /// Serves `/metrics`, `/healthz` and `/readyz` on `listener`, within
    /// `limits`, until `stop`.
    /// Not ready until [`Ops::set_ready`]. `/metrics` also shows the
    /// process-wide gauges: the queue depth of every Kafka producer the
    /// process connected ([`super::backends::producer_queue_metrics`]).
    pub fn serve(
        listener: TcpListener,
        limits: tributary_http_server::HttpLimits,
        mut metrics: MetricsRegistry,
        stop: watch::Receiver<bool>,
        tasks: &mut Tasks,
    ) -> Self {
        super::backends::producer_queue_metrics().register(&mut metrics);
        let ready = Arc::new(AtomicBool::new(false));
        let router = ops_router(Arc::new(metrics), ready.clone());
        tasks.spawn("metrics", async move {
            tributary_http_server::serve(listener, router, limits, stopped(stop))
                .await
                .context("metrics server")
        });
        Self { ready }
    }

    /// `/readyz` answers 200 from now on (or 503 again with `false`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// `/metrics` (OpenMetrics text), `/healthz` (alive) and `/readyz` (serving).
fn ops_router(metrics: Arc<MetricsRegistry>, ready: Arc<AtomicBool>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    let mut body = String::new();
                    match prometheus_client::encoding::text::encode(&mut body, &metrics) {
                        Ok(()) => (
                            StatusCode::OK,
                            [(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                            .into_response(),
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::Acquire) {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
}
