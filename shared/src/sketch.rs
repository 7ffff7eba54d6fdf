//! Sets of users as the read side counts them: exact (each user's 64-bit hash) while an hour
//! holds few users, a HyperLogLog sketch past that. The rollups keep one per (project, hour,
//! type); any range of hours is their union, so unique users over 90 days read 90 days of
//! sketches instead of 90 days of events.
//!
//! The sketch has 2^12 one-byte registers (4 KiB) and is read with Ertl's improved estimator
//! ("New cardinality estimation algorithms for HyperLogLog sketches", 2017), which needs no
//! bias tables and holds from one user to billions: relative standard error 1.04/√4096 ≈ 1.6 %.
//! A union of exact sets stays exact; one sketch in it makes the count an estimate.

use std::collections::HashSet;
use xxhash_rust::xxh3::xxh3_64;

const PRECISION: u32 = 12;
pub const REGISTERS: usize = 1 << PRECISION;
/// The sketch's relative standard error: 1.04 / √REGISTERS.
pub const RELATIVE_STANDARD_ERROR: f64 = 1.04 / 64.0;
/// Stored sets keep hashes up to this many users (as large as the registers).
pub const STORED_EXACT_LIMIT: usize = REGISTERS / 8;
/// Rank bits after the register index; registers hold 0 (empty) to Q + 1.
const Q: usize = 64 - PRECISION as usize;

const EXACT_TAG: u8 = 0;
const SKETCH_TAG: u8 = 1;

/// The hash a user is counted by (xxh3, stable across versions and machines: it is stored).
/// Trailing spaces are left out, as the database's PAD SPACE collation compares ids: `"bob"`
/// and `"bob "` are one user in `COUNT(DISTINCT …)` and here alike.
pub fn user_hash(user: &str) -> u64 {
    xxh3_64(user.trim_end_matches(' ').as_bytes())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSet {
    Exact(HashSet<u64>),
    Sketch(Box<[u8; REGISTERS]>),
}

impl Default for UserSet {
    fn default() -> Self {
        UserSet::Exact(HashSet::new())
    }
}

/// How many users a set holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UserCount {
    pub users: u64,
    /// `false`: a HyperLogLog estimate (see `RELATIVE_STANDARD_ERROR`).
    pub exact: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("a stored user set is malformed ({0} bytes)")]
pub struct Malformed(usize);

impl UserSet {
    pub fn insert(&mut self, hash: u64) {
        match self {
            UserSet::Exact(hashes) => {
                hashes.insert(hash);
            }
            UserSet::Sketch(registers) => add(registers, hash),
        }
    }

    /// Adds every user of `other`.
    pub fn merge(&mut self, other: &UserSet) {
        match (&mut *self, other) {
            (UserSet::Exact(mine), UserSet::Exact(theirs)) => mine.extend(theirs),
            (UserSet::Sketch(mine), UserSet::Exact(theirs)) => theirs.iter().for_each(|&hash| add(mine, hash)),
            (UserSet::Sketch(mine), UserSet::Sketch(theirs)) => {
                mine.iter_mut().zip(theirs.iter()).for_each(|(mine, theirs)| *mine = (*mine).max(*theirs));
            }
            (UserSet::Exact(mine), UserSet::Sketch(theirs)) => {
                let mut registers = theirs.clone();
                mine.iter().for_each(|&hash| add(&mut registers, hash));
                *self = UserSet::Sketch(registers);
            }
        }
    }

    pub fn count(&self) -> UserCount {
        match self {
            UserSet::Exact(hashes) => UserCount { users: hashes.len() as u64, exact: true },
            UserSet::Sketch(registers) => UserCount { users: estimate(registers).round() as u64, exact: false },
        }
    }

    /// How many hashes an exact set holds (0 for a sketch).
    fn exact_len(&self) -> usize {
        match self {
            UserSet::Exact(hashes) => hashes.len(),
            UserSet::Sketch(_) => 0,
        }
    }

