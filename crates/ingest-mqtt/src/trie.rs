//! The subscription tree of one tenant: topic filters by level, with the
//! sessions subscribed at each filter and the shared-subscription groups.
//!
//! Matching a topic walks the levels once, following the literal child,
//! the `+` child and the `#` child at each level, so its cost depends on the
//! topic's depth and the number of matching filters, not on the number of
//! subscriptions.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;

use tributary_mqtt_codec::QoS;

use crate::session::SessionId;

/// What a session asked for with one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubOptions {
    /// Maximum QoS of deliveries.
    pub(crate) qos: QoS,
    /// Do not deliver the session's own publications to it.
    pub(crate) no_local: bool,
    /// Keep the RETAIN flag of forwarded messages.
    pub(crate) retain_as_published: bool,
    /// The subscription identifier to send with deliveries (5.0).
    pub(crate) id: Option<NonZeroU32>,
}

/// One member of a shared subscription group, or a plain subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subscriber {
    pub(crate) session: SessionId,
    pub(crate) options: SubOptions,
}

/// A shared subscription group at one filter: deliveries go round-robin.
#[derive(Debug, Default)]
struct Group {
    members: Vec<Subscriber>,
    next: usize,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    subscribers: HashMap<SessionId, SubOptions>,
    groups: BTreeMap<Box<str>, Group>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }
}

/// What matched a topic: plain subscriptions, and for each shared group the
/// members to choose one from.
#[derive(Debug, Default)]
pub(crate) struct Matches {
    pub(crate) plain: Vec<Subscriber>,
    /// `(members, round-robin start)` of each matching group; the router
    /// picks the member.
    pub(crate) shared: Vec<(Vec<Subscriber>, usize)>,
}

/// The subscription tree of one tenant.
#[derive(Debug, Default)]
pub(crate) struct Trie {
    root: Node,
    count: usize,
}

impl Trie {
    /// Adds or replaces a subscription. `group` is the share name of a
    /// shared subscription. Returns whether it already existed.
    pub(crate) fn insert(
        &mut self,
        filter: &str,
        group: Option<&str>,
        subscriber: Subscriber,
    ) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        let existed = match group {
            None => node
                .subscribers
                .insert(subscriber.session, subscriber.options)
                .is_some(),
            Some(group) => {
                let g = node.groups.entry(group.into()).or_default();
                match g
                    .members
                    .iter_mut()
                    .find(|m| m.session == subscriber.session)
                {
                    Some(m) => {
                        m.options = subscriber.options;
                        true
                    }
                    None => {
                        g.members.push(subscriber);
                        false
                    }
                }
            }
        };
        if !existed {
            self.count += 1;
        }
        existed
    }

    /// Removes a subscription; returns whether it existed. Empty branches
    /// are pruned, so the tree never outgrows its subscriptions.
    pub(crate) fn remove(&mut self, filter: &str, group: Option<&str>, session: SessionId) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_at(&mut self.root, &levels, group, session);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Number of subscriptions held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The subscriptions matching `topic` (a valid topic name). Advances the
    /// round-robin cursor of every matching shared group.
    pub(crate) fn matches(&mut self, topic: &str) -> Matches {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        let mut out = Matches::default();
        collect(&mut self.root, &levels, 0, dollar, &mut out);
        out
    }
}

fn remove_at(node: &mut Node, levels: &[&str], group: Option<&str>, session: SessionId) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return match group {
            None => node.subscribers.remove(&session).is_some(),
            Some(group) => {
                let Some(g) = node.groups.get_mut(group) else {
                    return false;
                };
                let before = g.members.len();
                g.members.retain(|m| m.session != session);
                let removed = g.members.len() != before;
                if g.members.is_empty() {
                    node.groups.remove(group);
                }
                removed
            }
        };
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove_at(child, rest, group, session);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

fn take(node: &mut Node, out: &mut Matches) {
    out.plain.extend(
        node.subscribers
            .iter()
            .map(|(&session, &options)| Subscriber { session, options }),
    );
    for group in node.groups.values_mut() {
        if group.members.is_empty() {
            continue;
        }
        let start = group.next % group.members.len();
        group.next = group.next.wrapping_add(1);
        out.shared.push((group.members.clone(), start));
    }
}

fn collect(node: &mut Node, levels: &[&str], depth: usize, dollar: bool, out: &mut Matches) {
    let wildcards_allowed = !(depth == 0 && dollar);
    let Some(level) = levels.get(depth) else {
        take(node, out);
        // `a/#` also matches `a`.
        if let Some(hash) = node.children.get_mut("#") {
            take(hash, out);
        }
        return;
    };
    if let Some(child) = node.children.get_mut(*level) {
        collect(child, levels, depth + 1, dollar, out);
    }
    if wildcards_allowed {
        if let Some(child) = node.children.get_mut("+") {
            collect(child, levels, depth + 1, dollar, out);
        }
        if let Some(hash) = node.children.get_mut("#") {
            take(hash, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(session: SessionId) -> Subscriber {
        Subscriber {
            session,
            options: SubOptions {
                qos: QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: false,
                id: None,
            },
        }
    }

    fn plain(t: &mut Trie, topic: &str) -> Vec<SessionId> {
        let mut v: Vec<_> = t.matches(topic).plain.iter().map(|s| s.session).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn wildcards_match_like_the_spec_says() {
        let mut t = Trie::default();
        t.insert("a/b", None, sub(1));
        t.insert("a/+", None, sub(2));
        t.insert("a/#", None, sub(3));
        t.insert("#", None, sub(4));
        t.insert("+/+", None, sub(5));
        assert_eq!(plain(&mut t, "a/b"), vec![1, 2, 3, 4, 5]);
        assert_eq!(plain(&mut t, "a"), vec![3, 4]);
        assert_eq!(plain(&mut t, "a/c/d"), vec![3, 4]);
        assert_eq!(plain(&mut t, "$SYS/x"), Vec::<SessionId>::new());
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn removal_prunes_and_reports() {
        let mut t = Trie::default();
        assert!(!t.insert("a/b/c", None, sub(1)));
        assert!(t.insert("a/b/c", None, sub(1)), "second insert replaces");
        assert!(t.remove("a/b/c", None, 1));
        assert!(!t.remove("a/b/c", None, 1));
        assert!(t.root.is_empty(), "empty branches are pruned");
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn shared_groups_rotate() {
        let mut t = Trie::default();
        t.insert("jobs/+", Some("g"), sub(1));
        t.insert("jobs/+", Some("g"), sub(2));
        let starts: Vec<usize> = (0..4).map(|_| t.matches("jobs/x").shared[0].1).collect();
        assert_eq!(starts, vec![0, 1, 0, 1]);
        assert!(t.matches("jobs/x").plain.is_empty());
        assert!(t.remove("jobs/+", Some("g"), 1));
        assert_eq!(t.matches("jobs/x").shared[0].0.len(), 1);
    }
}
