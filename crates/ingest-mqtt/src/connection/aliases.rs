//! Topic aliases from server to client (MQTT 5.0 section 3.3.2.3.4): a
//! topic delivered to a connection more than once gets an alias, sent with
//! the full topic once, then alone with an empty topic. On NB-IoT and LTE-M
//! links every byte of a repeated command topic costs the device.
//!
//! Per connection, within the client's Topic Alias Maximum (and at most
//! [`MAX_OUTBOUND_ALIASES`]), least recently used first out. A new
//! connection starts with none, so after a reconnect the full topic goes
//! out again with its alias.

use std::collections::{HashMap, HashSet, VecDeque};

/// The most aliases the server assigns on one connection, whatever the
/// client allows.
pub(super) const MAX_OUTBOUND_ALIASES: u16 = 64;

/// What to send for one delivery's topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// The topic, no alias.
    Plain,
    /// The topic and a new alias for it (replacing `evict`'s, if any).
    Establish(u16),
    /// An empty topic and the topic's alias.
    Use(u16),
}

#[derive(Debug, Default)]
pub(super) struct OutboundAliases {
    max: u16,
    /// Topics with an alias: the alias and when it was last used.
    by_topic: HashMap<String, (u16, u64)>,
    /// Topics delivered once, without an alias yet, oldest first.
    seen: VecDeque<String>,
    seen_set: HashSet<String>,
    tick: u64,
}

impl OutboundAliases {
    /// For a client that allows `client_max` aliases (0: none).
    pub(super) fn new(client_max: u16) -> Self {
        OutboundAliases {
            max: client_max.min(MAX_OUTBOUND_ALIASES),
            ..Default::default()
        }
    }

    /// What to send for `topic`. Nothing changes until [`Self::commit`].
    pub(super) fn plan(&self, topic: &str) -> Plan {
        if self.max == 0 || topic.is_empty() {
            return Plan::Plain;
        }
        if let Some((alias, _)) = self.by_topic.get(topic) {
            return Plan::Use(*alias);
        }
        if !self.seen_set.contains(topic) {
            return Plan::Plain;
        }
        if self.by_topic.len() < usize::from(self.max) {
            // Aliases are handed out in order and never given back, except
            // by reuse below: the next is one past those in use.
            return Plan::Establish(self.by_topic.len() as u16 + 1);
        }
        let lru = self
            .by_topic
            .values()
            .min_by_key(|(_, used)| *used)
            .map_or(1, |(alias, _)| *alias);
        Plan::Establish(lru)
    }

    /// Records that `plan` was sent for `topic`.
    pub(super) fn commit(&mut self, topic: &str, plan: Plan) {
        if self.max == 0 || topic.is_empty() {
            return;
        }
        self.tick += 1;
        match plan {
            Plan::Use(_) => {
                if let Some(entry) = self.by_topic.get_mut(topic) {
                    entry.1 = self.tick;
                }
            }
            Plan::Establish(alias) => {
                self.by_topic.retain(|_, (a, _)| *a != alias);
                self.seen_set.remove(topic);
                self.seen.retain(|t| t != topic);
                self.by_topic.insert(topic.to_owned(), (alias, self.tick));
            }
            Plan::Plain => {
                if self.seen_set.insert(topic.to_owned()) {
                    self.seen.push_back(topic.to_owned());
                    // Remember a bounded number of once-seen topics.
                    let keep = usize::from(self.max) * 4;
                    while self.seen.len() > keep {
                        if let Some(old) = self.seen.pop_front() {
                            self.seen_set.remove(&old);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(a: &mut OutboundAliases, topic: &str) -> Plan {
        let plan = a.plan(topic);
        a.commit(topic, plan);
        plan
    }

    #[test]
    fn a_repeated_topic_gets_an_alias_on_its_second_delivery() {
        let mut a = OutboundAliases::new(10);
        assert_eq!(send(&mut a, "c/1"), Plan::Plain);
        assert_eq!(send(&mut a, "c/1"), Plan::Establish(1));
        assert_eq!(send(&mut a, "c/1"), Plan::Use(1));
        assert_eq!(send(&mut a, "c/2"), Plan::Plain);
        assert_eq!(send(&mut a, "c/2"), Plan::Establish(2));
        assert_eq!(send(&mut a, "c/1"), Plan::Use(1));
        // A plan not committed (the packet was not sent) changes nothing.
        assert_eq!(a.plan("c/3"), Plan::Plain);
        assert_eq!(a.plan("c/3"), Plan::Plain);
    }

    #[test]
    fn a_client_that_allows_none_gets_none() {
        let mut a = OutboundAliases::new(0);
        for _ in 0..3 {
            assert_eq!(send(&mut a, "c/1"), Plan::Plain);
        }
    }

    #[test]
    fn the_least_recently_used_alias_is_reused_within_the_maximum() {
        let mut a = OutboundAliases::new(2);
        for t in ["a", "a", "b", "b"] {
            send(&mut a, t);
        }
        assert_eq!(send(&mut a, "a"), Plan::Use(1));
        // "b" is the least recently used: "c" takes its alias.
        send(&mut a, "c");
        assert_eq!(send(&mut a, "c"), Plan::Establish(2));
        assert_eq!(send(&mut a, "c"), Plan::Use(2));
        // "b" has no alias now: it is sent in full, then re-established.
        assert_eq!(send(&mut a, "b"), Plan::Plain);
        assert_eq!(send(&mut a, "b"), Plan::Establish(1));
        assert_eq!(send(&mut a, "a"), Plan::Plain);
        // The client's maximum is capped by the server's.
        assert_eq!(OutboundAliases::new(u16::MAX).max, MAX_OUTBOUND_ALIASES);
    }
}
