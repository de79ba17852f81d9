//! The PROXY protocol (HAProxy's specification, versions 1 and 2): the
//! header a load balancer puts before the client's first byte to tell the
//! backend who the client is.
//!
//! [`parse`] is sans-io: it looks at the bytes received so far and answers
//! "a header of `n` bytes", "need more bytes", or an error, within hard size
//! limits ([`V1_MAX_LEN`], [`V2_MAX_LEN`]). [`read_header`] drives it over a
//! socket and returns the bytes read past the header, which belong to MQTT
//! or TLS; [`Prefixed`] gives them back to the next reader.
//!
//! What it must not do: trust a header on a listener that was not told to
//! expect one (the caller decides), or read anything but the header.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Longest version 1 header, CRLF included (the specification's bound).
pub(crate) const V1_MAX_LEN: usize = 107;
/// Longest version 2 header accepted: the 16-byte fixed part and up to 536
/// bytes of addresses and TLVs (the specification asks senders to keep the
/// whole header within one 536-byte segment's worth of data after it).
pub(crate) const V2_MAX_LEN: usize = 16 + 536;
/// The most bytes [`read_header`] ever reads.
const MAX_LEN: usize = V2_MAX_LEN;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyHeader {
    /// A relayed connection: the client's address, and the address it
    /// connected to (the load balancer's).
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// `PROXY UNKNOWN` (v1), the LOCAL command (v2, e.g. a health check),
    /// or an address family without IP addresses: the socket's own peer
    /// address stands.
    Local,
}

impl ProxyHeader {
    /// The client's address, when the header names one.
    pub(crate) fn source(&self) -> Option<SocketAddr> {
        match self {
            ProxyHeader::Proxied { source, .. } => Some(*source),
            ProxyHeader::Local => None,
        }
    }
}

/// Why a connection's PROXY header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProxyError {
    /// The first bytes are neither `PROXY ` nor the version 2 signature.
    #[error("the connection did not start with a PROXY protocol header")]
    Missing,
    /// The header breaks the specification.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// The header is longer than the limit of its version.
    #[error("PROXY protocol header longer than {0} bytes")]
    TooLong(usize),
    /// The connection closed (or failed) within the header.
    #[error("the connection closed within the PROXY protocol header")]
    Truncated,
}

/// Parses the PROXY header at the start of `buf`: `Ok(Some((header, n)))`
/// when the first `n` bytes are a whole header, `Ok(None)` when `buf` is
/// the start of one and more bytes are needed. Never asks for more than
/// [`V1_MAX_LEN`] or [`V2_MAX_LEN`] bytes.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let starts_with = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    if buf.is_empty() {
        Ok(None)
    } else if starts_with(V2_SIGNATURE) {
        parse_v2(buf)
    } else if starts_with(V1_PREFIX) {
        parse_v1(buf)
    } else {
        Err(ProxyError::Missing)
    }
}

