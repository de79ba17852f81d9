//! Serving an axum [`Router`] over HTTP/1.1 with limits on everything a
//! client controls, for every Tributary HTTP listener (ingest, operations,
//! and the API).
//!
//! What a client cannot do to a listener served by [`serve`]:
//!
//! - **hold more than its share of connections**: at most
//!   [`HttpLimits::max_connections`] are open at once; past it the listener
//!   stops accepting and new connections wait in the kernel's backlog, rather
//!   than running the process out of file descriptors;
//! - **send headers slowly, or never**: a request's header must be complete
//!   within [`HttpLimits::header_read_timeout`] of when the server starts
//!   waiting for it. That includes a keep-alive connection waiting for its
//!   next request, so an idle connection is closed after the same time;
//! - **send large headers**: at most [`HttpLimits::max_header_bytes`] of
//!   request line and headers, and at most 100 header fields (hyper's
//!   limit): more is a `431`/`400` from hyper and a close;
//! - **trickle a body**: once a handler reads the body, it must arrive at
//!   [`HttpLimits::min_body_rate`] bytes per second on average, after a
//!   grace period; otherwise reading it fails with [`BodyTooSlow`], which a
//!   handler answers with `408 Request Timeout`.
//!
//! A response to a request whose body the handler did not read to its end
//! (a `413`, a `408`, a refusal before the body) says `Connection: close`:
//! the server closes such a connection rather than read the rest, and a
//! client told so does not send its next request into it.
//!
//! What it must not do: hold a connection open past a shutdown longer than
//! its in-flight request needs, or buffer anything a handler did not ask
//! for.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

/// The limits of one HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time to receive a request's line and headers, counted from when the
    /// server starts waiting for them: also how long an idle keep-alive
    /// connection stays open.
    pub header_read_timeout: Duration,
    /// Largest request line plus headers, in bytes (at least 8,192).
    pub max_header_bytes: usize,
    /// Average bytes per second a request body must arrive at, once the
    /// handler reads it (0: no minimum).
    pub min_body_rate: u64,
    /// Time before `min_body_rate` applies: a body of `n` bytes must be in
    /// within `body_grace + n / min_body_rate` seconds.
    pub body_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            min_body_rate: 1024,
            body_grace: Duration::from_secs(10),
        }
    }
}

/// The smallest `max_header_bytes` hyper accepts.
pub const MIN_HEADER_BYTES: usize = 8192;

impl HttpLimits {
    /// Checks that the limits make sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("the HTTP connection limit must be at least 1".into());
        }
        if self.header_read_timeout.is_zero() {
            return Err("the HTTP header read timeout must be more than 0".into());
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(format!(
                "the HTTP header size limit must be at least {MIN_HEADER_BYTES} bytes"
            ));
        }
        Ok(())
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown`
/// resolves; then stops accepting, lets every connection finish the
/// request it is serving (its keep-alive ends), and returns once all have
/// closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    limits
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, close) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set stays as large as the open ones.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before
                    // accept: back off briefly rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let close = close.clone();
        connections.spawn(async move {
            serve_connection(stream, router, limits, close).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: HttpLimits,
    mut close: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let mut router = router.clone();
        let read_whole = Arc::new(AtomicBool::new(false));
        let request = request.map(|body| {
            axum::body::Body::new(MinRateBody::new(
                body,
                limits.min_body_rate,
                limits.body_grace,
                read_whole.clone(),
            ))
        });
        async move {
            let mut response = match tower_service::Service::call(&mut router, request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            // The handler answered without reading the whole body (a 413,
            // a 408, a refusal before the body): hyper will close the
            // connection rather than read the rest, so say so, or the
            // client sends its next request into a closing connection.
            if !read_whole.load(Ordering::Acquire) {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES))
        .keep_alive(true);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        _ = until_true(&mut close) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Resolves once the flag turns true (or its sender is gone). A function
/// of its own so that no `watch::Ref` lives in a caller's future.
async fn until_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

/// A request body arrived slower than the listener's minimum body rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body arrived slower than {rate} bytes per second")]
pub struct BodyTooSlow {
    /// The minimum rate, in bytes per second.
    pub rate: u64,
}

impl BodyTooSlow {
    /// Whether `error`, from reading a request body, is a [`BodyTooSlow`].
    pub fn is(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut source = Some(error);
        while let Some(e) = source {
            if e.is::<BodyTooSlow>() {
                return true;
            }
            source = e.source();
        }
        false
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyTooSlow`] when a handler waits
    /// for data past `grace + received / rate` since it first asked.
    struct MinRateBody {
        #[pin]
        inner: Incoming,
        rate: u64,
        grace: Duration,
        started: Option<Instant>,
        received: u64,
        timer: Option<Pin<Box<Sleep>>>,
        // Set once the body has been read to its end (at once if empty).
        read_whole: Arc<AtomicBool>,
    }
}

impl MinRateBody {
    fn new(inner: Incoming, rate: u64, grace: Duration, read_whole: Arc<AtomicBool>) -> Self {
        read_whole.store(inner.is_end_stream(), Ordering::Release);
        Self {
            inner,
            rate,
            grace,
            started: None,
            received: 0,
            timer: None,
            read_whole,
        }
    }
}

impl HttpBody for MinRateBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let started = *this.started.get_or_insert_with(Instant::now);
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.received += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.read_whole.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this.read_whole.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending if *this.rate == 0 => Poll::Pending,
            Poll::Pending => {
                let allowed = Duration::from_secs_f64(*this.received as f64 / *this.rate as f64);
                let deadline = started + *this.grace + allowed;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(Box::new(BodyTooSlow { rate: *this.rate }))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
