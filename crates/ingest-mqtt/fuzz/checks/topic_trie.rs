//! The subscription trie (`src/trie.rs`) and the ACL checks (`src/acl.rs`)
//! against the codec's topic rules and matching
//! (`tributary_mqtt_codec::topic`), shared by the fuzz target `topic_trie`
//! and `tests/fuzz_regressions.rs`.
//!
//! The input is a script of operations on one trie and a model of it (every
//! subscription in a map): insert, remove, match a topic, match a topic
//! made from a subscribed filter, and ACL checks. Strings are built from
//! tokens (`a`, `/`, `+`, `#`, `$`, `$share/`, ...) so that levels collide.
//!
//! Properties:
//! - the validators and `matches` never panic, `level_count` counts levels,
//!   a valid topic name is a valid filter and matches itself, and a topic
//!   made by filling in a filter's wildcards is matched by it;
//! - insert and remove report what the model says existed;
//! - the trie's matches for a valid topic name are exactly the model's
//!   subscriptions whose filter `matches` the topic: plain subscribers with
//!   their options, and each shared group with its members in order and
//!   the round-robin start the group's match count gives;
//! - `covers(grant, topic)` equals `matches(grant, topic)` for a valid grant
//!   filter and topic name, and `covers(grant, filter)` implies that every
//!   topic made from `filter` that it matches, the grant matches too;
//! - a device may publish exactly the topics `devices/{id}/#` matches, and
//!   only subscribe to filters whose topics all lie there; a shared
//!   subscription is judged by its inner filter.

use std::collections::BTreeMap;

use tributary_ingest_mqtt::fuzzing::{
    SubscriptionTrie, TrieMatches, application, covers, device, pack_options,
};
use tributary_mqtt_codec::topic::{
    level_count, matches, parse_shared, validate_topic_filter, validate_topic_name,
};

const TOKENS: [&str; 16] = [
    "a", "b", "/", "/", "+", "#", "$", "$share/", "devices/", "d1", "é", "\0", " ", "ab", "", "x/",
];

/// Reads one token string: a length byte, then up to 24 token bytes.
fn string(input: &mut &[u8]) -> String {
    let Some((&len, rest)) = input.split_first() else {
        return String::new();
    };
    let n = usize::from(len % 25).min(rest.len());
    let (tokens, rest) = rest.split_at(n);
    *input = rest;
    tokens
        .iter()
        .map(|&t| TOKENS[usize::from(t) % TOKENS.len()])
        .collect()
}

fn byte(input: &mut &[u8]) -> u8 {
    match input.split_first() {
        Some((&b, rest)) => {
            *input = rest;
            b
        }
        None => 0,
    }
}

/// A subscription in the model: (filter, share group).
type Key = (String, Option<String>);

#[derive(Default)]
struct Model {
    plain: BTreeMap<String, BTreeMap<u64, u8>>,
    /// Members in insertion order, and the number of matches so far.
    groups: BTreeMap<Key, (Vec<(u64, u8)>, usize)>,
}

impl Model {
    fn insert(&mut self, filter: &str, group: Option<&str>, session: u64, tag: u8) -> bool {
        let tag = pack_options(tag);
        match group {
            None => self
                .plain
                .entry(filter.to_owned())
                .or_default()
                .insert(session, tag)
                .is_some(),
            Some(g) => {
                let (members, _) = self
                    .groups
                    .entry((filter.to_owned(), Some(g.to_owned())))
                    .or_default();
                match members.iter_mut().find(|m| m.0 == session) {
                    Some(m) => {
                        m.1 = tag;
                        true
                    }
                    None => {
                        members.push((session, tag));
                        false
                    }
                }
            }
        }
    }

