//! Option numbers (the IANA "CoAP Option Numbers" registry) and what a
//! number says about its option (RFC 7252 section 5.4.6).

/// If-Match (opaque, repeatable).
pub const IF_MATCH: u16 = 1;
/// Uri-Host (string).
pub const URI_HOST: u16 = 3;
/// ETag (opaque).
pub const ETAG: u16 = 4;
/// If-None-Match (empty).
pub const IF_NONE_MATCH: u16 = 5;
/// Observe (uint, RFC 7641): 0 registers, 1 deregisters; in a
/// notification, its sequence number.
pub const OBSERVE: u16 = 6;
/// Uri-Port (uint).
pub const URI_PORT: u16 = 7;
/// Location-Path (string, repeatable).
pub const LOCATION_PATH: u16 = 8;
/// Uri-Path (string, repeatable): one path segment each.
pub const URI_PATH: u16 = 11;
/// Content-Format (uint).
pub const CONTENT_FORMAT: u16 = 12;
/// Max-Age (uint, seconds); in an error, when to retry.
pub const MAX_AGE: u16 = 14;
/// Uri-Query (string, repeatable).
pub const URI_QUERY: u16 = 15;
/// Accept (uint).
pub const ACCEPT: u16 = 17;
/// Location-Query (string, repeatable).
pub const LOCATION_QUERY: u16 = 20;
/// Block2 (uint, RFC 7959): the response's block.
pub const BLOCK2: u16 = 23;
/// Block1 (uint, RFC 7959): the request's block.
pub const BLOCK1: u16 = 27;
/// Size2 (uint, RFC 7959): the response's whole size.
pub const SIZE2: u16 = 28;
/// Proxy-Uri (string).
pub const PROXY_URI: u16 = 35;
/// Proxy-Scheme (string).
pub const PROXY_SCHEME: u16 = 39;
/// Size1 (uint): the request's whole size, or in 4.13 the largest accepted.
pub const SIZE1: u16 = 60;
/// No-Response (uint, RFC 7967).
pub const NO_RESPONSE: u16 = 258;

/// Whether an option is critical: a receiver that does not understand it
/// must reject the message (odd numbers).
pub const fn is_critical(number: u16) -> bool {
    number & 1 == 1
}

/// Whether a proxy that does not understand the option must not forward
/// the message (bit 1).
pub const fn is_unsafe(number: u16) -> bool {
    number & 2 == 2
}

/// The option's value as an unsigned integer: big-endian, any length up to
/// 4 bytes (senders use the shortest; leading zeros are accepted). `None`
/// when longer.
pub fn decode_uint(value: &[u8]) -> Option<u32> {
    if value.len() > 4 {
        return None;
    }
    Some(value.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)))
}

/// `n` as an option value, in the fewest bytes (none for 0).
pub fn encode_uint(n: u32) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_follow_the_number() {
        assert!(is_critical(URI_PATH) && is_unsafe(URI_PATH));
        assert!(!is_critical(ETAG) && !is_critical(MAX_AGE));
        assert!(is_critical(BLOCK1) && is_critical(BLOCK2) && is_critical(URI_QUERY));
        assert!(!is_critical(SIZE1) && !is_critical(OBSERVE));
    }

    #[test]
    fn uints_are_shortest_and_read_back() {
        for n in [0, 1, 255, 256, 65_535, 65_536, u32::MAX] {
            let v = encode_uint(n);
            assert_eq!(decode_uint(&v), Some(n));
        }
        assert!(encode_uint(0).is_empty());
        assert_eq!(encode_uint(0x1234), [0x12, 0x34]);
        assert_eq!(
            decode_uint(&[0, 0, 1]),
            Some(1),
            "leading zeros are accepted"
        );
        assert_eq!(decode_uint(&[1, 2, 3, 4, 5]), None);
    }
}
