//! Test helpers: a fresh database per test, the ingest router and consumer wired to it,
//! an SQS endpoint (moto) with a fresh queue per test, and a TCP proxy to cut services.
//!
//! The services must be running (`infra/dev.sh test` starts them); a missing service fails
//! the test with the reason, never skips it.

pub mod lambda;
pub mod proxy;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use evtrack::Config;
use evtrack::config::{DatabaseTls, Secret};
use evtrack::jobs::JobRunners;
use evtrack::keys::keyring::Keyring;
use evtrack::keys::{Expiry, Scope};
use evtrack::queue::EventQueue;
use evtrack::queue::local::{self, QueuedMessage};
use evtrack::queue::sqs::{self, SqsQueue};
use evtrack::store::Store;
use evtrack_consumer::Consumer;
use evtrack_ingest::Ingest;
use http::{Request, StatusCode};
use mysql_async::prelude::Queryable;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tower::ServiceExt;
use uuid::Uuid;

/// The MySQL server the tests use (no database name), as a user who can create databases and
/// users: `infra/dev.sh test` gives its development user (`evtrack_dev`).
pub fn database_server_url() -> String {
    std::env::var("EVTRACK_TEST_DATABASE_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// The tests' MySQL server URL with its host and port replaced by `address` (a proxy in
/// front of the server), the same user and password.
pub fn database_server_url_via(address: std::net::SocketAddr) -> String {
    let url = database_server_url();
    let (scheme, rest) = url.split_once("://").unwrap_or(("mysql", &url));
    let credentials = rest.rsplit_once('@').map(|(credentials, _)| format!("{credentials}@")).unwrap_or_default();
    format!("{scheme}://{credentials}{address}")
}

pub fn redis_url() -> String {
    std::env::var("EVTRACK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The SQS-compatible endpoint (moto) started by `infra/dev.sh test`.
pub fn sqs_endpoint() -> String {
    std::env::var("EVTRACK_TEST_SQS_ENDPOINT").expect(
        "EVTRACK_TEST_SQS_ENDPOINT is not set: run the tests with `infra/dev.sh test`, which starts moto's SQS server",
    )
}

/// A database created for one test and dropped after it (with its function users).
pub struct TestDb {
    pub name: String,
    pub url: Secret<String>,
    pub store: Store,
    pool: mysql_async::Pool,
    /// The prefix of the database users `function_users` created.
    users: std::sync::Mutex<Option<String>>,
}

/// The database URL of each function's own user (`evtrack::store::grants`).
pub struct FunctionUsers {
    urls: Vec<(&'static str, Secret<String>)>,
}

impl FunctionUsers {
    pub fn url(&self, function: &str) -> &Secret<String> {
        &self.urls.iter().find(|(name, _)| *name == function).expect("a function with a database user").1
    }

    /// A store connected as `function`'s user.
    pub fn store(&self, function: &str) -> Store {
        Store::connect(self.url(function), &DatabaseTls::default(), 4).expect("store")
    }
}

impl TestDb {
    pub async fn new() -> Self {
        Self::on_server(&database_server_url()).await
    }

    /// A database reached through `server` (e.g. a proxy), created through the real server.
    pub async fn on_server(server: &str) -> Self {
        let name = format!("evtrack_test_{}", Uuid::now_v7().simple());
        let direct = Secret::new(format!("{}/{name}?prefer_socket=false", database_server_url()));
        Store::create_database(&direct, &DatabaseTls::default())
            .await
            .unwrap_or_else(|err| panic!("MariaDB must be running at {}: {err}", database_server_url()));
        let store = Store::connect(&direct, &DatabaseTls::default(), 2).expect("store");
        store.migrate().await.expect("migrations apply");
        let url = Secret::new(format!("{server}/{name}?prefer_socket=false"));
        let pool = mysql_async::Pool::new(direct.expose().as_str());
        let store = Store::connect(&url, &DatabaseTls::default(), 4).expect("store");
        Self { name, url, store, pool, users: std::sync::Mutex::new(None) }
    }

    /// The database user `function_users` made for `function`.
    pub fn user_of(&self, function: &str) -> String {
        let prefix = self.users.lock().expect("lock").clone().expect("function_users ran");
        evtrack::store::grants::user_name(&prefix, function)
    }

    /// A fresh prefix for this database's users (`<prefix>_ingest`, …), which are dropped with
    /// it, even after a failed test. One set per database.
    pub fn users_prefix(&self) -> String {
        // The random tail of a UUIDv7 (its head is the time, shared by parallel tests).
        let prefix = format!("t{}", &Uuid::now_v7().simple().to_string()[20..]);
        *self.users.lock().expect("lock") = Some(prefix.clone());
        prefix
    }

    /// Creates a database user per function with exactly the grants `evtrack db grants`
    /// prints for this database, and returns their URLs.
    pub async fn function_users(&self) -> FunctionUsers {
        use evtrack::store::grants;
        let prefix = self.users_prefix();
        let passwords: Vec<(&str, String)> =
            grants::all_functions().map(|function| (function, Uuid::now_v7().simple().to_string())).collect();
        for statement in grants::create_user_statements(&prefix, &passwords)
            .into_iter()
            .chain(grants::grant_statements(&self.name, &prefix))
        {
            self.execute(&statement).await;
        }
        // The server this database is reached through (a test's proxy, perhaps).
        let opts = mysql_async::Opts::from_url(self.url.expose()).expect("database url");
        let (host, port) = (opts.ip_or_hostname().to_string(), opts.tcp_port());
        let urls = passwords
            .into_iter()
            .map(|(function, password)| {
                let user = grants::user_name(&prefix, function);
                let url = format!("mysql://{user}:{password}@{host}:{port}/{}?prefer_socket=false", self.name);
                (function, Secret::new(url))
            })
            .collect();
        FunctionUsers { urls }
    }

    pub async fn query<T: mysql_async::prelude::FromRow + Send + 'static>(&self, sql: &str) -> Vec<T> {
        let mut conn = self.pool.get_conn().await.expect("test connection");
        conn.query(sql).await.unwrap_or_else(|err| panic!("{sql}: {err}"))
    }

    /// Runs a statement (to set up a state, e.g. move a time into the past).
    pub async fn execute(&self, sql: &str) {
        let mut conn = self.pool.get_conn().await.expect("connection");
        conn.query_drop(sql).await.unwrap_or_else(|err| panic!("{sql}: {err}"));
    }

    pub async fn count(&self, table_and_condition: &str) -> u64 {
        let rows: Vec<u64> = self.query(&format!("SELECT COUNT(*) FROM {table_and_condition}")).await;
        rows[0]
    }
}

/// Drops a database from a `Drop` impl, which runs outside async: a small runtime on its
/// own thread does it.
fn drop_database_blocking(url: Secret<String>, users_prefix: Option<String>) {
    let _ = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            runtime.block_on(async {
                Store::drop_database(&url).await.ok();
                if let Some(prefix) = users_prefix {
                    drop_users(&prefix).await;
                }
            });
        }
    })
    .join();
}

async fn drop_users(prefix: &str) {
    let Ok(mut conn) = mysql_async::Conn::from_url(database_server_url()).await else { return };
    for function in evtrack::store::grants::all_functions() {
        let user = evtrack::store::grants::user_name(prefix, function);
        conn.query_drop(format!("DROP USER IF EXISTS '{user}'@'%'")).await.ok();
    }
    conn.disconnect().await.ok();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let users = self.users.lock().map(|mut users| users.take()).unwrap_or_default();
        drop_database_blocking(Secret::new(format!("{}/{}", database_server_url(), self.name)), users);
    }
}