    fn remove(&mut self, filter: &str, group: Option<&str>, session: u64) -> bool {
        match group {
            None => {
                let Some(subs) = self.plain.get_mut(filter) else {
                    return false;
                };
                let removed = subs.remove(&session).is_some();
                if subs.is_empty() {
                    self.plain.remove(filter);
                }
                removed
            }
            Some(g) => {
                let key = (filter.to_owned(), Some(g.to_owned()));
                let Some((members, _)) = self.groups.get_mut(&key) else {
                    return false;
                };
                let before = members.len();
                members.retain(|m| m.0 != session);
                let removed = members.len() != before;
                if members.is_empty() {
                    self.groups.remove(&key);
                }
                removed
            }
        }
    }

    fn matches(&mut self, topic: &str) -> TrieMatches {
        let mut plain: Vec<(u64, u8)> = self
            .plain
            .iter()
            .filter(|(f, _)| matches(f, topic))
            .flat_map(|(_, subs)| subs.iter().map(|(&s, &t)| (s, t)))
            .collect();
        plain.sort_unstable();
        let mut shared: Vec<(Vec<(u64, u8)>, usize)> = self
            .groups
            .iter_mut()
            .filter(|((f, _), _)| matches(f, topic))
            .map(|(_, (members, count))| {
                let start = *count % members.len();
                *count += 1;
                (members.clone(), start)
            })
            .collect();
        shared.sort_unstable();
        TrieMatches { plain, shared }
    }

    fn filters(&self) -> Vec<&str> {
        let groups = self.groups.keys().map(|(f, _)| f.as_str());
        self.plain
            .keys()
            .map(String::as_str)
            .chain(groups)
            .collect()
    }
}

/// A topic name made from `filter` by filling in its wildcards, choices
/// taken from `seed`: `+` becomes one level, `#` nothing (with its `/`) or
/// one or two levels. Levels may start with `$`.
fn fill(filter: &str, seed: u8) -> String {
    const ONE: [&str; 4] = ["a", "", "$x", "zz"];
    const MANY: [&str; 5] = ["", "a", "a/b", "$y", "/"];
    let mut seed = u32::from(seed).wrapping_mul(2_654_435_761);
    let mut next = |n: usize| {
        seed = seed.rotate_left(5) ^ 0x9e37_79b9;
        (seed as usize) % n
    };
    let mut out = String::new();
    for (i, level) in filter.split('/').enumerate() {
        let part = match level {
            "+" => ONE[next(ONE.len())],
            "#" => match MANY[next(MANY.len())] {
                "" => {
                    // The parent level: `a/#` matches `a`.
                    if i > 0 {
                        return out;
                    }
                    "a"
                }
                m => m,
            },
            literal => literal,
        };
        if i > 0 {
            out.push('/');
        }
        out.push_str(part);
    }
    out
}

fn check_topic_rules(s: &str) {
    let name_ok = validate_topic_name(s).is_ok();
    let filter_ok = validate_topic_filter(s).is_ok();
    let _ = parse_shared(s);
    assert_eq!(level_count(s), s.split('/').count());
    if name_ok {
        assert!(filter_ok, "a topic name is a filter: {s:?}");
        assert!(matches(s, s), "a topic matches itself: {s:?}");
    }
}

/// Every topic `fill` makes from `filter`: the filter matches it unless a
/// wildcard filled the first level with a `$` topic.
fn topics_of(filter: &str, seed: u8) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..4u8 {
        let t = fill(filter, seed.wrapping_add(i.wrapping_mul(61)));
        if validate_topic_name(&t).is_err() {
            continue;
        }
        let wildcard_first = filter.starts_with('+') || filter.starts_with('#');
        if !(wildcard_first && t.starts_with('$')) {
            assert!(matches(filter, &t), "{filter:?} matches its filling {t:?}");
        }
        out.push(t);
    }
    out
}

