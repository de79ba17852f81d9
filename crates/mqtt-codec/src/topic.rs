//! Topic names, topic filters, matching, and shared subscriptions.
//!
//! The rules are those of MQTT 5.0 §4.7 and §4.8.2 (3.1.1 §4.7 has the same
//! topic rules and no shared subscriptions):
//!
//! - topic names and filters are at least one byte and at most 65,535 bytes
//!   of UTF-8, without U+0000;
//! - a topic name has no wildcard (`+` or `#`);
//! - in a filter, `#` is alone in the last level and `+` is alone in its
//!   level;
//! - a filter starting with `+` or `#` does not match a topic name starting
//!   with `$`;
//! - `$share/{group}/{filter}` is a shared subscription: the group is at least
//!   one character without `/`, `+` or `#`, followed by `/` and a filter.
//!
//! ```
//! use tributary_mqtt_codec::topic::{matches, parse_shared, validate_topic_filter};
//!
//! assert!(validate_topic_filter("sport/+/player1/#").is_ok());
//! assert!(matches("sport/#", "sport"));
//! assert!(!matches("#", "$SYS/uptime"));
//! let shared = parse_shared("$share/workers/jobs/+").unwrap().unwrap();
//! assert_eq!((shared.group, shared.filter), ("workers", "jobs/+"));
//! ```

/// The prefix marking a shared subscription's topic filter.
pub const SHARED_PREFIX: &str = "$share/";

/// The longest topic name or filter, in bytes (a UTF-8 Encoded String's limit).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Why a topic name or topic filter is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Zero bytes long.
    #[error("topic is empty")]
    Empty,
    /// More than 65,535 bytes.
    #[error("topic is {0} bytes long, more than 65,535")]
    TooLong(usize),
    /// Contains U+0000.
    #[error("topic contains the null character U+0000")]
    NullCharacter,
    /// A topic name contains `+` or `#`.
    #[error("topic name contains a wildcard character ('+' or '#')")]
    WildcardInName,
    /// `#` is not alone in the last level of a filter.
    #[error("'#' must be alone in the last level of a topic filter")]
    InvalidMultiLevelWildcard,
    /// `+` does not occupy a whole level of a filter.
    #[error("'+' must occupy a whole level of a topic filter")]
    InvalidSingleLevelWildcard,
    /// A shared subscription's share name is empty or contains `+` or `#`.
    #[error("shared subscription share name is empty or contains '+' or '#'")]
    InvalidShareName,
    /// A shared subscription has no `/` and filter after its share name.
    #[error("shared subscription has no topic filter after its share name")]
    MissingSharedFilter,
}

fn check_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong(topic.len()));
    }
    if topic.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Checks a topic name (as in PUBLISH, a will, or a response topic).
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter (as in SUBSCRIBE or UNSUBSCRIBE). A shared
/// subscription filter passes when it is a well-formed filter as a whole;
/// [`parse_shared`] checks its share-specific rules.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::InvalidMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::InvalidSingleLevelWildcard);
        }
    }
    Ok(())
}

/// The parts of a shared subscription's topic filter `$share/{group}/{filter}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The share name: the group of sessions sharing the subscription.
    pub group: &'a str,
    /// The topic filter that publications are matched against.
    pub filter: &'a str,
}

/// Splits a shared subscription filter into its group and filter, checking
/// both. `Ok(None)` means `filter` is not a shared subscription (it does not
/// start with `$share/`).
pub fn parse_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARED_PREFIX) else {
        return Ok(None);
    };
    let (group, inner) = match rest.split_once('/') {
        Some(parts) => parts,
        None if rest.is_empty() => return Err(TopicError::InvalidShareName),
        None => return Err(TopicError::MissingSharedFilter),
    };
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(TopicError::InvalidShareName);
    }
    if inner.is_empty() {
        return Err(TopicError::MissingSharedFilter);
    }
    validate_topic_filter(inner)?;
    Ok(Some(SharedFilter {
        group,
        filter: inner,
    }))
}

