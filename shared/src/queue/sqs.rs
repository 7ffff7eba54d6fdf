//! The SQS adapter. SendMessageBatch takes at most 10 entries, and entries can fail one by
//! one inside a successful call: every entry is checked, and failed ones are sent again.

use super::QueueError;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    MessageSystemAttributeNameForSends, MessageSystemAttributeValue, SendMessageBatchRequestEntry,
};
use futures::future::join_all;
use std::time::Duration;

const ENTRIES_PER_CALL: usize = 10;
const ATTEMPTS: u32 = 3;

#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    max_batch_bytes: usize,
}

/// A client from the environment (region, credentials, `AWS_ENDPOINT_URL_SQS`), with
/// timeouts short enough for a request path.
pub async fn client_from_env() -> Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(12))
        .build();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts).load().await;
    Client::new(&config)
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>, max_batch_bytes: usize) -> Self {
        Self { client, queue_url: queue_url.into(), max_batch_bytes }
    }

    pub async fn send_all(&self, bodies: Vec<String>, trace_header: Option<&str>) -> Result<(), QueueError> {
        let calls = group_into_calls(bodies, self.max_batch_bytes);
        let results = join_all(calls.into_iter().map(|entries| self.send_call(entries, trace_header))).await;
        results.into_iter().collect()
    }

    /// One SendMessageBatch, repeated for the entries that failed.
    async fn send_call(&self, bodies: Vec<String>, trace_header: Option<&str>) -> Result<(), QueueError> {
        let trace = trace_header
            .map(|header| MessageSystemAttributeValue::builder().data_type("String").string_value(header).build())
            .transpose()
            .map_err(|err| QueueError::Unavailable(err.to_string()))?;
        let mut pending: Vec<(String, String)> =
            bodies.into_iter().enumerate().map(|(i, body)| (i.to_string(), body)).collect();
        let mut last_error = String::new();
        for attempt in 1..=ATTEMPTS {
            let entries = pending
                .iter()
                .map(|(id, body)| {
                    let entry = SendMessageBatchRequestEntry::builder().id(id).message_body(body);
                    match &trace {
                        Some(trace) => entry.message_system_attributes(
                            MessageSystemAttributeNameForSends::AwsTraceHeader,
                            trace.clone(),
                        ),
                        None => entry,
                    }
                    .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| QueueError::Unavailable(err.to_string()))?;
            match self.client.send_message_batch().queue_url(&self.queue_url).set_entries(Some(entries)).send().await {
                Ok(output) => {
                    let failed = output.failed();
                    if failed.is_empty() {
                        return Ok(());
                    }
                    last_error = failed
                        .iter()
                        .map(|entry| format!("{}: {}", entry.code(), entry.message().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join("; ");
                    pending.retain(|(id, _)| failed.iter().any(|entry| entry.id() == id));
                }
                Err(err) => {
                    last_error = aws_sdk_sqs::error::DisplayErrorContext(&err).to_string();
                }
            }
            tracing::warn!(attempt, error = %last_error, "SendMessageBatch incomplete; retrying");
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
        }
        Err(QueueError::Unavailable(last_error))
    }
}

/// One SQS record as Lambda's event source mapping delivers it to the consumer: the local
/// stack (from its queues) and the tests build their SQS events with it.
pub fn lambda_record(id: &str, body: Option<&str>, receive_count: u32) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = Some(id.to_string());
    record.body = body.map(str::to_string);
    record.attributes.insert("ApproximateReceiveCount".into(), receive_count.to_string());
    record
}

/// The SQS event of `records`.
pub fn lambda_event(records: impl IntoIterator<Item = SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records.into_iter().collect();
    event
}

/// Groups bodies into calls of at most 10 entries and `max_batch_bytes` in total.
fn group_into_calls(bodies: Vec<String>, max_batch_bytes: usize) -> Vec<Vec<String>> {
    let mut calls: Vec<Vec<String>> = Vec::new();
    let mut bytes = 0;
    for body in bodies {
        let fits =
            calls.last().is_some_and(|call| call.len() < ENTRIES_PER_CALL && bytes + body.len() <= max_batch_bytes);
        if !fits {
            calls.push(Vec::new());
            bytes = 0;
        }
        bytes += body.len();
        if let Some(call) = calls.last_mut() {
            call.push(body);
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_hold_at_most_ten_entries_and_the_byte_limit() {
        let bodies: Vec<String> = (0..23).map(|_| "x".repeat(100)).collect();
        let sizes: Vec<usize> = group_into_calls(bodies, 1_000_000).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![10, 10, 3]);
        let bodies: Vec<String> = (0..5).map(|_| "x".repeat(400)).collect();
        let sizes: Vec<usize> = group_into_calls(bodies, 1000).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }
}
