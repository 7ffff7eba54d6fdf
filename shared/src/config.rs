//! Every setting, read from the environment once, with defaults that work on a developer's
//! machine. Secrets are wrapped so that they never print.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A value that must not appear in logs or debug output.
#[derive(Clone)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The development pepper. Anything deployed must set `EVTRACK_KEY_PEPPER`; the Lambda
/// entry points refuse to start with this value.
pub const DEVELOPMENT_PEPPER: &str = "evtrack-development-pepper-do-not-deploy";

/// The local database `evtrack up` creates; refused on Lambda.
pub const DEVELOPMENT_DATABASE_URL: &str = "mysql://root@127.0.0.1:3306/evtrack?prefer_socket=false";

#[derive(Debug, Clone)]
pub struct Config {
    /// `mysql://user:pass@host:port/db?...`; the database name is created by `evtrack up`.
    pub database_url: Secret<String>,
    pub database_tls: DatabaseTls,
    /// Connections per process. Lambda runs one request at a time: keep it small.
    pub database_pool_max: usize,
    /// Rate-limit counters shared by ingest instances; `none` (None): each instance counts
    /// for itself.
    pub redis_url: Option<Secret<String>>,
    /// SQS queue URL; without it the local stack uses an in-process queue.
    pub sqs_queue_url: Option<String>,
    /// Keyed-hash secret for API keys, and its version (stored beside every hash).
    pub key_pepper: Secret<String>,
    pub key_pepper_version: u16,
    /// The pepper before the last pepper rotation: keys hashed under it keep working until
    /// they expire or are rotated.
    pub key_pepper_previous: Option<(Secret<String>, u16)>,
    pub key_cache_ttl: Duration,
    pub key_policy: KeyPolicy,
    /// Master keys that seal the signing keyring, newest first: `version:base64,...` (32-byte
    /// keys). The first seals; the others only open.
    pub master_keys: Option<Secret<String>>,
    pub keyring_policy: KeyringPolicy,
    /// How long a job run owns its slot before another invocation may take it over.
    pub job_lease: Duration,
    pub cleanup: CleanupPolicy,
    pub limits: Limits,
    /// Events per second per write key; 0 disables rate limiting.
    pub rate_limit_events_per_second: u32,
    /// Failed authentications per client address (IPv4, or IPv6 /64) per minute, after which
    /// the address gets 429 until the minute ends; 0 disables it.
    pub auth_failures_per_minute: u32,
    pub listen: SocketAddr,
    /// In-process queue capacity, in queue messages (each up to `max_queue_message_bytes`).
    pub local_queue_capacity: usize,
    /// How many index entries one page of a read-side list may examine (`store::lists`).
    pub list_rows_examined: usize,
    /// How ingest seals queue messages (`queue::envelope`); the consumer opens either.
    pub queue_seal: QueueSeal,
    /// Rows one read of a read-side question may read (`store::MAX_ROWS_READ` by default).
    pub max_rows_read: usize,
    /// Where `evtrack up` journals its queue (`None`: in memory only, lost on a crash).
    pub local_queue_dir: Option<std::path::PathBuf>,
    /// How long ingest waits for queue capacity before answering 503.
    pub queue_send_timeout: Duration,
    /// On AWS the api triggers a job by invoking its function (`EVTRACK_JOB_FUNCTION_<JOB>`,
    /// e.g. `EVTRACK_JOB_FUNCTION_CLEANUP`): job name → function name or ARN. Empty: the
    /// jobs run in the process that triggers them (the local stack, the command line).
    pub job_functions: Vec<(&'static str, String)>,
}

/// The settings that hold secrets. On AWS each is given as `<NAME>_SECRET_ID` instead: the
/// Secrets Manager secret whose text is the value, read once when the function starts.
/// (`EVTRACK_DATABASE_CA` is no secret, but a CA bundle is too large for Lambda's 4 KB of
/// environment: a secret can hold it.)
pub const SECRET_SETTINGS: [&str; 5] = [
    "EVTRACK_DATABASE_URL",
    "EVTRACK_KEY_PEPPER",
    "EVTRACK_KEY_PEPPER_PREVIOUS",
    "EVTRACK_MASTER_KEYS",
    "EVTRACK_DATABASE_CA",
];

/// The scheduled jobs, by the names the ledger, the api and the command line use.
pub const JOB_NAMES: [&str; 3] = ["rotate-keys", "cleanup", "rollups"];

/// How often each job's slot comes round, as template.yaml schedules them (and the local
/// stack fires them): key housekeeping and cleanup hourly locally (daily and hourly on AWS),
/// the rollups every minute.
pub fn job_period(job: &str) -> chrono::Duration {
    match job {
        "rollups" => chrono::Duration::minutes(1),
        _ => chrono::Duration::hours(1),
    }
}

/// A secret a Lambda function must be given: the development defaults are refused there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    DatabaseUrl,
    KeyPepper,
    MasterKeys,
}

