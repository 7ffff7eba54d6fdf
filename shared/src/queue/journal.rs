//! The local stack's durable queue: every accepted message is appended to a journal on disk
//! and flushed (`fdatasync`) before ingest answers, so that a crash of `evtrack up` (`kill
//! -9`, a power cut) after the `200` loses nothing. On start the journal's messages are
//! delivered again; the consumer is idempotent (events dedupe on their messageId), so a
//! message stored before the crash is a no-op the second time. A segment file is deleted once
//! every message in it was stored.
//!
//! Record: `len: u32 LE` · `crc32(body): u32 LE` · body. A record cut short or failing its
//! checksum ends its segment: it was being written when the process died, so it was never
//! acknowledged.
//!
//! Flushes are shared (group commit): an append writes under the lock, then waits for a flush
//! that began after its write. While one `fdatasync` runs, the appends behind it write and
//! queue up, and the next flush covers them all, so concurrent requests do not each wait for
//! a disk flush of their own in turn.

use super::local::QueuedMessage;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A new segment file once the active one is this large.
const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;
const HEADER_BYTES: usize = 8;

pub struct Journal {
    dir: PathBuf,
    /// The journal's own id (kept in the directory), in every message id: a message id is
    /// never reused, not even by a journal started afresh elsewhere.
    uid: String,
    segment_bytes: u64,
    state: Mutex<State>,
    /// How many of the bytes written since the journal was opened (`State::written`) are
    /// known to be on disk. Held while flushing, so appends queue behind the flush running.
    durable: Mutex<u64>,
    /// An exclusive lock on the directory's `lock` file, for the journal's lifetime: a second
    /// process on the same directory would deliver this one's messages and delete its segments.
    _lock: File,
}