/// The number of levels of a topic name or filter: one more than its `/`
/// separators (`a/b` has two, `/` has two empty ones). Servers bound it, so
/// that one topic cannot cost unbounded work in matching.
pub fn level_count(topic: &str) -> usize {
    topic.bytes().filter(|&b| b == b'/').count() + 1
}

/// Whether the topic filter `filter` matches the topic name `topic`.
///
/// Both are assumed valid ([`validate_topic_filter`], [`validate_topic_name`]).
/// `filter` is matched literally: for a shared subscription pass the
/// [`SharedFilter::filter`] part. Levels compare byte for byte, without
/// normalisation; `+` matches exactly one level (possibly empty), `#` the
/// parent level and any number of child levels; a filter starting with a
/// wildcard never matches a topic starting with `$`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_the_spec() {
        for ok in [
            "/",
            "a",
            "a/b",
            "/finance",
            "Accounts payable",
            "a//b",
            "$SYS/x",
        ] {
            assert_eq!(validate_topic_name(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullCharacter));
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(
            validate_topic_name(&long),
            Err(TopicError::TooLong(MAX_TOPIC_LEN + 1))
        );
        assert_eq!(validate_topic_name(&long[1..]), Ok(()));
    }

    #[test]
    fn topic_filters_follow_the_spec() {
        for ok in [
            "#",
            "+",
            "sport/tennis/#",
            "+/tennis/#",
            "sport/+/player1",
            "/+",
            "+/+",
            "//",
            "$SYS/#",
        ] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok:?}");
        }
        for (bad, error) in [
            ("sport/tennis#", TopicError::InvalidMultiLevelWildcard),
            (
                "sport/tennis/#/ranking",
                TopicError::InvalidMultiLevelWildcard,
            ),
            ("##", TopicError::InvalidMultiLevelWildcard),
            ("#/", TopicError::InvalidMultiLevelWildcard),
            ("sport+", TopicError::InvalidSingleLevelWildcard),
            ("+a/b", TopicError::InvalidSingleLevelWildcard),
            ("", TopicError::Empty),
            ("a\0", TopicError::NullCharacter),
        ] {
            assert_eq!(validate_topic_filter(bad), Err(error), "{bad:?}");
        }
    }

    #[test]
    fn matching_follows_the_spec_examples() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "anything/at/all", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("#", "$SYS/monitor/Clients", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("ACCOUNTS", "Accounts", false),
            ("/finance", "finance", false),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(matches(filter, topic), expected, "{filter:?} vs {topic:?}");
        }
    }

    #[test]
    fn shared_subscriptions_parse_and_validate() {
        assert_eq!(parse_shared("sport/#"), Ok(None));
        assert_eq!(parse_shared("$shared/x/y"), Ok(None));
        assert_eq!(
            parse_shared("$share/consumer1/sport/tennis/+"),
            Ok(Some(SharedFilter {
                group: "consumer1",
                filter: "sport/tennis/+"
            }))
        );
        assert_eq!(
            parse_shared("$share/consumer1//finance"),
            Ok(Some(SharedFilter {
                group: "consumer1",
                filter: "/finance"
            }))
        );
        assert_eq!(parse_shared("$share/"), Err(TopicError::InvalidShareName));
        assert_eq!(parse_shared("$share//a"), Err(TopicError::InvalidShareName));
        assert_eq!(
            parse_shared("$share/g+/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            parse_shared("$share/#/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            parse_shared("$share/g"),
            Err(TopicError::MissingSharedFilter)
        );
        assert_eq!(
            parse_shared("$share/g/"),
            Err(TopicError::MissingSharedFilter)
        );
        assert_eq!(
            parse_shared("$share/g/a/#/b"),
            Err(TopicError::InvalidMultiLevelWildcard)
        );
    }
}
