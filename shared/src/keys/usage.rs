//! When keys were last used (`last_used_at`), recorded without making every request a
//! database write: at most once per key per `KEY_USE_INTERVAL` and process. Ingest never
//! writes: the consumer records write keys from the queue messages, the api its callers.

use crate::store::Store;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How stale `last_used_at` may be.
pub const KEY_USE_INTERVAL: Duration = Duration::from_secs(60);
/// Keys remembered per process before old entries are dropped.
const CACHE_CAPACITY: usize = 10_000;

/// Records key use; best effort: a failure costs a `last_used_at` update, never a request
/// or an event.
pub struct KeyUseRecorder {
    store: Store,
    throttle: UsageThrottle,
}

impl KeyUseRecorder {
    pub fn new(store: Store) -> Self {
        Self { store, throttle: UsageThrottle::new(KEY_USE_INTERVAL) }
    }

    /// Records each key's latest use among `uses`, for the keys not recorded lately.
    pub async fn record(&self, uses: impl IntoIterator<Item = (Uuid, DateTime<Utc>)>) {
        let mut latest: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
        for (key, at) in uses {
            let entry = latest.entry(key).or_insert(at);
            *entry = (*entry).max(at);
        }
        let due: Vec<(Uuid, DateTime<Utc>)> =
            self.throttle.due(latest.keys().copied()).into_iter().map(|key| (key, latest[&key])).collect();
        if due.is_empty() {
            return;
        }
        if let Err(err) = self.store.touch_keys(&due).await {
            tracing::warn!(error = %err, "could not record key use");
        }
    }
}

/// Limits `last_used_at` writes to one per key per interval per process, so that recording
/// use costs next to nothing however busy a key is.
pub struct UsageThrottle {
    interval: Duration,
    last: Mutex<HashMap<Uuid, Instant>>,
}

impl UsageThrottle {
    pub fn new(interval: Duration) -> Self {
        Self { interval, last: Mutex::new(HashMap::new()) }
    }

    /// The keys among `keys` whose use should be written now; they count as written.
    pub fn due(&self, keys: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
        let mut last = self.last.lock().unwrap_or_else(|poison| poison.into_inner());
        if last.len() >= CACHE_CAPACITY {
            last.retain(|_, at| at.elapsed() < self.interval);
        }
        let mut due = Vec::new();
        for key in keys {
            let fresh = last.get(&key).is_some_and(|at| at.elapsed() < self.interval);
            if !fresh && !due.contains(&key) {
                last.insert(key, Instant::now());
                due.push(key);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_due_once_per_interval() {
        let throttle = UsageThrottle::new(Duration::from_secs(60));
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(throttle.due([a, a, b]), vec![a, b]);
        assert_eq!(throttle.due([a, b]), Vec::<Uuid>::new());
        let immediate = UsageThrottle::new(Duration::ZERO);
        assert_eq!(immediate.due([a]), vec![a]);
        assert_eq!(immediate.due([a]), vec![a]);
    }
}
