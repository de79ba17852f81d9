//! MQTT over WebSocket: the HTTP upgrade at `/mqtt` (subprotocol `mqtt`),
//! and an adapter that turns the WebSocket's binary messages back into the
//! byte stream the connection code reads and writes.
//!
//! MQTT packets and WebSocket messages are independent: a message may hold
//! part of a packet or several packets (MQTT 5.0 §6.0), so the adapter
//! only concatenates binary payloads. Text messages are a protocol error
//! and close the connection. Pings are answered by tungstenite.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// The path MQTT clients upgrade on.
pub const WS_PATH: &str = "/mqtt";

/// Subprotocols accepted, preferred first: `mqtt` (3.1.1 and 5.0) and the
/// name some older 3.1 clients send.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// The WebSocket limits for a server whose largest MQTT packet is
/// `max_packet` bytes and whose per-connection write buffer is
/// `max_write_buffer` bytes.
pub(crate) fn config(max_packet: usize, max_write_buffer: usize) -> WebSocketConfig {
    // A message may carry a whole packet plus the start of the next one.
    let max_message = max_packet.saturating_add(64 * 1024);
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .write_buffer_size(0)
        .max_write_buffer_size(max_write_buffer.saturating_mul(2).max(64 * 1024))
}

/// Accepts the upgrade request for `/mqtt` offering the `mqtt` subprotocol,
/// and refuses anything else (404 for another path, 400 without `mqtt`).
#[allow(
    clippy::result_large_err,
    reason = "the signature of tungstenite's handshake callback"
)]
pub(crate) fn on_request(
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    if request.uri().path() != WS_PATH {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            "MQTT over WebSocket is served at /mqtt",
        ));
    }
    let offered = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let Some(chosen) = SUBPROTOCOLS.iter().find(|p| offered.contains(p)) else {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "the WebSocket subprotocol \"mqtt\" is required",
        ));
    };
    response
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
    Ok(response)
}

fn refusal(status: StatusCode, message: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(message.to_owned()));
    *response.status_mut() = status;
    response
}

/// A WebSocket carrying MQTT, as a byte stream.
#[derive(Debug)]
pub(crate) struct WsByteStream<S> {
    inner: WebSocketStream<S>,
    /// The unread rest of the last binary message.
    pending: Bytes,
    /// The peer closed (or sent a close frame): reads return EOF.
    eof: bool,
}

impl<S> WsByteStream<S> {
    pub(crate) fn new(inner: WebSocketStream<S>) -> Self {
        Self {
            inner,
            pending: Bytes::new(),
            eof: false,
        }
    }
}

fn io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::from(io::ErrorKind::BrokenPipe)
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsByteStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                Some(Ok(Message::Close(_))) | None => this.eof = true,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket takes binary messages only",
                    )));
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsByteStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_ready(cx)).map_err(io_error)?;
        Pin::new(&mut this.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_flush(cx)
            .map_err(io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.get_mut().inner).poll_close(cx)) {
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}
