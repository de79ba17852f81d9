//! The subscription tree of one tenant: topic filters by level, with the
//! sessions subscribed at each filter and the shared-subscription groups.
//!
//! Matching a topic walks the levels once, following the literal child,
//! the `+` child and the `#` child at each level, so its cost depends on the
//! topic's depth and the number of matching filters, not on the number of
//! subscriptions.
//!
//! Nothing here recurses on a client's input: matching walks an explicit
//! stack and removal a loop, so a topic's depth costs heap, not stack.
//! Callers still bound the depth ([`crate::MqttConfig::max_topic_levels`]),
//! which bounds the work of one match and the depth of the tree (and so of
//! its recursive drop).

use std::cell::Cell;
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
    /// The round-robin cursor; a `Cell` so that matching reads the tree.
    next: Cell<usize>,
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
        let mut node = &mut self.root;
        for level in &levels {
            match node.children.get_mut(*level) {
                Some(child) => node = child,
                None => return false,
            }
        }
        let removed = match group {
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
        if !removed {
            return false;
        }
        self.count -= 1;
        if node.is_empty() {
            self.prune(&levels);
        }
        true
    }

    /// Cuts the branch that ends in the (empty) node at `levels`, from the
    /// deepest node on the path that has to stay: the root, or a node with
    /// subscriptions or another child.
    fn prune(&mut self, levels: &[&str]) {
        let mut keep = 0;
        let mut node = &self.root;
        for (depth, level) in levels.iter().enumerate() {
            if depth == 0
                || !node.subscribers.is_empty()
                || !node.groups.is_empty()
                || node.children.len() > 1
            {
                keep = depth;
            }
            match node.children.get(*level) {
                Some(child) => node = child,
                None => return,
            }
        }
        let mut node = &mut self.root;
        for level in &levels[..keep] {
            match node.children.get_mut(*level) {
                Some(child) => node = child,
                None => return,
            }
        }
        node.children.remove(levels[keep]);
    }

    /// Number of subscriptions held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The subscriptions matching `topic` (a valid topic name). Advances the
    /// round-robin cursor of every matching shared group.
    pub(crate) fn matches(&self, topic: &str) -> Matches {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        let mut out = Matches::default();
        // Each node is reached by one path only, so it is pushed at most once.
        let mut stack: Vec<(&Node, usize)> = vec![(&self.root, 0)];
        while let Some((node, depth)) = stack.pop() {
            let Some(level) = levels.get(depth) else {
                take(node, &mut out);
                // `a/#` also matches `a`.
                if let Some(hash) = node.children.get("#") {
                    take(hash, &mut out);
                }
                continue;
            };
            if let Some(child) = node.children.get(*level) {
                stack.push((child, depth + 1));
            }
            // Wildcards never match a first level starting with `$`.
            if !(depth == 0 && dollar) {
                if let Some(child) = node.children.get("+") {
                    stack.push((child, depth + 1));
                }
                if let Some(hash) = node.children.get("#") {
                    take(hash, &mut out);
                }
            }
        }
        out
    }
}

fn take(node: &Node, out: &mut Matches) {
    out.plain.extend(
        node.subscribers
            .iter()
            .map(|(&session, &options)| Subscriber { session, options }),
    );
    for group in node.groups.values() {
        if group.members.is_empty() {
            continue;
        }
        let start = group.next.get() % group.members.len();
        group.next.set(group.next.get().wrapping_add(1));
        out.shared.push((group.members.clone(), start));
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

    fn plain(t: &Trie, topic: &str) -> Vec<SessionId> {
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
        assert_eq!(plain(&t, "a/b"), vec![1, 2, 3, 4, 5]);
        assert_eq!(plain(&t, "a"), vec![3, 4]);
        assert_eq!(plain(&t, "a/c/d"), vec![3, 4]);
        assert_eq!(plain(&t, "$SYS/x"), Vec::<SessionId>::new());
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

    #[test]
    fn deep_topics_cost_heap_not_stack() {
        // Far deeper than any limit allows: nothing here may recurse.
        let deep = "a/".repeat(100_000) + "b";
        let mut t = Trie::default();
        t.insert("a/+/#", None, sub(1));
        t.insert("#", None, sub(2));
        assert_eq!(plain(&t, &deep), vec![1, 2]);
        let filter = "+/".repeat(50) + "b";
        t.insert(&filter, None, sub(3));
        assert!(t.remove(&filter, None, 3));
        assert!(!t.remove(&deep, None, 3));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn pruning_keeps_branches_still_in_use() {
        let mut t = Trie::default();
        t.insert("a/b/c/d", None, sub(1));
        t.insert("a/b", None, sub(2));
        t.insert("a/x/y", None, sub(3));
        assert!(t.remove("a/b/c/d", None, 1));
        assert_eq!(plain(&t, "a/b"), vec![2]);
        assert_eq!(plain(&t, "a/x/y"), vec![3]);
        assert!(t.root.children["a"].children["b"].children.is_empty());
        assert!(t.remove("a/b", None, 2));
        assert!(t.remove("a/x/y", None, 3));
        assert!(t.root.is_empty());
    }
}