struct State {
    active: Arc<File>,
    active_segment: u64,
    active_bytes: u64,
    /// Bytes written since the journal was opened, over all its segments.
    written: u64,
    /// Why a flush failed, if one did. Linux reports a writeback error to one `fsync` only
    /// and may drop the pages it could not write, so a later flush of the same file can
    /// succeed without them: after a failed flush nothing more is acknowledged until a
    /// restart reads back what the journal really holds.
    failed: Option<String>,
    /// Messages not yet stored, per segment.
    unstored: BTreeMap<u64, usize>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`; returns it and the messages it still holds,
    /// to be delivered again.
    pub fn open(dir: &Path) -> io::Result<(Self, Vec<QueuedMessage>)> {
        Self::open_with_segments_of(dir, SEGMENT_BYTES)
    }

    fn open_with_segments_of(dir: &Path, segment_bytes: u64) -> io::Result<(Self, Vec<QueuedMessage>)> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "another process has this queue journal open (an evtrack up on the same EVTRACK_LOCAL_QUEUE_DIR)",
                ));
            }
            // A file system without locks (some network mounts): run, and say what is unguarded.
            Err(std::fs::TryLockError::Error(err)) if err.kind() == io::ErrorKind::Unsupported => {
                tracing::warn!(dir = %dir.display(), "the queue journal cannot be locked here; run one evtrack up on it at a time");
            }
            Err(std::fs::TryLockError::Error(err)) => return Err(err),
        }
        let uid_path = dir.join("journal-id");
        let new_uid = || -> io::Result<String> {
            let uid = uuid::Uuid::now_v7().simple().to_string();
            let mut file = File::create(&uid_path)?;
            file.write_all(uid.as_bytes())?;
            file.sync_all()?;
            File::open(dir)?.sync_all()?;
            Ok(uid)
        };
        let uid = match fs::read_to_string(&uid_path) {
            Ok(uid) if !uid.trim().is_empty() => uid.trim().to_string(),
            // Cut off while it was first written (before any segment): nothing has its ids yet.
            Ok(_) if !has_segments(dir)? => new_uid()?,
            Ok(_) => return Err(io::Error::other(format!("{} is empty", uid_path.display()))),
            Err(err) if err.kind() == io::ErrorKind::NotFound => new_uid()?,
            Err(err) => return Err(err),
        };
        // Segments left empty (by a clean stop) are removed, and still counted for the next
        // segment's number.
        let mut segments: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        segments.sort_unstable();
        // The next segment exists before an empty one is removed: a crash in between must
        // not let the next start number a segment as one already used.
        let active_segment = segments.last().map_or(1, |last| last + 1);
        let active = Arc::new(create_segment(dir, active_segment)?);
        let mut held = Vec::new();
        let mut unstored = BTreeMap::new();
        for segment in &segments {
            let messages = read_segment(&segment_path(dir, *segment), &uid, *segment)?;
            if messages.is_empty() {
                fs::remove_file(segment_path(dir, *segment))?;
                continue;
            }
            unstored.insert(*segment, messages.len());
            held.extend(messages);
        }
        let state = State { active, active_segment, active_bytes: 0, written: 0, failed: None, unstored };
        let journal = Self {
            dir: dir.to_path_buf(),
            uid,
            segment_bytes,
            state: Mutex::new(state),
            durable: Mutex::new(0),
            _lock: lock,
        };
        Ok((journal, held))
    }

    /// Appends `bodies` and flushes them to disk; returns their message ids. Blocking.
    pub fn append(&self, bodies: &[String]) -> io::Result<Vec<String>> {
        let (ids, end) = self.write(bodies)?;
        self.flush_through(end)?;
        Ok(ids)
    }

    /// Writes `bodies` to the active segment (not yet flushed); returns their ids and where
    /// they end in `State::written`.
    fn write(&self, bodies: &[String]) -> io::Result<(Vec<String>, u64)> {
        let mut state = lock(&self.state);
        state.check()?;
        if state.active_bytes >= self.segment_bytes {
            // A flush covers the active file only: what the old one holds goes to disk first.
            if let Err(err) = state.active.sync_data() {
                return Err(state.fail(err));
            }
            let next = state.active_segment + 1;
            state.active = Arc::new(create_segment(&self.dir, next)?);
            state.active_segment = next;
            state.active_bytes = 0;
        }
        let mut buffer = Vec::with_capacity(bodies.iter().map(|body| body.len() + HEADER_BYTES).sum());
        let mut ids = Vec::with_capacity(bodies.len());
        for body in bodies {
            let offset = state.active_bytes + buffer.len() as u64;
            ids.push(message_id(&self.uid, state.active_segment, offset));
            if body.is_empty() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "an empty message"));
            }
            let len = u32::try_from(body.len()).map_err(|_| io::Error::other("message over 4 GiB"))?;
            buffer.extend_from_slice(&len.to_le_bytes());
            buffer.extend_from_slice(&crc32fast::hash(body.as_bytes()).to_le_bytes());
            buffer.extend_from_slice(body.as_bytes());
        }
        if let Err(err) = (&*state.active).write_all(&buffer) {
            // Part of a record may be in the file, and a torn record ends its segment when it
            // is read back: what comes after it goes to a new segment.
            state.active_bytes = self.segment_bytes;
            return Err(err);
        }
        state.active_bytes += buffer.len() as u64;
        state.written += buffer.len() as u64;
        let segment = state.active_segment;
        *state.unstored.entry(segment).or_default() += bodies.len();
        Ok((ids, state.written))
    }

    /// Returns once the first `end` bytes written are on disk: at once if a flush that began
    /// after they were written has finished, else after a flush of everything written so far.
    fn flush_through(&self, end: u64) -> io::Result<()> {
        let mut durable = lock(&self.durable);
        if *durable >= end {
            return Ok(());
        }
        // Older segments were flushed when they stopped being active (`write`).
        let (active, written) = {
            let state = lock(&self.state);
            state.check()?;
            (state.active.clone(), state.written)
        };
        if let Err(err) = active.sync_data() {
            return Err(lock(&self.state).fail(err));
        }
        *durable = written;
        Ok(())
    }

    /// Marks messages stored; deletes every finished segment but the one being written.
    pub fn stored(&self, ids: &[String]) -> io::Result<()> {
        let mut state = lock(&self.state);
        for id in ids {
            let Some(segment) = segment_of(id) else { continue };
            if let Some(count) = state.unstored.get_mut(&segment) {
                *count = count.saturating_sub(1);
            }
        }
        let finished: Vec<u64> = state
            .unstored
            .iter()
            .filter(|(segment, count)| **count == 0 && **segment != state.active_segment)
            .map(|(segment, _)| *segment)
            .collect();
        for segment in finished {
            state.unstored.remove(&segment);
            fs::remove_file(segment_path(&self.dir, segment))?;
        }
        Ok(())
    }
}

impl Drop for Journal {
    /// A clean stop with everything stored leaves no message behind: the active segment is
    /// emptied, not deleted, so that the next start numbers its segments on from it. Message
    /// ids name their segment, and an id used again would pass for the message before it
    /// (a rejected event is recorded once per message id and index).
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|poison| poison.into_inner());
        if state.unstored.get(&state.active_segment).copied().unwrap_or(0) == 0 {
            state.active.set_len(0).ok();
        }
    }
}

impl State {
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some(reason) => Err(io::Error::other(format!(
                "the queue journal could not be flushed ({reason}); restart evtrack to deliver what it holds"
            ))),
            None => Ok(()),
        }
    }

    fn fail(&mut self, err: io::Error) -> io::Error {
        tracing::error!(error = %err, "queue journal: a flush failed; nothing more is accepted until a restart");
        self.failed = Some(err.to_string());
        err
    }
}

/// A panic while holding a lock leaves the journal's state whole (counts and offsets are
/// updated after the writes they describe), so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.log"))
}

fn has_segments(dir: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(dir)?.filter_map(Result::ok).any(|entry| entry.file_name().to_string_lossy().ends_with(".log")))
}

fn create_segment(dir: &Path, segment: u64) -> io::Result<File> {
    let file = OpenOptions::new().create(true).append(true).open(segment_path(dir, segment))?;
    // The new file's directory entry must survive a crash too.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

fn message_id(uid: &str, segment: u64, offset: u64) -> String {
    format!("local-{uid}-{segment}-{offset}")
}

fn segment_of(id: &str) -> Option<u64> {
    id.strip_prefix("local-")?.split('-').nth(1)?.parse().ok()
}

/// The whole records of a segment, in order; a torn or corrupt record ends it.
fn read_segment(path: &Path, uid: &str, segment: u64) -> io::Result<Vec<QueuedMessage>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut messages = Vec::new();
    let mut offset = 0;
    while let Some(header) = bytes.get(offset..offset + HEADER_BYTES) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(body) = bytes.get(offset + HEADER_BYTES..offset + HEADER_BYTES + len) else { break };
        // No message is empty: a zero-filled tail (a crash after the file grew, before its
        // data was written) would otherwise pass as empty records (the CRC of nothing is 0).
        if len == 0 || crc32fast::hash(body) != crc {
            break;
        }
        let Ok(body) = String::from_utf8(body.to_vec()) else { break };
        // Delivered before the crash, perhaps: this is at least the second delivery.
        messages.push(QueuedMessage { id: message_id(uid, segment, offset as u64), body, receive_count: 2 });
        offset += HEADER_BYTES + len;
    }
    if offset < bytes.len() {
        tracing::warn!(segment, dropped_bytes = bytes.len() - offset, "journal: a torn record ends the segment");
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("evtrack-journal-{}", uuid::Uuid::now_v7().simple()))
    }

    #[test]
    fn a_second_opening_of_the_same_directory_is_refused_until_the_first_is_closed() {
        let dir = temp_dir();
        let (journal, _) = Journal::open(&dir).expect("opens");
        let ids = journal.append(&["held".to_string()]).expect("appended");
        let err = Journal::open(&dir).err().expect("refused while open");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        drop(journal);
        let (_journal, held) = Journal::open(&dir).expect("opens once closed");
        assert!(held.is_empty() || held.iter().map(|m| &m.id).eq(&ids), "what the first held, if anything");
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn what_was_appended_and_not_stored_comes_back_and_a_torn_tail_is_dropped() {
        let dir = temp_dir();
        let (journal, held) = Journal::open(&dir).expect("opens");
        assert!(held.is_empty());
        let ids = journal.append(&["one".into(), "two".into(), "three".into()]).expect("appends");
        journal.stored(&ids[..1]).expect("stored");
        drop(journal);
        // A crash in the middle of a write: half a record at the end.
        let segment = segment_path(&dir, 1);
        OpenOptions::new().append(true).open(&segment).expect("open").write_all(&[9, 0, 0, 0, 1, 2]).expect("torn");
        let (journal, held) = Journal::open(&dir).expect("reopens");
        let bodies: Vec<&str> = held.iter().map(|message| message.body.as_str()).collect();
        assert_eq!(bodies, ["one", "two", "three"], "delivered again, the stored one too: the consumer dedupes");
        assert_eq!(held[1].id, ids[1], "the same id as before the crash");
        // Stored now: the old segment goes; the journal is empty on the next start.
        journal.stored(&held.iter().map(|message| message.id.clone()).collect::<Vec<_>>()).expect("stored");
        assert!(!segment.exists());
        drop(journal);
        assert!(Journal::open(&dir).expect("reopens").1.is_empty());
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_clean_stop_leaves_no_message_and_the_next_start_uses_new_ids() {
        let dir = temp_dir();
        let mut seen = HashSet::new();
        for _ in 0..3 {
            let (journal, held) = Journal::open(&dir).expect("opens");
            assert!(held.is_empty(), "nothing delivered again after a clean stop");
            let ids = journal.append(&["same".into(), "sizes".into()]).expect("appends");
            journal.stored(&ids).expect("stored");
            drop(journal);
            for id in ids {
                assert!(seen.insert(id.clone()), "{id} used twice");
            }
        }
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_zero_filled_tail_is_torn_and_after_a_failed_flush_nothing_more_is_acknowledged() {
        let dir = temp_dir();
        let (journal, _) = Journal::open(&dir).expect("opens");
        journal.append(&["one".into()]).expect("appends");
        assert!(journal.append(&[String::new()]).is_err(), "no empty message");
        // As if the disk had refused a flush: every append after it fails, whether its own
        // flush would now pass or not.
        let _ = lock(&journal.state).fail(io::Error::other("EIO"));
        let err = journal.append(&["two".into()]).expect_err("refused");
        assert!(err.to_string().contains("restart"), "{err}");
        drop(journal);
        OpenOptions::new().append(true).open(segment_path(&dir, 1)).expect("open").write_all(&[0; 64]).expect("zeros");
        let (_journal, held) = Journal::open(&dir).expect("reopens");
        let bodies: Vec<&str> = held.iter().map(|message| message.body.as_str()).collect();
        assert_eq!(bodies, ["one"], "zeros are no records");
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn concurrent_appends_sharing_flushes_over_several_segments_all_come_back_with_their_ids() {
        let dir = temp_dir();
        let (journal, _) = Journal::open_with_segments_of(&dir, 4096).expect("opens");
        let journal = Arc::new(journal);
        let appenders: Vec<_> = (0..8)
            .map(|thread| {
                let journal = journal.clone();
                std::thread::spawn(move || {
                    let mut appended = Vec::new();
                    for n in 0..40 {
                        let bodies = vec![format!("{thread}-{n}-a {}", "x".repeat(300)), format!("{thread}-{n}-b")];
                        let ids = journal.append(&bodies).expect("appends");
                        appended.extend(ids.into_iter().zip(bodies));
                    }
                    appended
                })
            })
            .collect();
        let mut appended: Vec<(String, String)> =
            appenders.into_iter().flat_map(|appender| appender.join().expect("appender")).collect();
        drop(journal);
        let segments = fs::read_dir(&dir)
            .expect("dir")
            .filter(|entry| entry.as_ref().is_ok_and(|entry| entry.file_name().to_string_lossy().ends_with(".log")));
        assert!(segments.count() > 10, "the appends went over many segments");
        let (_journal, held) = Journal::open(&dir).expect("reopens");
        let mut held: Vec<(String, String)> = held.into_iter().map(|message| (message.id, message.body)).collect();
        appended.sort();
        held.sort();
        assert_eq!(appended.len(), 8 * 40 * 2);
        assert_eq!(held, appended, "every message back, once, with the id it was given");
        fs::remove_dir_all(&dir).ok();
    }
}
