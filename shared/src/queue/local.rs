//! The in-process queue of the local stack: a bounded channel, backed by a journal on disk
//! (`journal`) so that what ingest acknowledged survives a crash. When the consumer falls
//! behind, ingest waits for room (then answers 503), so memory stays bounded.

use super::QueueError;
use super::journal::Journal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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
    /// In memory: message ids are `local-<this queue's id>-<n>`, never reused.
    uid: String,
    next_id: AtomicU64,
    journal: Option<Arc<Journal>>,
}

/// A queue in memory only (tests): what it holds is lost if the process dies.
pub fn channel(capacity: usize, send_timeout: Duration) -> (LocalQueue, mpsc::Receiver<QueuedMessage>) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    let uid = uuid::Uuid::now_v7().simple().to_string();
    (LocalQueue { sender, send_timeout, uid, next_id: AtomicU64::new(1), journal: None }, receiver)
}

/// What a durable queue starts with.
pub struct Durable {
    pub queue: LocalQueue,
    pub receiver: mpsc::Receiver<QueuedMessage>,
    /// Tell it what was stored (`Journal::stored`), so that it can let go of it.
    pub journal: Arc<Journal>,
    /// Messages the journal held from before: to be delivered again (`LocalQueue::redeliver`).
    pub held: Vec<QueuedMessage>,
}

/// A queue whose messages are journaled in `dir` before they are acknowledged.
pub fn durable(dir: &Path, capacity: usize, send_timeout: Duration) -> std::io::Result<Durable> {
    let (journal, held) = Journal::open(dir)?;
    let journal = Arc::new(journal);
    let (mut queue, receiver) = channel(capacity, send_timeout);
    queue.journal = Some(journal.clone());
    Ok(Durable { queue, receiver, journal, held })
}

impl LocalQueue {
    /// Queues all bodies or none: room for all of them is reserved first. Once it has room it
    /// runs to its end even if the caller stops waiting (the request was dropped: the client
    /// went away), so that what the journal holds is delivered now, not left in it until a
    /// restart; a caller gone while it waits for room gives its place up at once.
    pub async fn send_all(&self, bodies: Vec<String>) -> Result<(), QueueError> {
        if bodies.is_empty() {
            return Ok(());
        }
        if bodies.len() > self.sender.max_capacity() {
            return Err(QueueError::Unavailable("request needs more messages than the queue holds".into()));
        }
        let ids = match &self.journal {
            Some(journal) => Ids::Journaled(journal.clone()),
            None => Ids::InMemory(
                bodies
                    .iter()
                    .map(|_| format!("local-{}-{}", self.uid, self.next_id.fetch_add(1, Ordering::Relaxed)))
                    .collect(),
            ),
        };
        let (sender, send_timeout) = (self.sender.clone(), self.send_timeout);
        let (mut answer, answered) = oneshot::channel();
        tokio::spawn(async move {
            let reserved = tokio::select! {
                biased;
                // The request went away while it waited for room: it gives its place up, and
                // nothing of it was written (looked at first, should room come at once too).
                () = answer.closed() => return,
                reserved = tokio::time::timeout(send_timeout, sender.reserve_many(bodies.len())) => reserved,
            };
            let result = match reserved {
                Ok(Ok(permits)) => hand_over(permits, bodies, ids).await,
                Ok(Err(_)) => Err(QueueError::Unavailable("the consumer has stopped".into())),
                Err(_) => Err(QueueError::Full(send_timeout)),
            };
            // The request may be gone by now: what was handed over is delivered all the same.
            answer.send(result).ok();
        });
        answered.await.unwrap_or_else(|_| Err(QueueError::Unavailable("the queue's sender stopped".into())))
    }

