//! `evtrack up`: the whole system on one machine. Ingest and the api serve the very routers
//! their Lambdas run, on one port; scheduled jobs are fired on their schedules as
//! EventBridge Scheduler would (through the same job ledger); the consumer drains an in-process queue (or long-polls SQS when
//! EVTRACK_SQS_QUEUE_URL is set, deleting only what the consumer reports done, as Lambda's
//! event source mapping does). Ctrl-C stops accepting, then drains: nothing accepted is lost.

use crate::toolbox::{jobs, keyring, open_store};
use anyhow::Context;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use evtrack::Config;
use evtrack::config::{JOB_NAMES, Required, job_period};
use evtrack::jobs::JobRunners;
use evtrack::jobs::Trigger;
use evtrack::keys::{Expiry, KeyService, NewKeyRequest, Scope};
use evtrack::queue::journal::Journal;
use evtrack::queue::local::{self, QueuedMessage};
use evtrack::queue::{EventQueue, sqs};
use evtrack::store::Store;
use evtrack_api::Api;
use evtrack_consumer::Consumer;
use evtrack_ingest::Ingest;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc, watch};

/// Messages per consumer call, as Lambda's default SQS batch size.
const BATCH_SIZE: usize = 10;
/// Concurrent consumer calls (Lambda would run several instances). Four keep two cores busy:
/// while one batch waits on the database, another is being decoded (BENCHMARKS.md).
pub const CONSUMERS: usize = 4;
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

pub async fn up(config: Config) -> anyhow::Result<()> {
    // Keys it makes (the first project's, the api's) and signing keys rotate-keys adds would be
    // hashed and sealed with the public development secrets.
    crate::commands::refuse_development_secrets(&config, &[Required::KeyPepper, Required::MasterKeys])?;
    // One connection per consumer worker, and some for ingest's key checks.
    let config = Config { database_pool_max: config.database_pool_max.max(CONSUMERS + 2), ..config };
    let store = open_store(&config).await?;
    warn_if_redis_is_down(&config).await;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (set EVTRACK_LISTEN)", config.listen))?;
    let address = listener.local_addr()?;
    println!("evtrack is listening on http://{address}");
    introduce_project(&store, &config, address).await?;
    let jobs = jobs(&store, &config).await?;
    let api = Arc::new(Api::new(&config, store.clone(), keyring(&store, &config).await?, jobs.clone()));
    let schedules = tokio::spawn(fire_schedules(jobs));
    let consumer = Arc::new(Consumer::new(store.clone(), &config));
    match config.sqs_queue_url.clone() {
        None => {
            let (capacity, timeout) = (config.local_queue_capacity, config.queue_send_timeout);
            let (queue, receiver, journal, held) = match &config.local_queue_dir {
                Some(dir) => {
                    let durable = local::durable(dir, capacity, timeout)
                        .with_context(|| format!("cannot open the queue journal in {}", dir.display()))?;
                    (durable.queue, durable.receiver, Some(durable.journal), durable.held)
                }
                None => {
                    let (queue, receiver) = local::channel(capacity, timeout);
                    (queue, receiver, None, Vec::new())
                }
            };
            let drain = tokio::spawn(drain_local_queue(receiver, consumer, journal));
            if !held.is_empty() {
                println!("queue journal: {} messages from before the last stop, delivering them again", held.len());
                tokio::spawn(queue.redeliver(held));
            }
            let ingest = Arc::new(Ingest::new(&config, store.clone(), EventQueue::Local(queue)));
            match &config.local_queue_dir {
                Some(dir) => println!(
                    "queue: in-process, journaled in {} (capacity {capacity} messages); consumer: {CONSUMERS} workers",
                    dir.display()
                ),
                None => println!(
                    "queue: in-process, in memory (capacity {capacity} messages); consumer: {CONSUMERS} workers"
                ),
            }
            serve(listener, ingest, api).await?;
            schedules.abort();
            println!("stopped accepting events; storing what is queued…");
            drain.await?;
        }
        Some(queue_url) => {
            let client = sqs::client_from_env().await;
            let queue = sqs::SqsQueue::new(client.clone(), &queue_url, config.limits.max_queue_batch_bytes);
            let ingest = Arc::new(Ingest::new(&config, store.clone(), EventQueue::Sqs(queue)));
            let (stop, stopped) = watch::channel(false);
            let poller = tokio::spawn(poll_sqs(client, queue_url.clone(), consumer, stopped));
            println!("queue: SQS {queue_url}");
            serve(listener, ingest, api).await?;
            schedules.abort();
            stop.send(true).ok();
            poller.await?;
        }
    }
    println!("all accepted events are stored; bye");
    store.close().await;
    Ok(())
}