/// Version 1: `PROXY TCP4 src dst sport dport\r\n` (TCP6 likewise), or
/// `PROXY UNKNOWN ...\r\n`.
fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let mut end = None;
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\n' if i > 0 && window[i - 1] == b'\r' => {
                end = Some(i + 1);
                break;
            }
            b'\r' if i + 1 == window.len() || window[i + 1] == b'\n' => {}
            b' '..=b'~' => {}
            _ => return Err(ProxyError::Malformed("v1: not a text line ending in CRLF")),
        }
    }
    let Some(end) = end else {
        return if buf.len() >= V1_MAX_LEN {
            Err(ProxyError::TooLong(V1_MAX_LEN))
        } else {
            Ok(None)
        };
    };
    if end < V1_PREFIX.len() + 2 {
        return Err(ProxyError::Malformed("v1: empty line"));
    }
    // Printable ASCII, checked above.
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..end - 2])
        .map_err(|_| ProxyError::Malformed("v1: not ASCII"))?;
    let mut words = line.split(' ');
    let header = match words.next() {
        Some("UNKNOWN") => ProxyHeader::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut word = || {
                words
                    .next()
                    .ok_or(ProxyError::Malformed("v1: too few fields"))
            };
            let (src, dst, sport, dport) = (word()?, word()?, word()?, word()?);
            if words.next().is_some() {
                return Err(ProxyError::Malformed("v1: too many fields"));
            }
            let ip = |s: &str| -> Result<IpAddr, ProxyError> {
                if family == "TCP4" {
                    s.parse::<Ipv4Addr>()
                        .map(IpAddr::V4)
                        .map_err(|_| ProxyError::Malformed("v1: invalid IPv4 address"))
                } else {
                    s.parse::<Ipv6Addr>()
                        .map(IpAddr::V6)
                        .map_err(|_| ProxyError::Malformed("v1: invalid IPv6 address"))
                }
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            }
        }
        _ => {
            return Err(ProxyError::Malformed(
                "v1: protocol is not TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    Ok(Some((header, end)))
}

/// A decimal port without sign or leading zeros, 0 to 65535.
fn port(s: &str) -> Result<u16, ProxyError> {
    let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(ProxyError::Malformed("v1: invalid port"));
    }
    s.parse()
        .map_err(|_| ProxyError::Malformed("v1: invalid port"))
}

/// Version 2: the signature, version and command, family and transport,
/// the length of the rest, the addresses, and TLVs (skipped).
fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(ProxyError::Malformed("v2: version is not 2"));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => {
            return Err(ProxyError::Malformed(
                "v2: command is neither LOCAL nor PROXY",
            ));
        }
    };
    let family = buf[13];
    let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if total > V2_MAX_LEN {
        return Err(ProxyError::TooLong(V2_MAX_LEN));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    if local {
        // A connection of the proxy's own (health check): the addresses,
        // whatever they are, do not apply.
        return Ok(Some((ProxyHeader::Local, total)));
    }
    let short = ProxyError::Malformed("v2: address block shorter than its family");
    let header = match family {
        // TCP over IPv4.
        0x11 => {
            let a = body.get(..12).ok_or(short)?;
            let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(a[i], a[i + 1], a[i + 2], a[i + 3]));
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), u16::from_be_bytes([a[8], a[9]])),
                destination: SocketAddr::new(ip(4), u16::from_be_bytes([a[10], a[11]])),
            }
        }
        // TCP over IPv6.
        0x21 => {
            let a = body.get(..36).ok_or(short)?;
            let ip = |i: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[i..i + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), u16::from_be_bytes([a[32], a[33]])),
                destination: SocketAddr::new(ip(16), u16::from_be_bytes([a[34], a[35]])),
            }
        }
        // UNSPEC (the proxy does not know), or a UNIX socket: no IP address
        // to report, the socket's peer stands.
        0x00 | 0x31 => ProxyHeader::Local,
        _ => {
            return Err(ProxyError::Malformed(
                "v2: family and transport are not TCP over IPv4 or IPv6",
            ));
        }
    };
    Ok(Some((header, total)))
}

/// Reads the PROXY header at the start of `reader`, and returns it with
/// the bytes read past it (the start of the client's own data), never
/// reading more than [`V2_MAX_LEN`] bytes in all. `Ok(None)`: the
/// connection closed, or failed, before its first byte (a load balancer's
/// TCP health check does that). The caller bounds the time.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<(ProxyHeader, Bytes)>, ProxyError> {
    let mut buf = [0u8; MAX_LEN];
    let mut filled = 0;
    loop {
        let n = match reader.read(&mut buf[filled..]).await {
            Ok(n) => n,
            Err(_) if filled == 0 => return Ok(None),
            Err(_) => return Err(ProxyError::Truncated),
        };
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(ProxyError::Truncated)
            };
        }
        filled += n;
        match parse(&buf[..filled])? {
            Some((header, len)) => {
                return Ok(Some((header, Bytes::copy_from_slice(&buf[len..filled]))));
            }
            // `parse` refuses a header before it outgrows the buffer; this
            // only keeps the loop finite should that ever change.
            None if filled == MAX_LEN => return Err(ProxyError::TooLong(MAX_LEN)),
            None => {}
        }
    }
}

