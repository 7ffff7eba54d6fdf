//! Funnels and retention over users' events: what the read side computes from the rows that
//! `Store::journeys` reads (one per matching event: who, when, which steps it matches, and
//! the breakdown value it carries). Pure, so that the rules are tested on their own.
//!
//! A user is counted by their userId, else the anonymousId (as unique users are).

use std::collections::HashMap;

/// One event of a journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub user: u64,
    /// Milliseconds since 1970 (UTC).
    pub at: i64,
    /// Bit k: the event matches step k (funnels), or bit 0 the cohort event and bit 1 the
    /// return event (retention).
    pub matches: u8,
    /// The breakdown property's value on this event.
    pub value: Option<String>,
}

/// Users who reached each step, per breakdown value (the value on the event that entered
/// the funnel of the chain that went furthest).
pub type FunnelCounts = Vec<(Option<String>, Vec<u64>)>;

/// Ordered funnel: a user enters with a step-0 event in `[from, to)` and reaches step k with
/// a step-k event after (or at the same time as) their step k-1 event, all within `window` ms
/// of the entry. Of several entries, the one that goes furthest counts; among those, the
/// latest. One event advances a chain by one step at most.
pub fn funnel(mut events: Vec<Step>, steps: usize, from: i64, to: i64, window: i64) -> FunnelCounts {
    // Events of one millisecond in step order: a step at the same time as the one before counts.
    events.sort_unstable_by_key(|event| (event.user, event.at, event.matches.trailing_zeros()));
    let mut counts: HashMap<Option<String>, Vec<u64>> = HashMap::new();
    for user_events in events.chunk_by(|a, b| a.user == b.user) {
        // chains[k]: the latest entry (time, value) that has reached step k.
        let mut chains: Vec<Option<(i64, &Option<String>)>> = vec![None; steps];
        for event in user_events {
            for k in (1..steps).rev() {
                if event.matches & (1 << k) != 0
                    && let Some((entered, value)) = chains[k - 1]
                    && event.at - entered <= window
                {
                    chains[k] = Some((entered, value));
                }
            }
            if event.matches & 1 != 0 && (from..to).contains(&event.at) {
                chains[0] = Some((event.at, &event.value));
            }
        }
        if let Some(furthest) = chains.iter().rposition(Option::is_some) {
            // Values apart only by trailing spaces are one, as the database compares them.
            let value = chains[furthest]
                .and_then(|(_, value)| value.as_deref())
                .map(|value| value.trim_end_matches(' ').to_string());
            let line = counts.entry(value).or_insert_with(|| vec![0; steps]);
            line.iter_mut().take(furthest + 1).for_each(|count| *count += 1);
        }
    }
    let mut lines: FunnelCounts = counts.into_iter().collect();
    lines.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then_with(|| a.0.cmp(&b.0)));
    lines
}

/// A retention table: per cohort, its users and how many of them came back in each period
/// after (index 0 is the cohort itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cohort {
    pub users: u64,
    pub returned: Vec<u64>,
}