    /// The stored form: a tag, then the sorted hashes (little-endian) or the registers. Sets
    /// larger than `STORED_EXACT_LIMIT` are stored as sketches.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            UserSet::Exact(hashes) if hashes.len() <= STORED_EXACT_LIMIT => {
                let mut sorted: Vec<u64> = hashes.iter().copied().collect();
                sorted.sort_unstable();
                let mut bytes = Vec::with_capacity(1 + 8 * sorted.len());
                bytes.push(EXACT_TAG);
                sorted.iter().for_each(|hash| bytes.extend_from_slice(&hash.to_le_bytes()));
                bytes
            }
            UserSet::Exact(hashes) => UserSet::Sketch(registers_of(hashes)).to_bytes(),
            UserSet::Sketch(registers) => {
                let mut bytes = Vec::with_capacity(1 + REGISTERS);
                bytes.push(SKETCH_TAG);
                bytes.extend_from_slice(&registers[..]);
                bytes
            }
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<UserSet, Malformed> {
        let malformed = || Malformed(bytes.len());
        match bytes.split_first() {
            Some((&EXACT_TAG, hashes)) if hashes.len() % 8 == 0 && hashes.len() <= 8 * STORED_EXACT_LIMIT => {
                Ok(UserSet::Exact(
                    hashes
                        .chunks_exact(8)
                        .map(|chunk| u64::from_le_bytes(chunk.try_into().unwrap_or_default()))
                        .collect(),
                ))
            }
            Some((&SKETCH_TAG, registers)) => {
                let registers: [u8; REGISTERS] = registers.try_into().map_err(|_| malformed())?;
                if registers.iter().any(|&rank| usize::from(rank) > Q + 1) {
                    return Err(malformed());
                }
                Ok(UserSet::Sketch(Box::new(registers)))
            }
            _ => Err(malformed()),
        }
    }
}

/// How many exact hashes the sets of one series hold at most (`UserSets`): about 20 MB, and
/// as much again for the map that slides a dau/wau/mau window over them.
pub const EXACT_HASHES_HELD: usize = 1 << 20;

/// Sets of users held together (one per bucket of an answer), with at most `budget` exact
/// hashes among them all: past it, the largest exact sets become sketches (4 KiB each, and
/// their counts estimates). So a question over thousands of buckets, each the union of many
/// hours' exact sets, holds a bounded amount of memory.
pub struct UserSets {
    sets: Vec<UserSet>,
    exact_hashes: usize,
    budget: usize,
}

impl UserSets {
    pub fn new(len: usize, budget: usize) -> Self {
        Self { sets: vec![UserSet::default(); len], exact_hashes: 0, budget }
    }

    pub fn insert(&mut self, index: usize, hash: u64) {
        self.change(index, |set| set.insert(hash));
    }

    /// Adds every user of `other` to the set at `index`.
    pub fn merge(&mut self, index: usize, other: &UserSet) {
        self.change(index, |set| set.merge(other));
    }

    pub fn into_sets(self) -> Vec<UserSet> {
        self.sets
    }

    fn change(&mut self, index: usize, change: impl FnOnce(&mut UserSet)) {
        let set = &mut self.sets[index];
        let before = set.exact_len();
        change(set);
        self.exact_hashes = self.exact_hashes - before + set.exact_len();
        while self.exact_hashes > self.budget {
            let Some(largest) = self.sets.iter_mut().max_by_key(|set| set.exact_len()) else { break };
            self.exact_hashes -= largest.exact_len();
            if let UserSet::Exact(hashes) = largest {
                *largest = UserSet::Sketch(registers_of(hashes));
            }
        }
    }
}

fn registers_of(hashes: &HashSet<u64>) -> Box<[u8; REGISTERS]> {
    let mut registers = Box::new([0u8; REGISTERS]);
    hashes.iter().for_each(|&hash| add(&mut registers, hash));
    registers
}

/// The first PRECISION bits pick the register; it keeps the largest rank seen (the position
/// of the first 1 in the remaining bits, Q + 1 when they are all 0).
fn add(registers: &mut [u8; REGISTERS], hash: u64) {
    let index = (hash >> Q) as usize;
    let rest = hash << PRECISION;
    let rank = (rest.leading_zeros() as usize).min(Q) + 1;
    registers[index] = registers[index].max(rank as u8);
}

