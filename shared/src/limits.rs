//! Per-key rate limiting: a one-second window counted in Redis, shared by every ingest
//! instance. Redis is a convenience here, never a dependency: while it is unreachable each
//! instance counts for itself (logged), and no request fails because of Redis.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

const REDIS_TIMEOUT: Duration = Duration::from_millis(300);
/// After Redis fails, wait this long before trying it again.
const REDIS_BACKOFF: Duration = Duration::from_secs(5);

/// The window was full: try again after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub retry_after_secs: u64,
}

pub struct RateLimiter {
    events_per_second: u32,
    client: Option<redis::Client>,
    redis: tokio::sync::Mutex<RedisState>,
    local: Mutex<HashMap<Uuid, (u64, u64)>>,
}

#[derive(Default)]
struct RedisState {
    connection: Option<ConnectionManager>,
    unavailable_until: Option<Instant>,
}

impl RateLimiter {
    /// `events_per_second` of 0 turns limiting off. A `redis_url` that does not parse is
    /// logged and treated like an unreachable Redis.
    pub fn new(redis_url: Option<&str>, events_per_second: u32) -> Self {
        let client = redis_url.and_then(|url| match redis::Client::open(url) {
            Ok(client) => Some(client),
            Err(err) => {
                tracing::error!(error = %err, "EVTRACK_REDIS_URL is invalid; rate limiting per instance");
                None
            }
        });
        Self {
            events_per_second,
            client,
            redis: tokio::sync::Mutex::new(RedisState::default()),
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Counts `events` against `key`'s window. A request is admitted while the window was
    /// not yet full when it arrived, so one large batch is never refused forever.
    pub async fn check(&self, key: Uuid, events: usize) -> Result<(), RateLimited> {
        if self.events_per_second == 0 {
            return Ok(());
        }
        let events = events as u64;
        let window = now_secs();
        let total = match self.count_in_redis(key, window, events).await {
            Some(total) => total,
            None => self.count_locally(key, window, events),
        };
        if total - events >= u64::from(self.events_per_second) {
            return Err(RateLimited { retry_after_secs: 1 });
        }
        Ok(())
    }

    async fn count_in_redis(&self, key: Uuid, window: u64, events: u64) -> Option<u64> {
        let mut connection = self.redis_connection().await?;
        let counter = format!("evtrack:rate:{key}:{window}");
        let mut pipe = redis::pipe();
        pipe.atomic().incr(&counter, events).expire(&counter, 2).ignore();
        // The connection manager reconnects after a failed command; one retry covers that.
        for _ in 0..2 {
            match tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<(u64,)>(&mut connection)).await {
                Ok(Ok((total,))) => return Some(total),
                Ok(Err(err)) => tracing::debug!(error = %err, "rate limit command failed"),
                Err(_) => tracing::debug!("rate limit command timed out"),
            }
        }
        self.mark_unavailable("command failed").await;
        None
    }

    async fn redis_connection(&self) -> Option<ConnectionManager> {
        let client = self.client.as_ref()?;
        let mut state = self.redis.lock().await;
        if let Some(connection) = &state.connection {
            return Some(connection.clone());
        }
        if state.unavailable_until.is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        match tokio::time::timeout(REDIS_TIMEOUT * 2, client.get_connection_manager_with_config(config)).await {
            Ok(Ok(connection)) => {
                state.connection = Some(connection.clone());
                state.unavailable_until = None;
                Some(connection)
            }
            _ => {
                state.unavailable_until = Some(Instant::now() + REDIS_BACKOFF);
                tracing::warn!("redis unreachable; rate limiting per instance until it returns");
                None
            }
        }
    }

    async fn mark_unavailable(&self, why: &str) {
        let mut state = self.redis.lock().await;
        state.connection = None;
        state.unavailable_until = Some(Instant::now() + REDIS_BACKOFF);
        tracing::warn!(why, "redis unreachable; rate limiting per instance until it returns");
    }

    fn count_locally(&self, key: Uuid, window: u64, events: u64) -> u64 {
        let mut counts = self.local.lock().unwrap_or_else(|poison| poison.into_inner());
        counts.retain(|_, (counted_window, _)| *counted_window + 1 >= window);
        let entry = counts.entry(key).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 += events;
        entry.1
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_redis_each_instance_counts_per_window() {
        let limiter = RateLimiter::new(None, 10);
        let key = Uuid::now_v7();
        assert_eq!(limiter.count_locally(key, 100, 6), 6);
        assert_eq!(limiter.count_locally(key, 100, 6), 12);
        assert_eq!(limiter.count_locally(key, 101, 6), 6, "a new window starts over");
    }

    #[tokio::test]
    async fn zero_turns_limiting_off() {
        let limiter = RateLimiter::new(None, 0);
        assert_eq!(limiter.check(Uuid::now_v7(), 1_000_000).await, Ok(()));
    }
}
