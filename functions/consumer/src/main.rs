//! The consumer Lambda: SQS event source → store. Needs `ReportBatchItemFailures` on the
//! event source mapping, or a single failure makes SQS redeliver the whole batch.

use aws_lambda_events::event::sqs::SqsEvent;
use evtrack::Config;
use evtrack::config::Required;
use evtrack::store::Store;
use evtrack::telemetry::{LogFormat, init};
use evtrack_consumer::Consumer;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init(LogFormat::Json);
    let config = Config::from_env_and_secrets().await?;
    // The pepper keys the hashes of the erasure suppression list.
    config.require(&[Required::DatabaseUrl, Required::KeyPepper])?;
    let store = Store::from_config(&config)?;
    let consumer = Consumer::new(store, &config);
    let consumer = &consumer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(consumer.handle(event.payload).await)
    }))
    .await
}