/// The api's routes, and ingest's for everything else (as API Gateway routes them on AWS).
pub fn app(ingest: Arc<Ingest>, api: Arc<Api>) -> axum::Router {
    evtrack_api::router(api).fallback_service(evtrack_ingest::router(ingest))
}

async fn serve(listener: TcpListener, ingest: Arc<Ingest>, api: Arc<Api>) -> anyhow::Result<()> {
    let app = app(ingest, api).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = interrupt => {}
        _ = async { match terminate.as_mut() { Some(signal) => { signal.recv().await; } None => std::future::pending().await } } => {}
    }
}

async fn warn_if_redis_is_down(config: &Config) {
    let Some(url) = &config.redis_url else { return };
    let reachable = async {
        let client = redis::Client::open(url.expose().as_str()).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut connection).await.ok()
    };
    if tokio::time::timeout(Duration::from_secs(2), reachable).await.ok().flatten().is_none() {
        eprintln!(
            "warning: Redis is not reachable (EVTRACK_REDIS_URL); rate limiting falls back to this process.\n  \
             Start it with `infra/dev.sh services`, or `redis-server --daemonize yes`."
        );
    }
}

/// Fires each slot of every job's schedule (`job_period`), as EventBridge Scheduler does on
/// AWS: the current slot of every job on start (the ledger makes a repeat of a slot that
/// already ran do nothing), then each next one.
async fn fire_schedules(jobs: JobRunners) {
    // The last slot fired, per job of JOB_NAMES.
    let mut fired: [Option<i64>; JOB_NAMES.len()] = [None; JOB_NAMES.len()];
    loop {
        let now = chrono::Utc::now();
        for (name, last) in JOB_NAMES.into_iter().zip(&mut fired) {
            let period = job_period(name).num_seconds();
            let slot = now.timestamp() - now.timestamp().rem_euclid(period);
            if *last == Some(slot) {
                continue;
            }
            *last = Some(slot);
            let at = chrono::DateTime::from_timestamp(slot, 0).unwrap_or(now);
            if let Some(Err(err)) = jobs.run(name, Trigger::new(at, "local")).await {
                tracing::warn!(job = name, error = %err, "job failed; it resumes at its next slot");
            }
        }
        // The next minute: the shortest period.
        let next = 60 - chrono::Utc::now().timestamp().rem_euclid(60);
        tokio::time::sleep(Duration::from_secs(next as u64)).await;
    }
}

/// On first run, a development project with a write key and an admin key, printed with a
/// curl to try.
async fn introduce_project(store: &Store, config: &Config, address: SocketAddr) -> anyhow::Result<()> {
    let projects = store.list_projects().await?;
    if let Some(project) = projects.first() {
        println!("project {:?}: {}", project.name, project.id);
        println!("  a new write key: evtrack key create --project {}", project.id);
        println!("  a new admin key: evtrack admin-key create");
        return Ok(());
    }
    let project = store.create_project("Development").await?;
    let keys = KeyService::new(store.clone(), config);
    let new_key = |project, scope| NewKeyRequest { project, scope, name: "development", expiry: Expiry::Default };
    let (_, key) = keys.create(new_key(Some(project.id), Scope::Write)).await?;
    let (_, admin) = keys.create(new_key(None, Scope::Admin)).await?;
    println!("created project \"Development\": {}", project.id);
    println!("write key (shown once; keep it): {}", key.reveal());
    println!("admin key (shown once; keep it): {}", admin.reveal());
    println!("try it:");
    println!(
        "  curl -sS http://{address}/v1/track -u '{}:' -H 'Content-Type: application/json' \\\n    -d '{{\"userId\":\"user-1\",\"event\":\"Signed Up\",\"properties\":{{\"plan\":\"pro\"}}}}'",
        key.reveal()
    );
    println!("  curl -sS http://{address}/v1/projects -H 'Authorization: Bearer {}'", admin.reveal());
    Ok(())
}

