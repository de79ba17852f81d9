//! The limits of `tributary_http_server::serve`, over real sockets: what a
//! slow, silent or greedy client gets, and that the others are still served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tributary_http_server::{BodyTooSlow, HttpLimits, serve};

/// Reads until the server closes; `None` if it is still open at `within`.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&out).into()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn app() -> Router {
    Router::new()
        .route("/ping", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/echo",
            post(|body: Body| async move {
                match axum::body::to_bytes(body, 1 << 20).await {
                    Ok(b) => (StatusCode::OK, format!("{} bytes", b.len())),
                    Err(e) if BodyTooSlow::is(&e) => {
                        (StatusCode::REQUEST_TIMEOUT, "too slow".to_owned())
                    }
                    Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
                }
            }),
        )
        .route(
            "/small",
            post(|body: Body| async move {
                match axum::body::to_bytes(body, 16).await {
                    Ok(b) => (StatusCode::OK, format!("{} bytes", b.len())),
                    Err(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too large".to_owned()),
                }
            }),
        )
}

async fn start(limits: HttpLimits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(listener, app(), limits, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, stop)
}

const PING: &[u8] = b"GET /ping HTTP/1.1\r\nhost: x\r\n\r\n";

async fn ping(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ping HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("answered and closed")
}

fn short(limits: HttpLimits) -> HttpLimits {
    HttpLimits {
        header_read_timeout: Duration::from_millis(500),
        body_grace: Duration::from_millis(500),
        ..limits
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_header_is_cut_off_and_others_are_served() {
    let (addr, _stop) = start(short(HttpLimits::default())).await;
    let started = Instant::now();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    assert!(ping(addr).await.starts_with("HTTP/1.1 204"));
    let answer = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(
        answer.is_some(),
        "a half-sent header still holds its connection after 5 s"
    );
    assert!(started.elapsed() >= Duration::from_millis(450));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let (addr, _stop) = start(short(HttpLimits::default())).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(PING).await.unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("an idle keep-alive connection is closed within 5 s");
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408() {
    let limits = HttpLimits {
        min_body_rate: 1000,
        ..short(HttpLimits::default())
    };
    let (addr, _stop) = start(limits).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\nabc")
        .await
        .unwrap();
    // One byte every 200 ms: far below 1,000 bytes/s.
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        loop {
            tokio::select! {
                r = s.read(&mut buf) => {
                    let n = r.unwrap_or(0);
                    return String::from_utf8_lossy(&buf[..n]).into_owned();
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if s.write_all(b"x").await.is_err() {
                        return String::new();
                    }
                }
            }
        }
    })
    .await
    .expect("the server gave up on the trickled body within 10 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    // A body sent at once is fine.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("5 bytes"),
        "{answer}"
    );
}

/// One response from a keep-alive connection: its head, lower-cased.
async fn response_head(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert!(n > 0, "closed before a response");
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_before_the_whole_body_closes_the_connection_and_says_so() {
    let (addr, _stop) = start(HttpLimits::default()).await;
    // A body read to its end keeps the connection.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /small HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let head = response_head(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    // A body refused part way: the client is told the connection closes.
    let big = format!(
        "POST /small HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n{}",
        "x".repeat(100_000)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let head = response_head(&mut s).await;
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        read_until_closed(&mut s, Duration::from_secs(5))
            .await
            .is_some(),
        "the server closes the connection"
    );
    // A request without a body keeps it.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(PING).await.unwrap();
    let head = response_head(&mut s).await;
    assert!(!head.contains("connection: close"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused() {
    let (addr, _stop) = start(HttpLimits {
        max_header_bytes: 8192,
        ..HttpLimits::default()
    })
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let big = format!(
        "GET /ping HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let answer = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("closed");
    assert!(!answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert!(ping(addr).await.starts_with("HTTP/1.1 204"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_instead_of_failing() {
    let (addr, _stop) = start(HttpLimits {
        max_connections: 1,
        ..HttpLimits::default()
    })
    .await;
    // The first connection takes the only slot and keeps it (keep-alive).
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(PING).await.unwrap();
    let mut buf = [0u8; 256];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 204"));
    // The second is not served while the first is open...
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(PING).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(waited.is_err(), "second connection served beyond the limit");
    // ...and is served as soon as the first closes.
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 204"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_and_returns() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app(), HttpLimits::default(), async {
        let _ = stopped.await;
    }));
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(PING).await.unwrap();
    let mut buf = [0u8; 256];
    let _ = idle.read(&mut buf).await.unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returned within 5 s of shutdown")
        .unwrap()
        .unwrap();
    assert!(
        read_until_closed(&mut idle, Duration::from_secs(5))
            .await
            .is_some()
    );
}
