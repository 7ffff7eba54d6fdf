//! The in-process queue of the local stack: a bounded channel. When the consumer falls
//! behind, ingest waits for room (then answers 503), so memory stays bounded.

use super::QueueError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// A message as the consumer receives it, like an SQS record.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub id: String,
    pub body: String,
    /// Deliveries so far, counting this one.
    pub receive_count: u32,
}

impl QueuedMessage {
    /// The message as the SQS event Lambda would deliver carries it.
    pub fn lambda_record(&self) -> aws_lambda_events::event::sqs::SqsMessage {
        super::sqs::lambda_record(&self.id, Some(&self.body), self.receive_count)
    }
}

pub struct LocalQueue {
    sender: mpsc::Sender<QueuedMessage>,
    send_timeout: Duration,
    next_id: AtomicU64,
}

pub fn channel(capacity: usize, send_timeout: Duration) -> (LocalQueue, mpsc::Receiver<QueuedMessage>) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    (LocalQueue { sender, send_timeout, next_id: AtomicU64::new(1) }, receiver)
}

impl LocalQueue {
    /// Queues all bodies or none: room for all of them is reserved first.
    pub async fn send_all(&self, bodies: Vec<String>) -> Result<(), QueueError> {
        if bodies.is_empty() {
            return Ok(());
        }
        if bodies.len() > self.sender.max_capacity() {
            return Err(QueueError::Unavailable("request needs more messages than the queue holds".into()));
        }
        let permits = match tokio::time::timeout(self.send_timeout, self.sender.reserve_many(bodies.len())).await {
            Ok(Ok(permits)) => permits,
            Ok(Err(_)) => return Err(QueueError::Unavailable("the consumer has stopped".into())),
            Err(_) => return Err(QueueError::Full(self.send_timeout)),
        };
        for (permit, body) in permits.zip(bodies) {
            let id = format!("local-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
            permit.send(QueuedMessage { id, body, receive_count: 1 });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_after_the_timeout() {
        let (queue, mut receiver) = channel(2, Duration::from_millis(20));
        queue.send_all(vec!["a".into(), "b".into()]).await.expect("room for two");
        assert!(matches!(queue.send_all(vec!["c".into()]).await, Err(QueueError::Full(_))));
        assert_eq!(receiver.recv().await.map(|m| m.body), Some("a".to_string()));
        queue.send_all(vec!["c".into()]).await.expect("room again");
    }
}