/// Runs consumer workers until the queue is closed (ingest stopped) and empty.
pub async fn drain_local_queue(
    receiver: mpsc::Receiver<QueuedMessage>,
    consumer: Arc<Consumer>,
    journal: Option<Arc<Journal>>,
) {
    let receiver = Arc::new(Mutex::new(receiver));
    let workers: Vec<_> = (0..CONSUMERS)
        .map(|_| tokio::spawn(consume_local(receiver.clone(), consumer.clone(), journal.clone())))
        .collect();
    for worker in workers {
        worker.await.ok();
    }
}

async fn consume_local(
    receiver: Arc<Mutex<mpsc::Receiver<QueuedMessage>>>,
    consumer: Arc<Consumer>,
    journal: Option<Arc<Journal>>,
) {
    let mut batch = Vec::with_capacity(BATCH_SIZE);
    loop {
        batch.clear();
        if receiver.lock().await.recv_many(&mut batch, BATCH_SIZE).await == 0 {
            return;
        }
        let ids: Vec<String> = batch.iter().map(|message| message.id.clone()).collect();
        let mut pending = std::mem::take(&mut batch);
        let mut delay = Duration::from_millis(100);
        // Failed messages are delivered again until stored, like SQS without a DLQ: the
        // local queue has nowhere else to keep them. Holding them here is the backpressure.
        loop {
            let response = consumer.handle(sqs::lambda_event(pending.iter().map(QueuedMessage::lambda_record))).await;
            let failed: HashSet<String> =
                response.batch_item_failures.into_iter().map(|failure| failure.item_identifier).collect();
            pending.retain(|message| failed.contains(&message.id));
            if pending.is_empty() {
                break;
            }
            tracing::warn!(messages = pending.len(), retry_in_ms = delay.as_millis() as u64, "redelivering");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
            pending.iter_mut().for_each(|message| message.receive_count += 1);
        }
        // Stored (or kept as rejected): the journal may let go of them.
        if let Some(journal) = &journal
            && let Err(err) = journal.stored(&ids)
        {
            tracing::warn!(error = %err, "queue journal: a finished segment could not be deleted");
        }
    }
}

/// Long-polls SQS like Lambda's event source mapping: a batch to the consumer, then deletes
/// exactly the messages it did not report as failed.
async fn poll_sqs(
    client: aws_sdk_sqs::Client,
    queue_url: String,
    consumer: Arc<Consumer>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let receive = client
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(BATCH_SIZE as i32)
            .wait_time_seconds(5)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send();
        let output = tokio::select! {
            output = receive => output,
            _ = stop.changed() => break,
        };
        let messages = match output {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(err) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&err), "receive failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let event = sqs::lambda_event(messages.iter().map(|message| {
            let receive_count = message
                .attributes()
                .and_then(|attributes| attributes.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|count| count.parse().ok())
                .unwrap_or(1);
            sqs::lambda_record(message.message_id().unwrap_or_default(), message.body(), receive_count)
        }));
        let response = consumer.handle(event).await;
        let failed: HashSet<String> =
            response.batch_item_failures.into_iter().map(|failure| failure.item_identifier).collect();
        let done: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .filter(|(_, message)| !message.message_id.as_ref().is_some_and(|id| failed.contains(id)))
            .filter_map(|(index, message)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(message.receipt_handle.clone()?)
                    .build()
                    .ok()
            })
            .collect();
        if !done.is_empty()
            && let Err(err) = client.delete_message_batch().queue_url(&queue_url).set_entries(Some(done)).send().await
        {
            // Not deleted means delivered again: stored once all the same (idempotent).
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&err), "delete failed");
        }
    }
}
