//! The queue between ingest and the consumer. Ingest sends envelopes (`envelope`); on AWS
//! they go to SQS (`sqs`), on one machine through a bounded in-process channel (`local`)
//! whose fullness pushes back on ingest instead of growing without bound.

pub mod envelope;
#[cfg(feature = "adapters")]
pub mod journal;
#[cfg(feature = "adapters")]
pub mod local;
#[cfg(feature = "adapters")]
pub mod sqs;

pub use envelope::{Envelope, EnvelopeSeal};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("queue full: no room within {0:?}")]
    Full(std::time::Duration),
}

/// Where ingest sends envelopes.
#[cfg(feature = "adapters")]
pub enum EventQueue {
    Sqs(sqs::SqsQueue),
    Local(local::LocalQueue),
}

#[cfg(feature = "adapters")]
impl EventQueue {
    /// Sends every body, or fails; a failure may leave some bodies sent (the client's retry
    /// is deduplicated downstream by messageId). `trace_header` (the request's X-Ray trace)
    /// travels with SQS messages as their `AWSTraceHeader`, to the consumer's logs.
    pub async fn send_all(&self, bodies: Vec<String>, trace_header: Option<&str>) -> Result<(), QueueError> {
        match self {
            EventQueue::Sqs(queue) => queue.send_all(bodies, trace_header).await,
            EventQueue::Local(queue) => queue.send_all(bodies).await,
        }
    }
}
