//! Method and response codes: a class (3 bits) and a detail (5 bits),
//! written `c.dd`.

use std::fmt;

/// A CoAP code, `class.detail` (RFC 7252 section 3 and 12.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u8);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $class:literal, $detail:literal;)+) => {
        impl Code {
            $($(#[$doc])* pub const $name: Code = Code::new($class, $detail);)+
        }
    };
}

codes! {
    /// 0.00: an Empty message (an ACK or RST that carries nothing, or a ping).
    EMPTY = 0, 0;
    /// 0.01 GET.
    GET = 0, 1;
    /// 0.02 POST.
    POST = 0, 2;
    /// 0.03 PUT.
    PUT = 0, 3;
    /// 0.04 DELETE.
    DELETE = 0, 4;
    /// 2.01 Created.
    CREATED = 2, 1;
    /// 2.02 Deleted.
    DELETED = 2, 2;
    /// 2.03 Valid.
    VALID = 2, 3;
    /// 2.04 Changed.
    CHANGED = 2, 4;
    /// 2.05 Content.
    CONTENT = 2, 5;
    /// 2.31 Continue (RFC 7959): send the next block.
    CONTINUE = 2, 31;
    /// 4.00 Bad Request.
    BAD_REQUEST = 4, 0;
    /// 4.01 Unauthorized.
    UNAUTHORIZED = 4, 1;
    /// 4.02 Bad Option: an unrecognized critical option.
    BAD_OPTION = 4, 2;
    /// 4.03 Forbidden.
    FORBIDDEN = 4, 3;
    /// 4.04 Not Found.
    NOT_FOUND = 4, 4;
    /// 4.05 Method Not Allowed.
    METHOD_NOT_ALLOWED = 4, 5;
    /// 4.06 Not Acceptable.
    NOT_ACCEPTABLE = 4, 6;
    /// 4.08 Request Entity Incomplete (RFC 7959): a block is missing.
    REQUEST_ENTITY_INCOMPLETE = 4, 8;
    /// 4.12 Precondition Failed.
    PRECONDITION_FAILED = 4, 12;
    /// 4.13 Request Entity Too Large.
    REQUEST_ENTITY_TOO_LARGE = 4, 13;
    /// 4.15 Unsupported Content-Format.
    UNSUPPORTED_CONTENT_FORMAT = 4, 15;
    /// 4.29 Too Many Requests (RFC 8516), with Max-Age as the retry hint.
    TOO_MANY_REQUESTS = 4, 29;
    /// 5.00 Internal Server Error.
    INTERNAL_SERVER_ERROR = 5, 0;
    /// 5.01 Not Implemented.
    NOT_IMPLEMENTED = 5, 1;
    /// 5.03 Service Unavailable, with Max-Age as the retry hint.
    SERVICE_UNAVAILABLE = 5, 3;
    /// 5.04 Gateway Timeout.
    GATEWAY_TIMEOUT = 5, 4;
}

impl Code {
    /// The code `class.detail`; `detail` is below 32.
    pub const fn new(class: u8, detail: u8) -> Self {
        Code((class << 5) | (detail & 0x1f))
    }

    /// The class: 0 for requests and Empty, 2 success, 4 client error, 5
    /// server error.
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The detail, 0 to 31.
    pub const fn detail(self) -> u8 {
        self.0 & 0x1f
    }

    /// 0.00.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// A method: 0.01 to 0.31.
    pub const fn is_request(self) -> bool {
        self.class() == 0 && self.0 != 0
    }

    /// A response: classes 2 to 5.
    pub const fn is_response(self) -> bool {
        matches!(self.class(), 2..=5)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_class_and_detail() {
        assert_eq!(Code::CHANGED.0, 0x44);
        assert_eq!(Code::CHANGED.to_string(), "2.04");
        assert_eq!(Code::SERVICE_UNAVAILABLE.to_string(), "5.03");
        assert_eq!(Code::POST.0, 2);
        assert!(Code::POST.is_request() && !Code::POST.is_response());
        assert!(Code::BAD_OPTION.is_response());
        assert!(Code::EMPTY.is_empty() && !Code::EMPTY.is_request());
        // Classes 1, 6 and 7 are reserved: neither requests nor responses.
        assert!(!Code::new(1, 0).is_request() && !Code::new(7, 3).is_response());
    }
}