/// Test settings: the development pepper, a per-test database, rate limiting off unless set.
pub fn config(db: &TestDb, overrides: &[(&str, &str)]) -> Config {
    let mut pairs: Vec<(&str, &str)> = vec![
        ("EVTRACK_DATABASE_URL", db.url.expose()),
        ("EVTRACK_RATE_LIMIT_EVENTS_PER_SECOND", "0"),
        ("EVTRACK_QUEUE_SEND_TIMEOUT_MS", "500"),
        // Every test sends from 203.0.113.77 and shares Redis: their 401s counted together
        // would throttle each other. The throttle's own test turns it on.
        ("EVTRACK_AUTH_FAILURES_PER_MINUTE", "0"),
    ];
    let redis = redis_url();
    pairs.push(("EVTRACK_REDIS_URL", &redis));
    pairs.extend_from_slice(overrides);
    // Later pairs win: reverse so that `find` sees overrides first.
    pairs.reverse();
    Config::with_overrides(&pairs).expect("test config")
}

/// A new key (the key service's own path), with the scope's default lifetime.
pub async fn issue_key(
    store: &Store,
    config: &Config,
    project: Option<Uuid>,
    scope: Scope,
    name: &str,
) -> (evtrack::store::KeyInfo, evtrack::keys::ApiKey) {
    let request = evtrack::keys::NewKeyRequest { project, scope, name, expiry: Expiry::Default };
    evtrack::keys::KeyService::new(store.clone(), config).create(request).await.expect("key")
}

