//! Memberships the consumer has read as stored, kept in memory for a few minutes: PostHog
//! names a user's groups on every event, so a batch would otherwise read most of its
//! memberships again.
//!
//! A membership seen stored stays stored, with its group's profile, as long as its member is
//! not erased: evtrack deletes a membership only with its member's erasure (whose events are
//! then left out before any membership is looked at, for as long as the id is suppressed) or
//! its project's purge, and a group's profile only once no one outside an erasure is in it.
//! What can still make a kept membership stale: an erased id coming back once its suppression
//! ends (`SUPPRESSION_DAYS`), a group deleted by cleanup while a new member's batch committed
//! (read by the next batch before cleanup's delete committed), rows deleted by hand. So no
//! membership counts as known more than `KEPT_FOR` after it was read, however often it is
//! asked for: then it is read again, and what is missing is written again.

use crate::event::GroupRef;
use crate::ids::as_compared;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Memberships held per generation: two generations take about 20 MB (2^20 slots of 9 bytes
/// each).
const PER_GENERATION: usize = 500_000;
/// How long a generation takes memberships in, before it becomes the previous one.
const GENERATION_AGE: Duration = Duration::from_secs(300);
/// How long a generation's memberships count as known after it began taking them in: so none
/// is known more than 10 minutes after it was read (less when a generation fills first).
const KEPT_FOR: Duration = Duration::from_secs(2 * 300);

/// A bounded set of memberships (project, group, member), by a keyed 64-bit hash of each: the
/// key is random per process, so that no one can choose ids that collide with another's. When
/// the current generation is full or `GENERATION_AGE` old it becomes the previous one, and the
/// previous one is dropped; a generation `KEPT_FOR` old is dropped in any case (after an idle
/// spell). Times are the wall clock's, which a Lambda finds moved on when it thaws; a clock
/// that goes back counts as late, dropping what is held. Shared by a store's clones.
#[derive(Default)]
pub(super) struct KnownMembers {
    hasher: RandomState,
    generations: Mutex<Generations>,
}

struct Generations {
    current: HashSet<u64>,
    current_since: SystemTime,
    previous: HashSet<u64>,
    previous_since: SystemTime,
}

impl Default for Generations {
    fn default() -> Self {
        Self::new(SystemTime::now())
    }
}

/// A membership: (project, group, member).
pub(super) type Membership<'a> = (u64, GroupRef<'a>, &'a str);

impl KnownMembers {
    pub(super) fn key(&self, (project, group, member): Membership<'_>) -> u64 {
        self.hasher.hash_one((project, as_compared(group.kind), as_compared(group.id), as_compared(member)))
    }

    /// Whether each of `keys` is known, in order.
    pub(super) fn known(&self, keys: &[u64]) -> Vec<bool> {
        let mut generations = self.generations.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        generations.age(SystemTime::now());
        keys.iter().map(|key| generations.contains(*key)).collect()
    }

    /// Keeps `keys` as known (after the transaction that read them stored has committed).
    pub(super) fn remember(&self, keys: impl IntoIterator<Item = u64>) {
        let mut generations = self.generations.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = SystemTime::now();
        generations.age(now);
        for key in keys {
            generations.insert(key, now);
        }
    }
}

impl Generations {
    fn new(now: SystemTime) -> Self {
        Self { current: HashSet::new(), current_since: now, previous: HashSet::new(), previous_since: now }
    }

    fn contains(&self, key: u64) -> bool {
        self.current.contains(&key) || self.previous.contains(&key)
    }

    fn insert(&mut self, key: u64, now: SystemTime) {
        if self.current.len() >= PER_GENERATION {
            self.next_generation(now);
        }
        self.current.insert(key);
    }

    /// Starts the next generation once the current one is `GENERATION_AGE` old, and drops the
    /// previous one once it began `KEPT_FOR` ago (at once after an idle spell).
    fn age(&mut self, now: SystemTime) {
        let age = |since: SystemTime| now.duration_since(since).unwrap_or(Duration::MAX);
        if age(self.current_since) >= GENERATION_AGE {
            self.next_generation(now);
        }
        if age(self.previous_since) >= KEPT_FOR {
            self.previous.clear();
        }
    }

    fn next_generation(&mut self, now: SystemTime) {
        self.previous = std::mem::take(&mut self.current);
        self.previous_since = std::mem::replace(&mut self.current_since, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_membership_is_known_as_sql_compares_ids_and_only_in_its_project() {
        let known = KnownMembers::default();
        let group = |kind, id| GroupRef { kind, id };
        known.remember([known.key((1, group("company", "acme"), "alice"))]);
        let asked = [
            (1, group("company ", "acme "), "alice  "),
            (2, group("company", "acme"), "alice"),
            (1, group("company", "acme"), "bob"),
            (1, group("company", "Acme"), "alice"),
            (1, group("project", "acme"), "alice"),
            (1, group("", "acme"), "alice"),
        ];
        let keys: Vec<u64> = asked.iter().map(|membership| known.key(*membership)).collect();
        assert_eq!(known.known(&keys), [true, false, false, false, false, false]);
    }

    /// Generations begun at `start`, holding 1 remembered then, after `ages` (minutes) asked.
    fn known_after(ages: &[u64]) -> Vec<bool> {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut generations = Generations::new(start);
        generations.insert(1, start);
        let mut known = Vec::new();
        for minutes in ages {
            generations.age(start + Duration::from_secs(minutes * 60));
            known.push(generations.contains(1));
        }
        known
    }

    #[test]
    fn a_membership_is_known_for_ten_minutes_however_often_or_seldom_it_is_asked_for() {
        assert_eq!(known_after(&[4, 5, 9, 10]), [true, true, true, false], "asked often");
        assert_eq!(known_after(&[9, 10]), [true, false], "asked once in the second generation");
        assert_eq!(known_after(&[60]), [false], "asked after an idle hour");
        assert_eq!(known_after(&[4, 60]), [true, false], "an idle hour in the first generation");
    }

    #[test]
    fn a_clock_that_goes_back_drops_what_is_held() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut generations = Generations::new(start);
        generations.insert(1, start);
        generations.age(start - Duration::from_secs(1));
        assert!(!generations.contains(1));
    }

    #[test]
    fn a_full_generation_makes_room_by_dropping_the_oldest() {
        let now = SystemTime::now();
        let mut generations = Generations::new(now);
        for key in 0..2 * PER_GENERATION as u64 {
            generations.insert(key, now);
        }
        assert!(generations.contains(0) && generations.contains(2 * PER_GENERATION as u64 - 1));
        generations.insert(u64::MAX, now);
        assert!(!generations.contains(0), "the first generation dropped");
        assert!(generations.contains(PER_GENERATION as u64) && generations.contains(u64::MAX));
    }
}