/// Published ingest limits; every error that enforces one names it.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_segment_request_bytes: usize,
    pub max_posthog_request_bytes: usize,
    pub max_batch_events: usize,
    pub max_queue_message_bytes: usize,
    pub max_queue_batch_bytes: usize,
    /// Events dated further ahead than this (after correction) are clamped to receipt time.
    pub future_tolerance: chrono::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 32 * 1024,
            max_segment_request_bytes: 500 * 1024,
            max_posthog_request_bytes: 5 * 1024 * 1024,
            max_batch_events: 2500,
            max_queue_message_bytes: 256 * 1024,
            max_queue_batch_bytes: 1024 * 1024,
            future_tolerance: chrono::Duration::hours(24),
        }
    }
}

/// Lifetimes of API keys.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    pub write_expiry: chrono::Duration,
    pub read_expiry: chrono::Duration,
    pub admin_expiry: chrono::Duration,
    /// How long a rotated key keeps working beside its successor, unless the caller says.
    pub rotation_grace: chrono::Duration,
    pub max_rotation_grace: chrono::Duration,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            write_expiry: chrono::Duration::days(365),
            read_expiry: chrono::Duration::days(180),
            admin_expiry: chrono::Duration::days(90),
            rotation_grace: chrono::Duration::hours(24),
            max_rotation_grace: chrono::Duration::days(7),
        }
    }
}

/// What the cleanup job keeps, and how much it deletes per statement.
#[derive(Debug, Clone)]
pub struct CleanupPolicy {
    /// Soft-deleted rows can be restored this long, then they are purged.
    pub soft_delete_grace: chrono::Duration,
    pub rejected_events_retention: chrono::Duration,
    pub job_runs_retention: chrono::Duration,
    /// Completed erasure requests (their audit records, no personal data).
    pub erasure_audit_retention: chrono::Duration,
    /// The trail of admin actions.
    pub audit_log_retention: chrono::Duration,
    /// Rows per delete statement.
    pub chunk_rows: u64,
}

/// Admin keys manage everything: no admin key lives longer (nor never expires).
pub const MAX_ADMIN_KEY_DAYS: i64 = 90;
/// Ingest's key cache: a revoked key works at most this long there.
pub const MAX_KEY_CACHE_SECONDS: u64 = 300;

/// Erased ids stay suppressed longer than SQS keeps a message (14 days at most).
pub const SUPPRESSION_DAYS: i64 = 15;

/// Lifetimes of the internal signing keys.
#[derive(Debug, Clone)]
pub struct KeyringPolicy {
    /// A new signing key every this often.
    pub rotation: chrono::Duration,
    /// How long a key still verifies after it stopped signing.
    pub overlap: chrono::Duration,
    /// How long a retired key's row is kept before it is purged.
    pub purge_after: chrono::Duration,
}

impl Default for KeyringPolicy {
    fn default() -> Self {
        Self {
            rotation: chrono::Duration::days(30),
            overlap: chrono::Duration::days(7),
            purge_after: chrono::Duration::days(7),
        }
    }
}