/// A project and its write key in `db`.
pub async fn project_with_key(db: &TestDb, config: &Config, scope: Scope) -> (Uuid, String) {
    let project = db.store.create_project("test project").await.expect("project");
    let (_, key) = issue_key(&db.store, config, Some(project.id), scope, "test").await;
    (project.id, key.reveal().to_string())
}

/// Ingest and consumer over one test database, with the in-process queue.
pub struct TestApp {
    pub db: TestDb,
    /// The read side's statements the api ran.
    pub reads: evtrack::store::ReadLog,
    pub config: Config,
    pub router: Router,
    pub consumer: Consumer,
    pub project: Uuid,
    pub key: String,
    /// An admin key (no project).
    pub admin: String,
    pub keyring: Arc<Keyring>,
    /// The scheduled jobs, in process, each as its own database user.
    pub jobs: JobRunners,
    queued: tokio::sync::Mutex<mpsc::Receiver<QueuedMessage>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub json: Value,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with(TestDb::new().await, &[]).await
    }

    pub async fn with(db: TestDb, overrides: &[(&str, &str)]) -> Self {
        let config = config(&db, overrides);
        let (project, key) = project_with_key(&db, &config, Scope::Write).await;
        let (queue, receiver) = local::channel(config.local_queue_capacity, config.queue_send_timeout);
        // Every function runs as its own database user, with the grants it has on AWS: a
        // statement outside them fails the test that needs it.
        let users = db.function_users().await;
        let ingest = Arc::new(Ingest::new(&config, users.store("ingest"), EventQueue::Local(queue)));
        let consumer = Consumer::new(users.store("consumer"), &config);
        let (_, admin) = issue_key(&db.store, &config, None, Scope::Admin, "admin").await;
        // The api's read statements are recorded, for the test that checks their plans.
        let (api_store, reads) = users.store("api").recording_reads();
        let keyring = Arc::new(Keyring::from_config(api_store.clone(), &config).expect("keyring"));
        let jobs = job_runners(&users, &config);
        let api = Arc::new(evtrack_api::Api::new(&config, api_store, keyring.clone(), jobs.clone()));
        Self {
            reads,
            // As `evtrack up` serves them: the api's routes, everything else to ingest.
            router: evtrack_api::router(api).fallback_service(evtrack_ingest::router(ingest)),
            consumer,
            config,
            project,
            key,
            admin: admin.reveal().to_string(),
            keyring,
            jobs,
            db,
            queued: tokio::sync::Mutex::new(receiver),
        }
    }

    /// Sends a request through the ingest and api routers, as from 203.0.113.77.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        send(&self.router, request).await
    }

    /// Everything queued so far, as SQS messages.
    pub async fn take_queued(&self) -> Vec<QueuedMessage> {
        let mut receiver = self.queued.lock().await;
        let mut messages = Vec::new();
        while let Ok(message) = receiver.try_recv() {
            messages.push(message);
        }
        messages
    }

    /// Sends PostHog's `events` (a `/batch/` with the app's key) and stores what they queue.
    pub async fn store_posthog(&self, events: Value) {
        let body = serde_json::json!({"api_key": self.key, "batch": events});
        let reply = self.send(post_json("/batch/", None, &body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        assert!(self.consume_queued().await.is_empty(), "every message stored");
    }

    /// Runs the consumer on everything queued; returns the ids it reported as failed.
    pub async fn consume_queued(&self) -> Vec<String> {
        let messages = self.take_queued().await;
        self.deliver(&messages).await
    }

    /// Delivers messages to the consumer handler as SQS would; returns the failed ids.
    pub async fn deliver(&self, messages: &[QueuedMessage]) -> Vec<String> {
        let response = self.consumer.handle(sqs_event(messages)).await;
        response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect()
    }
}

/// The scheduled jobs in this process, each as its own database user.
pub fn job_runners(users: &FunctionUsers, config: &Config) -> JobRunners {
    evtrack_cleanup::runners(users.store("cleanup"), config).with(
        evtrack_rotate_keys::JOB,
        evtrack_rotate_keys::in_process(users.store("rotate-keys"), config).expect("keyring"),
    )
}

pub async fn send(router: &Router, request: Request<Body>) -> Reply {
    send_from(router, std::net::IpAddr::from([203, 0, 113, 77]), request).await
}

/// Sends a request through `router` as from `ip`.
pub async fn send_from(router: &Router, ip: std::net::IpAddr, mut request: Request<Body>) -> Reply {
    request.extensions_mut().insert(ConnectInfo(SocketAddr::new(ip, 50_000)));
    let response = router.clone().oneshot(request).await.expect("router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Reply { status, headers, json }
}

/// An error body without its `request_id` (each answer's own), to compare bodies.
pub fn without_request_id(mut body: Value) -> Value {
    let id = body.as_object_mut().and_then(|object| object.remove("request_id"));
    assert!(id.is_some_and(|id| id.is_string()), "an error body carries its request id");
    body
}

/// Queued messages as the SQS event Lambda would deliver.
pub fn sqs_event(messages: &[QueuedMessage]) -> SqsEvent {
    sqs::lambda_event(messages.iter().map(QueuedMessage::lambda_record))
}

/// Messages received from SQS, as the event Lambda would deliver.
pub fn sqs_event_of(messages: &[aws_sdk_sqs::types::Message]) -> SqsEvent {
    sqs::lambda_event(messages.iter().map(|m| sqs_message(m.message_id().unwrap_or_default(), m.body())))
}

pub fn sqs_message(id: &str, body: Option<&str>) -> SqsMessage {
    sqs::lambda_record(id, body, 1)
}

/// `n` Segment track messages with messageIds `{prefix}-0`…, each padded by `padding` bytes.
pub fn track_messages(n: usize, prefix: &str, padding: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            serde_json::json!({"type": "track", "event": "E", "userId": "u", "messageId": format!("{prefix}-{i}"),
                               "properties": {"padding": "p".repeat(padding)}})
        })
        .collect()
}