pub(crate) fn check(data: &[u8]) {
    let mut input = data;
    let mut trie = SubscriptionTrie::default();
    let mut model = Model::default();
    let d1 = device("d1");
    let mut steps = 0;
    while !input.is_empty() && steps < 256 {
        steps += 1;
        let op = byte(&mut input);
        match op % 6 {
            // Insert or remove a subscription as the router does: a
            // `$share/{group}/{filter}` goes in under its group.
            0 | 1 => {
                let filter = string(&mut input);
                let session = u64::from(byte(&mut input) % 4);
                let tag = byte(&mut input);
                check_topic_rules(&filter);
                if validate_topic_filter(&filter).is_err() {
                    continue;
                }
                let (group, inner) = match parse_shared(&filter) {
                    Ok(Some(s)) => (Some(s.group), s.filter),
                    Ok(None) => (None, filter.as_str()),
                    Err(_) => continue,
                };
                if op.is_multiple_of(6) {
                    let existed = model.insert(inner, group, session, tag);
                    assert_eq!(
                        trie.insert(inner, group, session, tag),
                        existed,
                        "insert {filter:?}"
                    );
                } else {
                    let existed = model.remove(inner, group, session);
                    assert_eq!(
                        trie.remove(inner, group, session),
                        existed,
                        "remove {filter:?}"
                    );
                }
            }
            // Match a topic from the input, or one made from a filter.
            2 | 3 => {
                let topic = if op % 6 == 2 {
                    string(&mut input)
                } else {
                    let filters = model.filters();
                    if filters.is_empty() {
                        continue;
                    }
                    let filter = filters[usize::from(byte(&mut input)) % filters.len()].to_owned();
                    fill(&filter, byte(&mut input))
                };
                check_topic_rules(&topic);
                if validate_topic_name(&topic).is_err() {
                    continue;
                }
                let expected = model.matches(&topic);
                assert_eq!(trie.matches(&topic), expected, "matches for {topic:?}");
            }
            // ACL: a grant against a topic name or filter.
            4 => {
                let grant = string(&mut input);
                let filter = string(&mut input);
                let seed = byte(&mut input);
                check_topic_rules(&grant);
                check_topic_rules(&filter);
                let covered = covers(&grant, &filter);
                let grant_ok = validate_topic_filter(&grant).is_ok();
                if grant_ok && validate_topic_name(&filter).is_ok() {
                    assert_eq!(
                        covered,
                        matches(&grant, &filter),
                        "{grant:?} covers {filter:?}"
                    );
                }
                if grant_ok && covered && validate_topic_filter(&filter).is_ok() {
                    for t in topics_of(&filter, seed) {
                        if matches(&filter, &t) {
                            assert!(
                                matches(&grant, &t),
                                "{grant:?} covers {filter:?} but not its topic {t:?}"
                            );
                        }
                    }
                }
                let app = application(&[&grant], &[&grant]);
                if validate_topic_name(&filter).is_ok() {
                    assert_eq!(app.may_publish(&filter), covered);
                }
                check_subscribe(&app, &filter, |f| covers(&grant, f));
            }
            // ACL: what device `d1` may publish and subscribe to.
            _ => {
                let filter = string(&mut input);
                let seed = byte(&mut input);
                check_topic_rules(&filter);
                if validate_topic_name(&filter).is_ok() {
                    assert_eq!(
                        d1.may_publish(&filter),
                        matches("devices/d1/#", &filter),
                        "device d1 publishing to {filter:?}"
                    );
                }
                let inner = match parse_shared(&filter) {
                    Ok(Some(s)) => s.filter,
                    _ => filter.as_str(),
                };
                if validate_topic_filter(inner).is_ok() && d1.may_subscribe(&filter) {
                    for t in topics_of(inner, seed) {
                        if matches(inner, &t) {
                            assert!(
                                matches("devices/d1/#", &t),
                                "d1 may subscribe to {filter:?}, which matches {t:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// `may_subscribe` judges a shared subscription by its inner filter, and
/// refuses a malformed one.
fn check_subscribe(
    id: &tributary_ingest_mqtt::Identity,
    filter: &str,
    plain: impl Fn(&str) -> bool,
) {
    let allowed = id.may_subscribe(filter);
    match parse_shared(filter) {
        Ok(Some(shared)) => assert_eq!(allowed, plain(shared.filter), "{filter:?}"),
        Ok(None) => assert_eq!(allowed, plain(filter), "{filter:?}"),
        Err(_) => assert!(!allowed, "a malformed shared subscription {filter:?}"),
    }
}