/// How the store reaches a database that is not on this machine: over TLS, verified by
/// `ca_pem` (or, with no CA given and `require_ssl=true` in the URL, by the public roots), or
/// in the clear only when the operator says so (`store::connection_options` decides).
#[derive(Clone, Default)]
pub struct DatabaseTls {
    /// `EVTRACK_DATABASE_CA`: the CA certificates (PEM) that verify the server — a file, or
    /// the PEM text itself (private CAs: RDS, Aurora, a company CA).
    pub ca_pem: Option<Vec<u8>>,
    /// `EVTRACK_DATABASE_INSECURE=1`: a database elsewhere may be reached without TLS.
    pub insecure: bool,
}

impl fmt::Debug for DatabaseTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseTls").field("ca", &self.ca_pem.is_some()).field("insecure", &self.insecure).finish()
    }
}

/// `EVTRACK_DATABASE_CA`: PEM text, or the path of a PEM file (read now, so that a wrong path
/// fails at start rather than at the first connection).
fn database_ca(value: Option<String>) -> Result<Option<Vec<u8>>, ConfigError> {
    const NAME: &str = "EVTRACK_DATABASE_CA";
    let Some(value) = value else { return Ok(None) };
    let pem = if value.trim_start().starts_with("-----BEGIN") {
        value.into_bytes()
    } else {
        std::fs::read(value.trim())
            .map_err(|err| ConfigError::new(NAME, &value, &format!("cannot read the file: {err}")))?
    };
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::new(NAME, "", "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(Some(pem))
}

/// `localhost` or a loopback address (`[::1]` with or without its brackets).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `1`/`true` or `0`/`false`; unset is false.
fn flag(get: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<bool, ConfigError> {
    match get(name).as_deref().map(str::trim) {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(other) => Err(ConfigError::new(name, other, "1 or 0")),
    }
}

/// The seal ingest puts on queue messages (`EVTRACK_QUEUE_SEAL`): `blake3` by default (about
/// half the CPU per byte). Consumers open both; those of releases before 2026-12-06 open
/// `hmac-sha256` only, which is what a rollback to one of them needs (the template updates the
/// consumer before ingest, so a deploy's own order is safe either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueSeal {
    /// Envelope version 2.
    HmacSha256,
    /// Envelope version 3: keyed BLAKE3.
    Blake3,
}

impl std::str::FromStr for QueueSeal {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "hmac-sha256" => Ok(Self::HmacSha256),
            "blake3" => Ok(Self::Blake3),
            other => Err(format!("{other:?} is not hmac-sha256 or blake3")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub struct ConfigError {
    name: &'static str,
    value: String,
    reason: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the config from any name → value lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // An empty variable counts as unset (so an empty pepper is never used).
        let get = |name: &str| get(name).filter(|value| !value.trim().is_empty());
        let string = |name: &str, default: &str| get(name).unwrap_or_else(|| default.to_string());
        let defaults = Limits::default();
        let key_pepper_version = parse(&get, "EVTRACK_KEY_PEPPER_VERSION", 1)?;
        Ok(Self {
            database_url: Secret::new(string("EVTRACK_DATABASE_URL", DEVELOPMENT_DATABASE_URL)),
            database_tls: DatabaseTls {
                ca_pem: database_ca(get("EVTRACK_DATABASE_CA"))?,
                insecure: flag(&get, "EVTRACK_DATABASE_INSECURE")?,
            },
            database_pool_max: parse(&get, "EVTRACK_DATABASE_POOL_MAX", 4)?,
            redis_url: Some(string("EVTRACK_REDIS_URL", "redis://127.0.0.1:6379"))
                .filter(|url| !url.eq_ignore_ascii_case("none"))
                .map(Secret::new),
            sqs_queue_url: get("EVTRACK_SQS_QUEUE_URL").filter(|url| !url.is_empty()),
            key_pepper: Secret::new(string("EVTRACK_KEY_PEPPER", DEVELOPMENT_PEPPER)),
            key_pepper_version,
            key_pepper_previous: match get("EVTRACK_KEY_PEPPER_PREVIOUS") {
                None => None,
                Some(pepper) => Some((Secret::new(pepper), previous_pepper_version(&get, key_pepper_version)?)),
            },
            key_cache_ttl: Duration::from_secs(at_most(
                parse(&get, "EVTRACK_KEY_CACHE_SECONDS", 30)?,
                MAX_KEY_CACHE_SECONDS,
                "EVTRACK_KEY_CACHE_SECONDS",
            )?),
            key_policy: KeyPolicy {
                write_expiry: days(&get, "EVTRACK_KEY_EXPIRY_DAYS_WRITE", 365)?,
                read_expiry: days(&get, "EVTRACK_KEY_EXPIRY_DAYS_READ", 180)?,
                admin_expiry: chrono::Duration::days(at_most(
                    parse(&get, "EVTRACK_KEY_EXPIRY_DAYS_ADMIN", 90)?,
                    MAX_ADMIN_KEY_DAYS,
                    "EVTRACK_KEY_EXPIRY_DAYS_ADMIN",
                )?),
                rotation_grace: chrono::Duration::hours(parse(&get, "EVTRACK_KEY_ROTATION_GRACE_HOURS", 24)?),
                max_rotation_grace: chrono::Duration::hours(parse(&get, "EVTRACK_KEY_ROTATION_GRACE_MAX_HOURS", 168)?),
            },
            master_keys: get("EVTRACK_MASTER_KEYS").map(Secret::new),
            keyring_policy: KeyringPolicy {
                rotation: days(&get, "EVTRACK_SIGNING_KEY_ROTATION_DAYS", 30)?,
                overlap: days(&get, "EVTRACK_SIGNING_KEY_OVERLAP_DAYS", 7)?,
                purge_after: days(&get, "EVTRACK_SIGNING_KEY_PURGE_DAYS", 7)?,
            },
            job_lease: Duration::from_secs(parse(&get, "EVTRACK_JOB_LEASE_SECONDS", 120)?),
            cleanup: CleanupPolicy {
                soft_delete_grace: days(&get, "EVTRACK_SOFT_DELETE_GRACE_DAYS", 30)?,
                rejected_events_retention: days(&get, "EVTRACK_REJECTED_EVENTS_RETENTION_DAYS", 30)?,
                job_runs_retention: days(&get, "EVTRACK_JOB_RUNS_RETENTION_DAYS", 90)?,
                erasure_audit_retention: days(&get, "EVTRACK_ERASURE_AUDIT_RETENTION_DAYS", 1095)?,
                audit_log_retention: days(&get, "EVTRACK_AUDIT_LOG_RETENTION_DAYS", 365)?,
                chunk_rows: parse(&get, "EVTRACK_CLEANUP_CHUNK_ROWS", 5000)?,
            },
            limits: Limits {
                max_event_bytes: event_bytes(&get, defaults.max_queue_message_bytes)?,
                max_segment_request_bytes: parse(
                    &get,
                    "EVTRACK_MAX_REQUEST_BYTES",
                    defaults.max_segment_request_bytes,
                )?,
                max_posthog_request_bytes: parse(
                    &get,
                    "EVTRACK_MAX_POSTHOG_REQUEST_BYTES",
                    defaults.max_posthog_request_bytes,
                )?,
                max_batch_events: parse(&get, "EVTRACK_MAX_BATCH_EVENTS", defaults.max_batch_events)?,
                ..defaults
            },
            rate_limit_events_per_second: parse(&get, "EVTRACK_RATE_LIMIT_EVENTS_PER_SECOND", 20_000)?,
            auth_failures_per_minute: parse(&get, "EVTRACK_AUTH_FAILURES_PER_MINUTE", 60)?,
            listen: parse(&get, "EVTRACK_LISTEN", SocketAddr::from(([127, 0, 0, 1], 3000)))?,
            local_queue_capacity: parse(&get, "EVTRACK_LOCAL_QUEUE_CAPACITY", 256)?,
            list_rows_examined: parse(&get, "EVTRACK_LIST_ROWS_EXAMINED", 10_000)?.max(1),
            // `store::MAX_ROWS_READ` (the store is a layer below; a test there checks).
            queue_seal: parse(&get, "EVTRACK_QUEUE_SEAL", QueueSeal::Blake3)?,
            max_rows_read: parse(&get, "EVTRACK_MAX_ROWS_READ", 1_000_000)?.max(1),
            local_queue_dir: Some(string("EVTRACK_LOCAL_QUEUE_DIR", ".evtrack-dev/queue"))
                .filter(|dir| !dir.eq_ignore_ascii_case("memory"))
                .map(std::path::PathBuf::from),
            queue_send_timeout: Duration::from_millis(parse(&get, "EVTRACK_QUEUE_SEND_TIMEOUT_MS", 10_000)?),
            job_functions: JOB_NAMES
                .into_iter()
                .filter_map(|job| get(&job_function_setting(job)).map(|function| (job, function)))
                .collect(),
        })
    }

    /// For the Lambda entry points: the environment, with every secret setting given as
    /// `<NAME>_SECRET_ID` read from Secrets Manager (`SECRET_SETTINGS`), once per cold start.
    #[cfg(feature = "adapters")]
    pub async fn from_env_and_secrets() -> Result<Self, ConfigError> {
        let secrets = read_secrets(|name| std::env::var(name).ok()).await?;
        Self::from_lookup(|name| secrets.get(name).cloned().or_else(|| std::env::var(name).ok()))
    }

    /// The default config with some settings replaced; for tests and tools.
    pub fn with_overrides(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
                .or_else(|| std::env::var(name).ok())
        })
    }

    /// Whether the database is on this machine (loopback or a socket): the only place the
    /// development secrets may be used.
    pub fn database_is_local(&self) -> bool {
        let url = self.database_url.expose();
        let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let authority = after_scheme.split(['/', '?']).next().unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        let host = match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => host_port.split(':').next().unwrap_or_default(),
        };
        host.is_empty() || is_loopback_host(host)
    }

    /// The current pepper, then the previous one (while keys or hashes made under it remain).
    pub fn peppers(&self) -> impl Iterator<Item = &Secret<String>> {
        std::iter::once(&self.key_pepper).chain(self.key_pepper_previous.iter().map(|(pepper, _)| pepper))
    }

    pub fn uses_development_pepper(&self) -> bool {
        self.key_pepper.expose() == DEVELOPMENT_PEPPER
    }

    /// For the Lambda entry points: refuses to run with a development default for any of
    /// the secrets the function uses.
    pub fn require(&self, secrets: &[Required]) -> Result<(), String> {
        for secret in secrets {
            let (missing, name) = match secret {
                Required::DatabaseUrl => {
                    (self.database_url.expose() == DEVELOPMENT_DATABASE_URL, "EVTRACK_DATABASE_URL")
                }
                Required::KeyPepper => (self.uses_development_pepper(), "EVTRACK_KEY_PEPPER"),
                Required::MasterKeys => (self.master_keys.is_none(), "EVTRACK_MASTER_KEYS"),
            };
            if missing {
                return Err(format!("set {name}_SECRET_ID (or {name}); refusing the development default"));
            }
        }
        Ok(())
    }
}

