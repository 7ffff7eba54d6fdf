//! The ingest Lambda: API Gateway HTTP API → the ingest router → SQS.

use evtrack::Config;
use evtrack::config::Required;
use evtrack::queue::{EventQueue, sqs};
use evtrack::store::Store;
use evtrack::telemetry::{LogFormat, init};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init(LogFormat::Json);
    let config = Config::from_env_and_secrets().await?;
    config.require(&[Required::DatabaseUrl, Required::KeyPepper])?;
    let queue_url = config.sqs_queue_url.clone().ok_or("EVTRACK_SQS_QUEUE_URL is not set")?;
    let queue = sqs::SqsQueue::new(sqs::client_from_env().await, queue_url, config.limits.max_queue_batch_bytes);
    let store = Store::from_config(&config)?;
    let ingest = Arc::new(evtrack_ingest::Ingest::new(&config, store, EventQueue::Sqs(queue)));
    lambda_http::run(evtrack_ingest::router(ingest)).await
}
