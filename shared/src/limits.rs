//! Rate limiting in fixed windows counted in Redis, shared by every instance: events per
//! write key per second (ingest), failed authentications per client address per minute
//! (ingest and api). Redis is a convenience here, never a dependency: while it is
//! unreachable each instance counts for itself (logged), and no request fails because of Redis.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const REDIS_TIMEOUT: Duration = Duration::from_millis(300);
/// After Redis fails, wait this long before trying it again.
const REDIS_BACKOFF: Duration = Duration::from_secs(5);

/// The window was full: try again after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub retry_after_secs: u64,
}

pub struct RateLimiter {
    /// What is counted, in Redis keys: `evtrack:{what}:{subject}:{window}`.
    what: &'static str,
    per_window: u32,
    window_secs: u64,
    client: Option<redis::Client>,
    redis: tokio::sync::Mutex<RedisState>,
    local: Mutex<HashMap<String, (u64, u64)>>,
}

#[derive(Default)]
struct RedisState {
    connection: Option<ConnectionManager>,
    unavailable_until: Option<Instant>,
}

impl RateLimiter {
    /// Events per write key per second; 0 turns limiting off.
    pub fn events_per_key(redis_url: Option<&str>, events_per_second: u32) -> Self {
        Self::new(redis_url, "rate", events_per_second, 1)
    }

    /// Failed authentications per client address per minute; 0 turns limiting off.
    pub fn failed_auth_per_address(redis_url: Option<&str>, per_minute: u32) -> Self {
        Self::new(redis_url, "authfail", per_minute, 60)
    }

    /// `per_window` of 0 turns limiting off. A `redis_url` that does not parse is logged and
    /// treated like an unreachable Redis.
    fn new(redis_url: Option<&str>, what: &'static str, per_window: u32, window_secs: u64) -> Self {
        let client = redis_url.and_then(|url| match redis::Client::open(url) {
            Ok(client) => Some(client),
            Err(err) => {
                tracing::error!(error = %err, "EVTRACK_REDIS_URL is invalid; rate limiting per instance");
                None
            }
        });
        Self {
            what,
            per_window,
            window_secs,
            client,
            redis: tokio::sync::Mutex::new(RedisState::default()),
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Counts `events` against `subject`'s window. A request is admitted while the window
    /// was not yet full when it arrived, so one large batch is never refused forever; a count
    /// of 0 only asks whether the window is full.
    pub async fn check(&self, subject: &str, events: usize) -> Result<(), RateLimited> {
        if self.per_window == 0 {
            return Ok(());
        }
        let events = events as u64;
        let now = now_secs();
        let window = now / self.window_secs;
        let total = match self.count_in_redis(subject, window, events).await {
            Some(total) => total,
            None => self.count_locally(subject, window, events),
        };
        if total - events >= u64::from(self.per_window) {
            let retry_after_secs = self.window_secs - now % self.window_secs;
            return Err(RateLimited { retry_after_secs });
        }
        Ok(())
    }

    /// Whether `subject`'s window is full, counting nothing.
    pub async fn is_full(&self, subject: &str) -> Result<(), RateLimited> {
        self.check(subject, 0).await
    }

    async fn count_in_redis(&self, subject: &str, window: u64, events: u64) -> Option<u64> {
        let mut connection = self.redis_connection().await?;
        let counter = format!("evtrack:{}:{subject}:{window}", self.what);
        let mut pipe = redis::pipe();
        pipe.atomic().incr(&counter, events).expire(&counter, (self.window_secs + 1) as i64).ignore();
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

    fn count_locally(&self, subject: &str, window: u64, events: u64) -> u64 {
        let mut counts = self.local.lock().unwrap_or_else(|poison| poison.into_inner());
        counts.retain(|_, (counted_window, _)| *counted_window + 1 >= window);
        let entry = counts.entry(subject.to_string()).or_insert((window, 0));
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
        let limiter = RateLimiter::events_per_key(None, 10);
        let key = "a-key".to_string();
        assert_eq!(limiter.count_locally(&key, 100, 6), 6);
        assert_eq!(limiter.count_locally(&key, 100, 6), 12);
        assert_eq!(limiter.count_locally(&key, 101, 6), 6, "a new window starts over");
    }

    #[tokio::test]
    async fn zero_turns_limiting_off() {
        let limiter = RateLimiter::events_per_key(None, 0);
        assert_eq!(limiter.check("key", 1_000_000).await, Ok(()));
    }
}