/// Users join the cohort of the period (starting at `periods`, ms, ascending; the last
/// ends at `end`) of their first cohort event (bit 0) in the range; they count as returned
/// in a later period when they have a return event (bit 1) in it.
pub fn retention(mut events: Vec<Step>, periods: &[i64], end: i64) -> Vec<Cohort> {
    events.sort_unstable_by_key(|event| (event.user, event.at));
    let period_of = |at: i64| -> Option<usize> {
        (at < end && periods.first().is_some_and(|first| at >= *first))
            .then(|| periods.partition_point(|start| *start <= at) - 1)
    };
    let mut cohorts: Vec<Cohort> =
        (0..periods.len()).map(|index| Cohort { users: 0, returned: vec![0; periods.len() - index] }).collect();
    let mut back = vec![false; periods.len()];
    for user_events in events.chunk_by(|a, b| a.user == b.user) {
        let Some(joined) = user_events.iter().filter(|event| event.matches & 1 != 0).find_map(|e| period_of(e.at))
        else {
            continue;
        };
        back.iter_mut().for_each(|seen| *seen = false);
        for event in user_events.iter().filter(|event| event.matches & 2 != 0) {
            if let Some(period) = period_of(event.at).filter(|period| *period > joined) {
                back[period] = true;
            }
        }
        let cohort = &mut cohorts[joined];
        cohort.users += 1;
        cohort.returned[0] += 1;
        for (offset, _) in back.iter().enumerate().skip(joined + 1).filter(|(_, seen)| **seen) {
            cohort.returned[offset - joined] += 1;
        }
    }
    cohorts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(user: u64, at: i64, matches: u8) -> Step {
        Step { user, at, matches, value: None }
    }

    #[test]
    fn a_funnel_counts_each_user_once_at_the_furthest_step_within_the_window() {
        let events = vec![
            // 1: all three steps in order.
            step(1, 10, 0b001),
            step(1, 20, 0b010),
            step(1, 30, 0b100),
            // 2: step 2 before step 1 does not count; then only step 1 again.
            step(2, 5, 0b010),
            step(2, 10, 0b001),
            // 3: step 2 after the window.
            step(3, 10, 0b001),
            step(3, 200, 0b010),
            // 4: an entry outside the range does not enter; a later one does and converts.
            step(4, -50, 0b001),
            step(4, 40, 0b001),
            step(4, 120, 0b010),
            // 5: one event matching every step advances one step only.
            step(5, 10, 0b111),
        ];
        let lines = funnel(events, 3, 0, 100, 100);
        assert_eq!(lines, vec![(None, vec![5, 2, 1])]);
    }

    #[test]
    fn a_breakdown_counts_values_apart_only_by_trailing_spaces_as_one() {
        let entering = |user, value: Option<&str>| Step { user, at: 10, matches: 1, value: value.map(str::to_string) };
        let events = vec![entering(1, Some("pro")), entering(2, Some("pro  ")), entering(3, None), step(1, 20, 2)];
        let lines = funnel(events, 2, 0, 100, 50);
        assert_eq!(lines, [(Some("pro".to_string()), vec![2, 1]), (None, vec![1, 0])]);
    }

    #[test]
    fn a_step_in_the_same_millisecond_as_the_one_before_counts() {
        let events = vec![step(1, 10, 0b100), step(1, 10, 0b010), step(1, 10, 0b001)];
        assert_eq!(funnel(events, 3, 0, 100, 100), vec![(None, vec![1, 1, 1])]);
    }

    #[test]
    fn a_later_entry_restarts_the_window() {
        // The first entry's window has passed when step 1 happens; the second's has not.
        let events = vec![step(1, 0, 0b01), step(1, 90, 0b01), step(1, 150, 0b10)];
        assert_eq!(funnel(events, 2, 0, 100, 100), vec![(None, vec![1, 1])]);
    }

    #[test]
    fn a_breakdown_follows_the_entry_of_the_chain_that_went_furthest() {
        let with = |user, at, matches, value: &str| Step { user, at, matches, value: Some(value.into()) };
        let events = vec![
            with(1, 0, 0b01, "ads"),
            with(1, 10, 0b01, "mail"),
            with(1, 20, 0b10, "mail"),
            with(2, 0, 0b01, "ads"),
            step(3, 0, 0b01),
            step(3, 1, 0b10),
        ];
        let lines = funnel(events, 2, 0, 100, 100);
        assert_eq!(
            lines,
            vec![(None, vec![1, 1]), (Some("ads".into()), vec![1, 0]), (Some("mail".into()), vec![1, 1])]
        );
    }

    #[test]
    fn retention_puts_users_in_the_cohort_of_their_first_event_and_counts_returns_once_per_period() {
        let periods = [0, 10, 20, 30];
        let events = vec![
            // 1: joins in period 0, back in 1 (twice) and 3.
            step(1, 1, 0b11),
            step(1, 12, 0b10),
            step(1, 15, 0b10),
            step(1, 35, 0b10),
            // 2: joins in period 1, its period-1 return does not count as later.
            step(2, 11, 0b01),
            step(2, 19, 0b10),
            step(2, 25, 0b10),
            // 3: a return event alone joins nothing.
            step(3, 5, 0b10),
            // 4: out of range.
            step(4, 40, 0b11),
        ];
        let cohorts = retention(events, &periods, 40);
        assert_eq!(cohorts[0], Cohort { users: 1, returned: vec![1, 1, 0, 1] });
        assert_eq!(cohorts[1], Cohort { users: 1, returned: vec![1, 1, 0] });
        assert_eq!(cohorts[2], Cohort { users: 0, returned: vec![0, 0] });
        assert_eq!(cohorts[3], Cohort { users: 0, returned: vec![0] });
    }
}
