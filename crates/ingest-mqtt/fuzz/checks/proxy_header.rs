//! The PROXY protocol header parser (`src/proxy.rs`), shared by the fuzz
//! target `proxy_header` and `tests/fuzz_regressions.rs`.
//!
//! Properties, for any bytes:
//! - the parser never asks for more bytes than the limits allow, and a
//!   header it accepts lies within the input and within the limits;
//! - results are monotonic in the input: a strict prefix of an accepted
//!   header needs more bytes, bytes after a header change nothing, and an
//!   error stays an error however many bytes follow;
//! - an accepted relayed header re-encodes as v1 and as v2 and parses back
//!   to itself;
//! - the listeners' reader, fed the input in chunks of any size, agrees with
//!   the parser, and the stream after it yields exactly the bytes after the
//!   header.

use std::net::{IpAddr, SocketAddr};

use tributary_ingest_mqtt::fuzzing::{
    PROXY_V1_MAX_LEN, PROXY_V2_MAX_LEN, ProxyError, ProxyHeader, parse_proxy_header,
    read_proxy_header,
};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The first byte picks the reader's chunk size; the rest is the wire.
pub(crate) fn check(data: &[u8]) {
    let Some((&chunk, wire)) = data.split_first() else {
        return;
    };
    check_wire(wire, usize::from(chunk % 32) + 1);
    // The fuzzer rarely finds the 12-byte v2 signature or `PROXY ` by
    // itself: try the input after each of them too.
    let mut v2 = V2_SIGNATURE.to_vec();
    v2.extend_from_slice(wire);
    check_wire(&v2, usize::from(chunk % 32) + 1);
    let mut v1 = b"PROXY ".to_vec();
    v1.extend_from_slice(wire);
    check_wire(&v1, usize::from(chunk % 32) + 1);
}

fn check_wire(wire: &[u8], chunk: usize) {
    let parsed = parse_proxy_header(wire);
    match &parsed {
        Ok(Some((header, n))) => {
            let n = *n;
            assert!(n > 0 && n <= wire.len(), "a header within the input");
            if wire.starts_with(b"PROXY ") {
                assert!(n <= PROXY_V1_MAX_LEN);
            } else {
                assert!(wire.starts_with(V2_SIGNATURE) && (16..=PROXY_V2_MAX_LEN).contains(&n));
            }
            assert_eq!(
                parse_proxy_header(&wire[..n]),
                parsed,
                "bytes after it change nothing"
            );
            for k in 0..n {
                assert_eq!(
                    parse_proxy_header(&wire[..k]),
                    Ok(None),
                    "a prefix of {k} bytes"
                );
            }
            if let ProxyHeader::Proxied {
                source,
                destination,
            } = *header
            {
                round_trip(source, destination);
            }
        }
        Ok(None) => {
            assert!(
                wire.len() < PROXY_V2_MAX_LEN,
                "never asks for more than the limit"
            );
            if wire.starts_with(b"PROXY ") {
                assert!(wire.len() < PROXY_V1_MAX_LEN);
            }
            for k in 0..wire.len() {
                assert_eq!(
                    parse_proxy_header(&wire[..k]),
                    Ok(None),
                    "a prefix of {k} bytes"
                );
            }
        }
        Err(e) => {
            assert_ne!(
                *e,
                ProxyError::Truncated,
                "the parser never reports a closed stream"
            );
            // An error shows at some prefix, and stays.
            let first = (0..=wire.len())
                .find(|&k| parse_proxy_header(&wire[..k]).is_err())
                .expect("the whole input is an error");
            for k in first..=wire.len() {
                assert!(
                    parse_proxy_header(&wire[..k]).is_err(),
                    "an error stays at {k} bytes"
                );
            }
            for k in 0..first {
                assert_eq!(
                    parse_proxy_header(&wire[..k]),
                    Ok(None),
                    "a prefix of {k} bytes"
                );
            }
        }
    }

    // The listeners' reader over the same bytes.
    let read = read_proxy_header(wire, chunk);
    match (&parsed, &read) {
        (_, Ok(r)) if wire.is_empty() => assert_eq!(r.header, None),
        (Ok(Some((header, n))), Ok(r)) => {
            assert_eq!(r.header, Some(*header));
            assert!(r.read_past <= wire.len() - n);
            assert!(
                n + r.read_past <= PROXY_V2_MAX_LEN,
                "reads at most the limit"
            );
            assert_eq!(
                r.after,
                wire[*n..],
                "the stream resumes right after the header"
            );
        }
        (Ok(None), Err(e)) => assert_eq!(*e, ProxyError::Truncated),
        (Err(e), Err(r)) => assert_eq!(e, r),
        _ => panic!("the reader disagrees with the parser: {parsed:?} vs {read:?}"),
    }
}

/// Encodes a relayed connection as v1 and as v2: both parse back to it.
fn round_trip(source: SocketAddr, destination: SocketAddr) {
    let header = ProxyHeader::Proxied {
        source,
        destination,
    };
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => "TCP4",
        (IpAddr::V6(_), IpAddr::V6(_)) => "TCP6",
        _ => panic!("mixed address families in {header:?}"),
    };
    let v1 = format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    );
    if v1.len() <= PROXY_V1_MAX_LEN {
        assert_eq!(
            parse_proxy_header(v1.as_bytes()),
            Ok(Some((header, v1.len()))),
            "{v1:?}"
        );
    }
    let mut v2 = V2_SIGNATURE.to_vec();
    let mut body = Vec::new();
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            v2.extend_from_slice(&[0x21, 0x11]);
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            v2.extend_from_slice(&[0x21, 0x21]);
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
        }
        _ => unreachable!(),
    }
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&destination.port().to_be_bytes());
    v2.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    v2.extend_from_slice(&body);
    assert_eq!(parse_proxy_header(&v2), Ok(Some((header, v2.len()))));
}