/// The environment variable naming `job`'s function: `EVTRACK_JOB_FUNCTION_ROTATE_KEYS`.
pub fn job_function_setting(job: &str) -> String {
    format!("EVTRACK_JOB_FUNCTION_{}", job.to_uppercase().replace('-', "_"))
}

/// Reads the secret settings given as `<NAME>_SECRET_ID` from Secrets Manager, concurrently.
#[cfg(feature = "adapters")]
async fn read_secrets(
    get: impl Fn(&str) -> Option<String>,
) -> Result<std::collections::HashMap<&'static str, String>, ConfigError> {
    let wanted: Vec<(&'static str, String)> = SECRET_SETTINGS
        .into_iter()
        .filter_map(|name| get(&format!("{name}_SECRET_ID")).filter(|id| !id.trim().is_empty()).map(|id| (name, id)))
        .collect();
    if let Some((name, _)) = wanted.iter().find(|(name, _)| get(name).is_some_and(|value| !value.trim().is_empty())) {
        return Err(ConfigError::new(name, "", "given both directly and as a secret; set one"));
    }
    if wanted.is_empty() {
        return Ok(Default::default());
    }
    let client = aws_sdk_secretsmanager::Client::new(&aws_config::load_from_env().await);
    let reads =
        wanted.iter().map(|(name, secret_id)| {
            let client = &client;
            async move {
                let unreadable =
                    |reason: String| ConfigError::new(name, secret_id, &format!("cannot read the secret: {reason}"));
                let output =
                    client.get_secret_value().secret_id(secret_id).send().await.map_err(|err| {
                        unreadable(aws_sdk_secretsmanager::error::DisplayErrorContext(&err).to_string())
                    })?;
                let text = output.secret_string().ok_or_else(|| unreadable("it holds no text".into()))?;
                Ok::<_, ConfigError>((*name, text.trim().to_string()))
            }
        });
    futures::future::try_join_all(reads).await.map(|values| values.into_iter().collect())
}