/// A stream whose first reads return `prefix`: the bytes a header reader
/// took past the header. Writes go straight through.
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(inner: S, prefix: Bytes) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn proxied(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: addr(src),
            destination: addr(dst),
        }
    }

    /// A v2 header: command, family byte, address block and TLVs.
    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn v4_block() -> Vec<u8> {
        let mut b = vec![203, 0, 113, 7, 10, 0, 0, 1];
        b.extend_from_slice(&40001u16.to_be_bytes());
        b.extend_from_slice(&1883u16.to_be_bytes());
        b
    }

    /// Every strict prefix of a valid header asks for more bytes.
    fn every_prefix_needs_more(header: &[u8]) {
        for n in 0..header.len() {
            assert_eq!(parse(&header[..n]), Ok(None), "prefix of {n} bytes");
        }
    }

    #[test]
    fn v1_tcp4_and_the_bytes_after_it() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 40001 1883\r\n";
        let mut wire = line.to_vec();
        wire.extend_from_slice(b"\x10\x0e"); // the start of a CONNECT
        assert_eq!(
            parse(&wire),
            Ok(Some((
                proxied("203.0.113.7:40001", "10.0.0.1:1883"),
                line.len()
            )))
        );
        every_prefix_needs_more(line);
    }

    #[test]
    fn v1_tcp6() {
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 8883\r\n";
        assert_eq!(
            parse(line),
            Ok(Some((
                proxied("[2001:db8::7]:65535", "[2001:db8::1]:8883"),
                line.len()
            )))
        );
    }

    #[test]
    fn v1_unknown_keeps_the_socket_address() {
        for line in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
        ] {
            assert_eq!(parse(line), Ok(Some((ProxyHeader::Local, line.len()))));
        }
    }

    #[test]
    fn v1_malformed_lines_are_refused() {
        for line in [
            &b"PROXY TCP4 203.0.113.7 10.0.0.1 40001\r\n"[..],
            b"PROXY TCP4 203.0.113.7 10.0.0.1 40001 1883 9\r\n",
            b"PROXY TCP4 2001:db8::7 10.0.0.1 40001 1883\r\n",
            b"PROXY TCP6 203.0.113.7 2001:db8::1 40001 1883\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 65536 1883\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 0400 1883\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 +40 1883\r\n",
            b"PROXY TCP4  203.0.113.7 10.0.0.1 40001 1883\r\n",
            b"PROXY UDP4 203.0.113.7 10.0.0.1 40001 1883\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 40001 1883\n",
            b"PROXY TCP4 203.0.113.7\x00",
            b"PROXY \r\n",
        ] {
            assert!(
                matches!(parse(line), Err(ProxyError::Malformed(_))),
                "{:?} -> {:?}",
                String::from_utf8_lossy(line),
                parse(line)
            );
        }
    }

    #[test]
    fn v1_without_crlf_within_107_bytes_is_too_long() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 1, b'x');
        assert_eq!(parse(&line), Ok(None), "106 bytes may still end");
        line.push(b'x');
        assert_eq!(parse(&line), Err(ProxyError::TooLong(V1_MAX_LEN)));
        // Exactly 107 bytes with the CRLF is fine.
        line.truncate(V1_MAX_LEN - 2);
        line.extend_from_slice(b"\r\n");
        assert_eq!(parse(&line), Ok(Some((ProxyHeader::Local, V1_MAX_LEN))));
    }

    #[test]
    fn v2_proxy_ipv4_with_tlvs_skipped() {
        let mut body = v4_block();
        // PP2_TYPE_AWS (0xEA): a VPC endpoint id, and a NOOP TLV.
        body.extend_from_slice(&[0xEA, 0x00, 0x05, 0x01, b'v', b'p', b'c', b'e']);
        body.extend_from_slice(&[0x04, 0x00, 0x00]);
        let header = v2(1, 0x11, &body);
        let mut wire = header.clone();
        wire.extend_from_slice(b"\x16\x03\x01"); // a TLS ClientHello follows
        assert_eq!(
            parse(&wire),
            Ok(Some((
                proxied("203.0.113.7:40001", "10.0.0.1:1883"),
                header.len()
            )))
        );
        every_prefix_needs_more(&header);
    }

    #[test]
    fn v2_proxy_ipv6() {
        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut body = src.octets().to_vec();
        body.extend_from_slice(&dst.octets());
        body.extend_from_slice(&40001u16.to_be_bytes());
        body.extend_from_slice(&8883u16.to_be_bytes());
        let header = v2(1, 0x21, &body);
        assert_eq!(
            parse(&header),
            Ok(Some((
                proxied("[2001:db8::7]:40001", "[2001:db8::1]:8883"),
                header.len()
            )))
        );
    }

    #[test]
    fn v2_local_unspec_and_unix_keep_the_socket_address() {
        // LOCAL with addresses and a TLV: the addresses do not apply.
        let mut body = v4_block();
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
        for header in [
            v2(0, 0x11, &body),
            v2(0, 0x00, &[]),
            v2(1, 0x00, &[]),
            v2(1, 0x31, &[0u8; 216]),
        ] {
            assert_eq!(parse(&header), Ok(Some((ProxyHeader::Local, header.len()))));
        }
    }

    #[test]
    fn v2_bad_version_command_family_or_short_block_is_refused() {
        let mut bad_version = v2(1, 0x11, &v4_block());
        bad_version[12] = 0x11;
        for header in [
            bad_version,
            v2(2, 0x11, &v4_block()),
            // UDP over IPv4: not a stream.
            v2(1, 0x12, &v4_block()),
            v2(1, 0x41, &v4_block()),
            // An IPv4 block too short for its addresses.
            v2(1, 0x11, &v4_block()[..8]),
            v2(1, 0x21, &v4_block()),
        ] {
            assert!(
                matches!(parse(&header), Err(ProxyError::Malformed(_))),
                "{header:?} -> {:?}",
                parse(&header)
            );
        }
    }

    #[test]
    fn v2_over_the_size_limit_is_refused_from_its_length_field() {
        let body = vec![0u8; V2_MAX_LEN - 16];
        let header = v2(1, 0x11, &body);
        assert!(parse(&header).is_ok(), "536 bytes after the fixed part");
        let oversize = v2(1, 0x11, &vec![0u8; V2_MAX_LEN - 15]);
        // Refused from the first 16 bytes, without waiting for the rest.
        assert_eq!(parse(&oversize[..16]), Err(ProxyError::TooLong(V2_MAX_LEN)));
    }

    #[test]
    fn anything_else_is_missing_at_the_first_wrong_byte() {
        for wire in [
            &b"\x10\x0e\x00\x04MQTT"[..], // a CONNECT
            b"\x16\x03\x01\x02\x00",      // a TLS ClientHello
            b"GET /mqtt HTTP/1.1\r\n",
            b"PROXI",
            b"\r\n\r\n\0\r\nQUIX",
            b"proxy tcp4",
        ] {
            assert_eq!(parse(wire), Err(ProxyError::Missing), "{wire:?}");
        }
    }

    #[tokio::test]
    async fn the_reader_returns_the_bytes_after_the_header() {
        let mut wire = v2(1, 0x11, &v4_block());
        wire.extend_from_slice(b"after");
        // Split into 1-byte reads: the header arrives piecemeal.
        let mut reader = tokio_test_reader(&wire);
        let (header, rest) = read_header(&mut reader).await.unwrap().unwrap();
        assert_eq!(header.source(), Some(addr("203.0.113.7:40001")));
        let mut stream = Prefixed::new(reader, rest);
        let mut tail = Vec::new();
        stream.read_to_end(&mut tail).await.unwrap();
        assert_eq!(tail, b"after");
    }

    #[tokio::test]
    async fn the_reader_tells_a_silent_close_from_a_truncated_header() {
        assert_eq!(read_header(&mut &b""[..]).await, Ok(None));
        assert_eq!(
            read_header(&mut &b"PROXY TCP4 1.2.3.4"[..]).await,
            Err(ProxyError::Truncated)
        );
        assert_eq!(
            read_header(&mut &b"\x10\x0e\x00\x04MQTT"[..]).await,
            Err(ProxyError::Missing)
        );
        // A stream of garbage that looks like a v1 line is cut at 107 bytes.
        let endless = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 1000]].concat();
        assert_eq!(
            read_header(&mut endless.as_slice()).await,
            Err(ProxyError::TooLong(V1_MAX_LEN))
        );
    }

    /// A reader that hands out one byte per read.
    fn tokio_test_reader(data: &[u8]) -> OneByte {
        OneByte(data.to_vec().into())
    }

    struct OneByte(std::collections::VecDeque<u8>);

    impl AsyncRead for OneByte {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(b) = self.get_mut().0.pop_front() {
                buf.put_slice(&[b]);
            }
            Poll::Ready(Ok(()))
        }
    }
}
