//! Memberships the consumer has read as stored, kept in memory: PostHog names a user's
//! groups on every event, so a batch would otherwise read most of its memberships again.
//!
//! A membership seen stored stays stored, and so does its group's profile: evtrack deletes a
//! membership only with its member's erasure (whose events are then left out before any
//! membership is looked at) or its project's purge (likewise), and a group's profile only once
//! no one outside an erasure is in it. Only memberships read as stored are kept, not those a
//! batch writes: a group read as stored may be deleted by cleanup before the new membership
//! commits, and the next batch naming it must read it again to make it again.

use crate::ids::as_compared;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

/// Memberships held per generation: two generations take about 20 MB (2^20 slots of 9 bytes
/// each).
const PER_GENERATION: usize = 500_000;

/// A bounded set of memberships (project, group, member), by a keyed 64-bit hash of each: the
/// key is random per process, so that no one can choose ids that collide with another's. When
/// the current generation is full it becomes the previous one and the oldest is dropped; a
/// membership found in the previous one moves to the current. Shared by a store's clones.
#[derive(Default)]
pub(super) struct KnownMembers {
    hasher: RandomState,
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashSet<u64>,
    previous: HashSet<u64>,
}

/// A membership: (project, group, member).
pub(super) type Membership<'a> = (u64, &'a str, &'a str);

impl KnownMembers {
    pub(super) fn key(&self, (project, group, member): Membership<'_>) -> u64 {
        self.hasher.hash_one((project, as_compared(group), as_compared(member)))
    }

    /// Whether each of `keys` is known, in order.
    pub(super) fn known(&self, keys: &[u64]) -> Vec<bool> {
        let mut generations = self.generations.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.iter().map(|key| generations.contains(*key)).collect()
    }

    /// Keeps `keys` as known (after the transaction that read them stored has committed).
    pub(super) fn remember(&self, keys: impl IntoIterator<Item = u64>) {
        let mut generations = self.generations.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for key in keys {
            generations.insert(key);
        }
    }
}

impl Generations {
    fn contains(&mut self, key: u64) -> bool {
        if self.current.contains(&key) {
            return true;
        }
        let found = self.previous.remove(&key);
        if found {
            self.insert(key);
        }
        found
    }

    fn insert(&mut self, key: u64) {
        if self.current.len() >= PER_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_membership_is_known_as_sql_compares_ids_and_only_in_its_project() {
        let known = KnownMembers::default();
        known.remember([known.key((1, "acme", "alice"))]);
        let asked = [(1, "acme ", "alice  "), (2, "acme", "alice"), (1, "acme", "bob"), (1, "Acme", "alice")];
        let keys: Vec<u64> = asked.iter().map(|membership| known.key(*membership)).collect();
        assert_eq!(known.known(&keys), [true, false, false, false]);
    }

    #[test]
    fn the_oldest_generation_is_dropped_and_what_is_asked_for_kept() {
        let mut generations = Generations::default();
        for key in 0..PER_GENERATION as u64 {
            generations.insert(key);
        }
        // Full: the next one starts a new generation, and 0 is asked for from the old one.
        generations.insert(u64::MAX);
        assert!(generations.contains(0));
        for key in PER_GENERATION as u64..2 * PER_GENERATION as u64 {
            generations.insert(key);
        }
        assert!(generations.contains(0), "asked for in the last generation, so moved along");
        assert!(!generations.contains(1), "never asked for again: dropped with its generation");
        assert!(generations.current.len() + generations.previous.len() <= 2 * PER_GENERATION);
    }
}