    /// Delivers messages held from before a restart again, as room frees up (spawn it).
    pub fn redeliver(&self, messages: Vec<QueuedMessage>) -> impl Future<Output = ()> + Send + 'static {
        let sender = self.sender.clone();
        async move {
            for message in messages {
                if sender.send(message).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Where the messages' ids come from.
enum Ids {
    /// The journal, as it writes them.
    Journaled(Arc<Journal>),
    /// Numbered by the queue in memory.
    InMemory(Vec<String>),
}

/// Journals the messages (unless they are in memory only), then hands them over in the room
/// reserved for them.
async fn hand_over(
    permits: mpsc::PermitIterator<'_, QueuedMessage>,
    bodies: Vec<String>,
    ids: Ids,
) -> Result<(), QueueError> {
    let (ids, bodies) = match ids {
        Ids::InMemory(ids) => (ids, bodies),
        // On disk before the answer: a crash from here on loses nothing.
        Ids::Journaled(journal) => {
            let written = tokio::task::spawn_blocking(move || journal.append(&bodies).map(|ids| (ids, bodies)))
                .await
                .map_err(|err| QueueError::Unavailable(format!("journal: {err}")))?;
            written.map_err(|err| QueueError::Unavailable(format!("journal: {err}")))?
        }
    };
    for ((permit, body), id) in permits.zip(bodies).zip(ids) {
        permit.send(QueuedMessage { id, body, receive_count: 1 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("evtrack-local-{}", uuid::Uuid::now_v7().simple()))
    }

    /// Polls `send` once and lets the runtime run what it started once, then drops it: the
    /// client went away.
    async fn abandon(send: impl Future<Output = Result<(), QueueError>>) {
        let mut send = std::pin::pin!(send);
        assert!(futures::poll!(send.as_mut()).is_pending());
        tokio::task::yield_now().await;
    }

    #[tokio::test]
    async fn a_request_dropped_once_it_has_room_still_delivers_what_it_journals() {
        let dir = journal_dir();
        let Durable { queue, mut receiver, journal, held } = durable(&dir, 8, Duration::from_secs(1)).expect("opens");
        assert!(held.is_empty());
        abandon(queue.send_all(vec!["a".into(), "b".into()])).await;
        let mut delivered = Vec::new();
        while delivered.len() < 2 {
            let message = tokio::time::timeout(Duration::from_secs(5), receiver.recv()).await.expect("in time");
            delivered.push(message.expect("a message"));
        }
        assert_eq!(delivered.iter().map(|message| message.body.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        // Stored now, so the journal lets go of them: nothing comes back on the next start.
        journal.stored(&delivered.iter().map(|message| message.id.clone()).collect::<Vec<_>>()).expect("stored");
        drop((queue, receiver, journal));
        assert!(durable(&dir, 8, Duration::from_secs(1)).expect("reopens").held.is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_request_dropped_while_it_waits_for_room_writes_and_delivers_nothing() {
        let dir = journal_dir();
        let Durable { queue, mut receiver, journal, .. } = durable(&dir, 1, Duration::from_secs(5)).expect("opens");
        queue.send_all(vec!["first".into()]).await.expect("room for one");
        abandon(queue.send_all(vec!["abandoned".into()])).await;
        let first = receiver.recv().await.expect("the first");
        let late = tokio::time::timeout(Duration::from_millis(200), receiver.recv()).await;
        assert!(late.is_err(), "nothing after the first: {:?}", late.map(|message| message.map(|m| m.body)));
        journal.stored(&[first.id]).expect("stored");
        drop((queue, receiver, journal));
        assert!(durable(&dir, 1, Duration::from_secs(1)).expect("reopens").held.is_empty(), "never journaled");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_full_queue_refuses_after_the_timeout() {
        let (queue, mut receiver) = channel(2, Duration::from_millis(20));
        queue.send_all(vec!["a".into(), "b".into()]).await.expect("room for two");
        assert!(matches!(queue.send_all(vec!["c".into()]).await, Err(QueueError::Full(_))));
        assert_eq!(receiver.recv().await.map(|m| m.body), Some("a".to_string()));
        queue.send_all(vec!["c".into()]).await.expect("room again");
    }
}