/// A JSON POST with optional Basic auth.
pub fn post_json(path: &str, basic_key: Option<&str>, body: &Value) -> Request<Body> {
    post_bytes(path, basic_key, "application/json", None, body.to_string().into_bytes())
}

pub fn post_bytes(
    path: &str,
    basic_key: Option<&str>,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> Request<Body> {
    use base64::Engine;
    let mut builder = Request::post(path).header(http::header::CONTENT_TYPE, content_type);
    if let Some(key) = basic_key {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        builder = builder.header(http::header::AUTHORIZATION, format!("Basic {credentials}"));
    }
    if let Some(encoding) = encoding {
        builder = builder.header(http::header::CONTENT_ENCODING, encoding);
    }
    builder.body(Body::from(body)).expect("valid request")
}

/// An api request with `Authorization: Bearer <key>` and an optional JSON body.
pub fn api_request(method: &str, path: &str, key: &str, body: Option<&Value>) -> Request<Body> {
    let builder = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::AUTHORIZATION, format!("Bearer {key}"))
        .header(http::header::CONTENT_TYPE, "application/json");
    builder.body(body.map_or_else(Body::empty, |body| Body::from(body.to_string()))).expect("valid request")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("in memory");
    encoder.finish().expect("in memory")
}

/// An SQS client for the test endpoint, with dummy credentials.
pub fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::config::Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "tests"))
        .timeout_config(
            aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                .operation_timeout(std::time::Duration::from_secs(5))
                .build(),
        )
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// A fresh queue on the test endpoint (moto slows down as a queue fills).
pub async fn fresh_queue(client: &aws_sdk_sqs::Client) -> String {
    let name = format!("evtrack-test-{}", Uuid::now_v7().simple());
    let output = client.create_queue().queue_name(name).send().await.unwrap_or_else(|err| {
        panic!("SQS endpoint {} must be running: {}", sqs_endpoint(), aws_sdk_sqs::error::DisplayErrorContext(&err))
    });
    output.queue_url.expect("queue url")
}