impl ConfigError {
    fn new(name: &'static str, value: &str, reason: &str) -> Self {
        Self { name, value: value.to_string(), reason: reason.to_string() }
    }
}

/// `value`, if it is at most `max`.
fn at_most<T: PartialOrd + fmt::Display>(value: T, max: T, name: &'static str) -> Result<T, ConfigError> {
    if value > max {
        return Err(ConfigError::new(name, &value.to_string(), &format!("at most {max}")));
    }
    Ok(value)
}

fn days(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u32,
) -> Result<chrono::Duration, ConfigError> {
    Ok(chrono::Duration::days(i64::from(parse(get, name, default)?)))
}

/// `EVTRACK_MAX_EVENT_BYTES`, taken as at most half a queue message, so that an event, the
/// batch fields it is given (up to half an event) and its envelope fit one: a larger event
/// would fail its whole request with `413` instead of being quarantined alone. (Lowered, not
/// refused: a deployment that set more keeps starting, every function of it.)
fn event_bytes(get: &impl Fn(&str) -> Option<String>, queue_message_bytes: usize) -> Result<usize, ConfigError> {
    let bytes = parse(get, "EVTRACK_MAX_EVENT_BYTES", Limits::default().max_event_bytes)?;
    Ok(bytes.min(queue_message_bytes / 2))
}