/// Ertl's improved raw estimator (Algorithm 6 of the paper).
fn estimate(registers: &[u8; REGISTERS]) -> f64 {
    let mut histogram = [0u32; Q + 2];
    registers.iter().for_each(|&rank| histogram[usize::from(rank)] += 1);
    let m = REGISTERS as f64;
    let mut z = m * tau((m - f64::from(histogram[Q + 1])) / m);
    for k in (1..=Q).rev() {
        z = 0.5 * (z + f64::from(histogram[k]));
    }
    z += m * sigma(f64::from(histogram[0]) / m);
    m * m / (2.0 * std::f64::consts::LN_2 * z)
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut y, mut z) = (1.0, x);
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut y, mut z) = (1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn sketch_of(users: u64, seed: u64) -> UserSet {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut set = UserSet::Sketch(Box::new([0; REGISTERS]));
        for _ in 0..users {
            set.insert(user_hash(&format!("user-{}", rng.random::<u64>())));
        }
        set
    }

    #[test]
    fn estimates_stay_within_four_standard_errors_from_one_user_to_a_million() {
        // Fixed seeds: the same sets every run.
        for (users, seed) in [(1, 1), (10, 2), (100, 3), (1_000, 4), (10_000, 5), (100_000, 6), (1_000_000, 7)] {
            let estimate = sketch_of(users, seed).count();
            assert!(!estimate.exact);
            let error = (estimate.users as f64 - users as f64).abs() / users as f64;
            let bound = 4.0 * RELATIVE_STANDARD_ERROR;
            assert!(error <= bound.max(1.0 / users as f64), "{users} users estimated as {}", estimate.users);
        }
    }

    #[test]
    fn unions_of_exact_sets_stay_exact_and_a_sketch_makes_an_estimate() {
        let mut union = UserSet::default();
        for hour in 0..10u64 {
            let mut set = UserSet::default();
            (0..300).for_each(|user| set.insert(user_hash(&format!("u{}", hour * 100 + user))));
            union.merge(&set);
        }
        assert_eq!(union.count(), UserCount { users: 1_200, exact: true });
        union.merge(&sketch_of(1, 9));
        let estimate = union.count();
        assert!(!estimate.exact && (1_150..=1_250).contains(&estimate.users), "{estimate:?}");
    }

    #[test]
    fn sets_held_together_keep_to_their_budget_of_exact_hashes_by_sketching_the_largest() {
        let mut sets = UserSets::new(4, 1_000);
        let users = |bucket: usize, count: usize| (0..count).map(move |user| user_hash(&format!("{bucket}-{user}")));
        users(0, 100).for_each(|hash| sets.insert(0, hash));
        users(1, 400).for_each(|hash| sets.insert(1, hash));
        let mut hour = UserSet::default();
        users(2, 450).for_each(|hash| hour.insert(hash));
        sets.merge(2, &hour);
        assert_eq!(sets.exact_hashes, 950, "within the budget: all exact");
        users(3, 300).for_each(|hash| sets.insert(3, hash));
        assert!(sets.exact_hashes <= 1_000, "{}", sets.exact_hashes);
        let counts: Vec<UserCount> = sets.into_sets().iter().map(UserSet::count).collect();
        assert_eq!(counts[0], UserCount { users: 100, exact: true });
        assert!(!counts[2].exact, "the largest set became a sketch");
        for (count, users) in counts.iter().zip([100, 400, 450, 300]) {
            let error = (count.users as f64 - users as f64).abs() / users as f64;
            assert!(error <= 4.0 * RELATIVE_STANDARD_ERROR, "{count:?} for {users}");
        }
    }

    #[test]
    fn stored_sets_read_back_the_same() {
        let mut small = UserSet::default();
        (0..STORED_EXACT_LIMIT).for_each(|user| small.insert(user_hash(&user.to_string())));
        assert_eq!(UserSet::from_bytes(&small.to_bytes()).expect("exact"), small);
        let mut large = small.clone();
        large.insert(user_hash("one more"));
        let stored = UserSet::from_bytes(&large.to_bytes()).expect("sketch");
        assert!(matches!(stored, UserSet::Sketch(_)));
        assert_eq!(stored.to_bytes().len(), 1 + REGISTERS);
        assert!(UserSet::from_bytes(&[]).is_err());
        assert!(UserSet::from_bytes(&[EXACT_TAG, 1, 2]).is_err());
        assert!(UserSet::from_bytes(&[SKETCH_TAG; 2]).is_err());
    }

    #[test]
    fn hashes_are_stable() {
        // Stored in the rollups: a changed hash would split every user in two.
        assert_eq!(user_hash("user-1"), xxh3_64(b"user-1"));
        assert_eq!(user_hash("user-1  "), user_hash("user-1"));
        assert_eq!(format!("{:016x}", user_hash("")), "2d06800538d394c2");
    }
}