pub fn sqs_queue(client: &aws_sdk_sqs::Client, queue_url: &str) -> SqsQueue {
    SqsQueue::new(client.clone(), queue_url, 1024 * 1024)
}

/// Receives until the queue answers empty.
pub async fn receive_all(client: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    loop {
        let output = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            return all;
        }
        all.extend(messages);
    }
}

/// A binary of this workspace, built by `cargo build --bins` (the test command does that).
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let test_exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/integration-… → target/<profile>/<name>
    let profile_dir = test_exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let path = profile_dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --bins` first (infra/dev.sh test does)", path.display());
    path
}

/// `evtrack up` running as a process on a database of its own, as a user runs it.
pub struct StackProcess {
    child: std::process::Child,
    pub address: String,
    pub key: String,
    pub admin_key: String,
    pub database_url: String,
    /// Where the stack's logs (stderr) go.
    pub log_path: std::path::PathBuf,
    output: Option<std::thread::JoinHandle<Vec<String>>>,
    /// Dropped with the stack (else a `TestDb`'s, which drops it).
    owns_database: bool,
}

impl StackProcess {
    pub fn start(extra_env: &[(&str, &str)]) -> Self {
        let name = format!("evtrack_test_up_{}", Uuid::now_v7().simple());
        Self::launch(&name, extra_env, None)
    }

    /// `evtrack up` on `db`'s database, which must hold no project yet (the stack makes its
    /// own, and prints its keys); the database stays `db`'s.
    pub fn on(db: &TestDb, extra_env: &[(&str, &str)]) -> Self {
        let mut stack = Self::launch(&db.name, extra_env, None);
        stack.owns_database = false;
        stack
    }

    /// Stops the stack (Ctrl-C) and starts it again on the same database, with other
    /// settings (as an operator does after changing one); its keys stay.
    pub fn restart(&mut self, extra_env: &[(&str, &str)]) {
        let (exit, _) = self.interrupt();
        assert!(exit.success(), "evtrack up stopped cleanly");
        self.relaunch(extra_env);
    }

    /// Kills the stack with SIGKILL (no chance to store what it holds) and starts it again on
    /// the same database and queue journal; returns how many events were stored at the kill.
    pub async fn crash_and_restart(&mut self, extra_env: &[(&str, &str)]) -> u64 {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
        let stored = self.count("SELECT COUNT(*) FROM events").await;
        self.relaunch(extra_env);
        stored
    }

    /// A new process on this stack's database, queue journal and keys, in place of this one.
    fn relaunch(&mut self, extra_env: &[(&str, &str)]) {
        let name: String =
            self.database_url.rsplit('/').next().and_then(|tail| tail.split('?').next()).expect("name").into();
        let mut next = Self::launch(&name, extra_env, Some((self.key.clone(), self.admin_key.clone())));
        next.owns_database = self.owns_database;
        // The stopped process's value goes without its `Drop`, which would drop the database.
        std::fs::remove_file(&self.log_path).ok();
        std::mem::forget(std::mem::replace(self, next));
    }

    fn launch(name: &str, extra_env: &[(&str, &str)], keys: Option<(String, String)>) -> Self {
        use std::io::{BufRead, BufReader};
        let database_url = format!("{}/{name}?prefer_socket=false", database_server_url());
        // The queue journal of this stack (kept across its restarts).
        let queue_dir = std::env::temp_dir().join(format!("{name}-queue"));
        let log_path = std::env::temp_dir().join(format!("{name}-{}.log", &Uuid::now_v7().simple().to_string()[20..]));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = std::process::Command::new(workspace_binary("evtrack"));
        command
            .arg("up")
            .env("EVTRACK_DATABASE_URL", &database_url)
            .env("EVTRACK_LISTEN", "127.0.0.1:0")
            .env("EVTRACK_REDIS_URL", redis_url())
            .env("EVTRACK_LOCAL_QUEUE_DIR", &queue_dir)
            // Stacks share 127.0.0.1 and Redis (and the OpenAPI tests send bad keys by design).
            .env("EVTRACK_AUTH_FAILURES_PER_MINUTE", "0")
            .env_remove("EVTRACK_SQS_QUEUE_URL")
            .stdout(std::process::Stdio::piped())
            .stderr(log);
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("evtrack up starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut address, mut key, mut admin_key) = (None, None, None);
        // The start-up banner ends with the queue line.
        loop {
            let line = lines.next().expect("evtrack up printed its address and keys").expect("line");
            if line.starts_with("queue: ") {
                break;
            }
            if let Some(rest) = line.strip_prefix("evtrack is listening on ") {
                address = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("write key (shown once; keep it): ") {
                key = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("admin key (shown once; keep it): ") {
                admin_key = Some(rest.trim().to_string());
            }
        }
        let output = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
        // Keys are printed on the first start only.
        let (key, admin_key) = match keys {
            Some(keys) => keys,
            None => (key.expect("key"), admin_key.expect("admin key")),
        };
        Self {
            child,
            address: address.expect("address"),
            key,
            admin_key,
            database_url,
            log_path,
            output: Some(output),
            owns_database: true,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGINT (Ctrl-C) and waits up to a minute for the exit; returns the exit
    /// status and everything printed after start-up.
    pub fn interrupt(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status =
            std::process::Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let started = std::time::Instant::now();
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                break exit;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(60), "evtrack up did not exit after Ctrl-C");
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let output = self.output.take().map(|reader| reader.join().expect("stdout reader")).unwrap_or_default();
        (exit, output)
    }

    /// The id of the stack's project, from the admin API.
    pub async fn project_id(&self) -> String {
        let projects: Value = reqwest::Client::new()
            .get(format!("{}/v1/projects", self.address))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("projects")
            .json()
            .await
            .expect("json");
        projects["data"][0]["id"].as_str().expect("the stack's project").to_string()
    }

    /// A new read key of the stack's project, made through the admin API.
    pub async fn read_key(&self, name: &str) -> String {
        let client = reqwest::Client::new();
        let admin = format!("Bearer {}", self.admin_key);
        let project = self.project_id().await;
        let key: Value = client
            .post(format!("{}/v1/keys", self.address))
            .header("authorization", &admin)
            .json(&serde_json::json!({"project": project, "scope": "read", "name": name}))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("a read key")
            .json()
            .await
            .expect("json");
        key["key"].as_str().expect("key").to_string()
    }

    /// One number from the stack's database.
    pub async fn count(&self, sql: &str) -> u64 {
        let pool = mysql_async::Pool::new(self.database_url.as_str());
        let mut conn = pool.get_conn().await.expect("connection");
        let count: Option<u64> = conn.query_first(sql).await.unwrap_or_else(|err| panic!("{sql}: {err}"));
        drop(conn);
        pool.disconnect().await.ok();
        count.unwrap_or_default()
    }

    /// Polls `sql` until it returns `expected` or `timeout` passes; returns the last value.
    pub async fn wait_for_count(&self, sql: &str, expected: u64, timeout: std::time::Duration) -> u64 {
        let started = std::time::Instant::now();
        loop {
            let count = self.count(sql).await;
            if count == expected || started.elapsed() > timeout {
                return count;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl Drop for StackProcess {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_file(&self.log_path).ok();
        if let Some(name) = self.database_url.rsplit('/').next().and_then(|tail| tail.split('?').next()) {
            std::fs::remove_dir_all(std::env::temp_dir().join(format!("{name}-queue"))).ok();
        }
        if self.owns_database {
            drop_database_blocking(Secret::new(self.database_url.clone()), None);
        }
    }
}

/// A memory figure of a process in KiB, from /proc: `VmRSS` (now) or `VmHWM` (peak).
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("{field} missing from /proc/{pid}/status"))
}

/// Ingest over a fresh moto queue: the router, the SQS client and the queue URL.
pub async fn ingest_over_sqs(db: &TestDb) -> (Router, String, aws_sdk_sqs::Client, String) {
    let config = config(db, &[]);
    let (_, key) = project_with_key(db, &config, Scope::Write).await;
    let client = sqs_client(&sqs_endpoint());
    let queue_url = fresh_queue(&client).await;
    let queue = EventQueue::Sqs(sqs_queue(&client, &queue_url));
    let router = evtrack_ingest::router(Arc::new(Ingest::new(&config, db.store.clone(), queue)));
    (router, key, client, queue_url)
}

/// Checks a CloudWatch Embedded Metric Format line against the format's rules (the
/// specification's schema): `_aws.Timestamp` in milliseconds, directives with a namespace,
/// dimension sets of at most 30 names and at most 100 metrics with valid units, and every
/// dimension a top-level string member, every metric a top-level number.
pub fn check_emf(line: &Value) -> Result<(), String> {
    const UNITS: [&str; 27] = [
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];
    let name_ok = |name: &Value| name.as_str().is_some_and(|name| (1..=255).contains(&name.len()));
    let root = line.as_object().ok_or("not a JSON object")?;
    let aws = root.get("_aws").and_then(Value::as_object).ok_or("no _aws object")?;
    let timestamp = aws.get("Timestamp").and_then(Value::as_i64).ok_or("_aws.Timestamp is not an integer")?;
    let now = chrono::Utc::now().timestamp_millis();
    if (now - timestamp).abs() > 2 * 3600 * 1000 {
        return Err(format!("Timestamp {timestamp} is not milliseconds near now"));
    }
    let directives = aws.get("CloudWatchMetrics").and_then(Value::as_array).ok_or("no CloudWatchMetrics array")?;
    if directives.is_empty() {
        return Err("no metric directive".into());
    }
    for directive in directives {
        if !directive["Namespace"].as_str().is_some_and(|ns| (1..=255).contains(&ns.len())) {
            return Err(format!("bad Namespace in {directive}"));
        }
        let sets = directive["Dimensions"].as_array().filter(|sets| !sets.is_empty()).ok_or("no Dimensions")?;
        for set in sets {
            let names = set.as_array().ok_or("a dimension set is not an array")?;
            if names.len() > 30 {
                return Err(format!("{} dimensions in one set", names.len()));
            }
            for name in names {
                if !name_ok(name) || !root.get(name.as_str().unwrap_or_default()).is_some_and(Value::is_string) {
                    return Err(format!("dimension {name} is not a top-level string member"));
                }
            }
        }
        let metrics =
            directive["Metrics"].as_array().filter(|m| (1..=100).contains(&m.len())).ok_or("1-100 Metrics")?;
        for metric in metrics {
            let name = &metric["Name"];
            let value = root.get(name.as_str().unwrap_or_default());
            if !name_ok(name) || !value.is_some_and(|value| value.as_f64().is_some_and(f64::is_finite)) {
                return Err(format!("metric {name} is not a top-level finite number"));
            }
            if let Some(unit) = metric.get("Unit")
                && !unit.as_str().is_some_and(|unit| UNITS.contains(&unit))
            {
                return Err(format!("unit {unit} is not a CloudWatch unit"));
            }
        }
    }
    Ok(())
}