/// The previous pepper's version: required with it, and not the current pepper's. A key is
/// checked against the version stored beside its hash, so a missing one (0) would refuse every
/// key hashed under the previous pepper at once.
fn previous_pepper_version(get: &impl Fn(&str) -> Option<String>, current: u16) -> Result<u16, ConfigError> {
    const NAME: &str = "EVTRACK_KEY_PEPPER_PREVIOUS_VERSION";
    let refused = |value: String, reason: &str| ConfigError { name: NAME, value, reason: reason.into() };
    match parse(get, NAME, 0u16)? {
        0 => Err(refused(
            get(NAME).unwrap_or_default(),
            "required with EVTRACK_KEY_PEPPER_PREVIOUS: the version its keys were hashed under (1 or more)",
        )),
        version if version == current => {
            Err(refused(version.to_string(), "the same as EVTRACK_KEY_PEPPER_VERSION: a new pepper has a new version"))
        }
        version => Ok(version),
    }
}

fn parse<T>(get: &impl Fn(&str) -> Option<String>, name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    match get(name) {
        None => Ok(default),
        Some(value) => value.trim().parse().map_err(|err: T::Err| ConfigError {
            name,
            value: value.clone(),
            reason: err.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_local_and_limits_published() {
        let config = Config::from_lookup(|_| None).expect("defaults parse");
        assert_eq!(config.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(config.limits.max_event_bytes, 32 * 1024);
        let lowered = Config::with_overrides(&[("EVTRACK_MAX_EVENT_BYTES", "200000")]).expect("starts");
        assert_eq!(lowered.limits.max_event_bytes, 131_072, "half a queue message");
        assert_eq!(config.limits.max_batch_events, 2500);
        assert!(config.uses_development_pepper());
    }

    #[test]
    fn bad_number_names_the_setting() {
        let err = Config::from_lookup(|name| (name == "EVTRACK_MAX_BATCH_EVENTS").then(|| "lots".into()))
            .expect_err("must fail");
        assert!(err.to_string().contains("EVTRACK_MAX_BATCH_EVENTS"), "{err}");
    }

    #[test]
    fn the_key_cache_and_admin_key_lifetimes_are_capped() {
        for (name, value) in [("EVTRACK_KEY_CACHE_SECONDS", "301"), ("EVTRACK_KEY_EXPIRY_DAYS_ADMIN", "91")] {
            let err = Config::from_lookup(|key| (key == name).then(|| value.into())).expect_err("refused");
            assert!(err.to_string().contains(name) && err.to_string().contains("at most"), "{err}");
        }
        let config = Config::from_lookup(|key| (key == "EVTRACK_KEY_CACHE_SECONDS").then(|| "300".into()));
        assert_eq!(config.expect("300 is allowed").key_cache_ttl.as_secs(), 300);
    }

    #[test]
    fn a_previous_pepper_needs_its_own_version() {
        fn with(settings: &[(&str, &str)]) -> Result<Config, ConfigError> {
            Config::from_lookup(|name| {
                settings.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string())
            })
        }
        let previous = ("EVTRACK_KEY_PEPPER_PREVIOUS", "old-pepper");
        for settings in [
            &[previous][..],
            &[previous, ("EVTRACK_KEY_PEPPER_PREVIOUS_VERSION", "")],
            &[previous, ("EVTRACK_KEY_PEPPER_PREVIOUS_VERSION", "0")],
            &[previous, ("EVTRACK_KEY_PEPPER_PREVIOUS_VERSION", "1")],
        ] {
            let err = with(settings).expect_err("refused");
            assert!(err.to_string().contains("EVTRACK_KEY_PEPPER_PREVIOUS_VERSION"), "{err}");
        }
        let config =
            with(&[previous, ("EVTRACK_KEY_PEPPER_VERSION", "2"), ("EVTRACK_KEY_PEPPER_PREVIOUS_VERSION", "1")]);
        let (_, version) = config.expect("allowed").key_pepper_previous.expect("a previous pepper");
        assert_eq!(version, 1);
    }

    #[test]
    fn only_loopback_and_socket_databases_are_local() {
        let local = |url: &str| {
            Config::from_lookup(|name| (name == "EVTRACK_DATABASE_URL").then(|| url.into()))
                .expect("config")
                .database_is_local()
        };
        for url in ["mysql://root@127.0.0.1:3306/e", "mysql://u:p@localhost/e", "mysql://[::1]:3306/e", "mysql:///e"] {
            assert!(local(url), "{url}");
        }
        for url in ["mysql://root@db.example:3306/e", "mysql://u:p@10.0.0.5/e", "mysql://u:p@127.0.0.1.example/e"] {
            assert!(!local(url), "{url}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let config = Config::from_lookup(|_| None).expect("defaults parse");
        let printed = format!("{config:?}");
        assert!(!printed.contains(DEVELOPMENT_PEPPER));
        assert!(!printed.contains("mysql://"));
    }
}
