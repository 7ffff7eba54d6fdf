//! A batch's events written with `LOAD DATA LOCAL` from memory, where the server allows it.
//!
//! MariaDB reads a tab-separated row for less than it takes to bind a row of a multi-row
//! INSERT's parameters (22 against 25 µs of its CPU per row on one core, BENCHMARKS.md), and
//! the database is what limits end to end. Not every server takes it: `local_infile` is on in
//! MariaDB, off by default in MySQL 8, and PlanetScale has no `LOAD DATA` at all. The first
//! refusal turns it off for the store, and the INSERTs of `events.rs` write from then on.
//!
//! `LOCAL` implies `IGNORE`: a duplicate, a value too long or a document the server finds
//! invalid is skipped or cut with a warning instead of failing the statement. So a load counts
//! only when it stored every row and warned of nothing; anything else is rolled back and the
//! batch written again with the INSERTs, whose outcome is exact (a redelivery's duplicates
//! are no-ops, bad data is refused).

use super::events::{EVENT_COLUMNS, EventRow};
use super::{StoreError, to_db_time};
use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Transaction};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::oneshot;

/// Whether the store's event writes try `LOAD DATA LOCAL`: until the server refuses it once.
#[derive(Clone)]
pub(super) struct BulkLoadSwitch(Arc<AtomicBool>);

impl BulkLoadSwitch {
    pub(super) fn new(on: bool) -> Self {
        BulkLoadSwitch(Arc::new(AtomicBool::new(on)))
    }

    pub(super) fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn turn_off(&self, why: &str) {
        if self.0.swap(false, Ordering::Relaxed) {
            tracing::warn!(reason = why, "the database refused LOAD DATA LOCAL: events are written with INSERTs");
        }
    }
}

/// What a load did.
pub(super) enum Loaded {
    /// Every row stored, no warning: this many.
    All(u64),
    /// Some row skipped or changed on the way (a duplicate, data the server would refuse):
    /// roll back and write the batch with INSERTs.
    NotClean,
    /// The server does not take `LOAD DATA LOCAL` (the switch is now off): write with INSERTs.
    Refused,
}

/// One load, set up on a connection before its transaction starts: the connection's infile
/// handler is only reachable from the `Conn`, and waits here for the rows.
pub(super) struct BulkLoad {
    rows: oneshot::Sender<Bytes>,
}

/// The server's answers that mean "no `LOAD DATA LOCAL` here": not allowed (1148, MariaDB's
/// 4166, MySQL 8's 3948) or not supported (1235, as Vitess says it).
const REFUSALS: &[u16] = &[1148, 1235, 3948, 4166];

impl BulkLoad {
    pub(super) fn prepare(conn: &mut Conn) -> Self {
        let (sender, receiver) = oneshot::channel::<Bytes>();
        conn.set_infile_handler(async move {
            let rows = receiver.await.map_err(|_| std::io::Error::other("the batch sent no rows to load"))?;
            Ok(futures::stream::once(async move { Ok(rows) }).boxed())
        });
        BulkLoad { rows: sender }
    }

    /// Loads `rows` into `events` in `tx`.
    pub(super) async fn events(
        self,
        tx: &mut Transaction<'_>,
        rows: &[&EventRow<'_>],
        switch: &BulkLoadSwitch,
    ) -> Result<Loaded, StoreError> {
        if rows.is_empty() {
            return Ok(Loaded::All(0));
        }
        let mut tsv = Vec::with_capacity(rows.len() * 512);
        for row in rows {
            push_row(&mut tsv, row);
        }
        // The handler is waiting: nothing else takes its receiver.
        let _ = self.rows.send(Bytes::from(tsv));
        let sql = format!(
            "LOAD DATA LOCAL INFILE 'events' INTO TABLE events CHARACTER SET binary ({})",
            EVENT_COLUMNS.join(",")
        );
        match tx.query_drop(sql).await {
            Ok(()) if tx.affected_rows() == rows.len() as u64 && tx.get_warnings() == 0 => {
                Ok(Loaded::All(tx.affected_rows()))
            }
            Ok(()) => Ok(Loaded::NotClean),
            Err(mysql_async::Error::Server(server)) if REFUSALS.contains(&server.code) => {
                switch.turn_off(&server.message);
                Ok(Loaded::Refused)
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// One row in `EVENT_COLUMNS` order, in `LOAD DATA`'s default format: fields ended by a tab,
/// the row by a newline, `\` escaping those three and NUL, `\N` for NULL; raw bytes, since
/// the statement says `CHARACTER SET binary` (no conversion: the text is UTF-8 already).
fn push_row(out: &mut Vec<u8>, row: &EventRow<'_>) {
    let event = row.event;
    let mut fields = Fields(out);
    fields.bytes(crate::ids::new_public_id().as_bytes());
    fields.number(row.project.0);
    fields.text(Some(&event.message_id));
    fields.number(u64::from(event.dedupe_hour()));
    fields.text(Some(event.kind.as_str()));
    fields.text(event.name.as_deref());
    fields.text(event.user_id.as_deref());
    fields.text(event.anonymous_id.as_deref());
    fields.text(event.group_id.as_deref());
    fields.text(event.previous_id.as_deref());
    for document in [&event.properties, &event.traits, &event.context, &event.integrations] {
        fields.text(document.as_deref().map(|raw| raw.get()));
    }
    fields.time(Some(event.timestamp));
    fields.time(event.original_timestamp);
    fields.time(event.sent_at);
    fields.time(Some(row.received_at));
    fields.number(u64::from(event.timestamp_clamped));
    fields.text(row.ip);
    match row.write_key_uid {
        Some(uid) => fields.bytes(uid.as_bytes()),
        None => fields.null(),
    }
    // Every field above ended with a tab: the last one ends the row instead.
    if let Some(last) = out.last_mut() {
        *last = b'\n';
    }
}

struct Fields<'a>(&'a mut Vec<u8>);

impl Fields<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        let mut start = 0;
        for (at, byte) in bytes.iter().enumerate() {
            let escaped: &[u8] = match byte {
                b'\\' => b"\\\\",
                b'\t' => b"\\t",
                b'\n' => b"\\n",
                0 => b"\\0",
                _ => continue,
            };
            self.0.extend_from_slice(&bytes[start..at]);
            self.0.extend_from_slice(escaped);
            start = at + 1;
        }
        self.0.extend_from_slice(&bytes[start..]);
        self.0.push(b'\t');
    }

    fn text(&mut self, text: Option<&str>) {
        match text {
            Some(text) => self.bytes(text.as_bytes()),
            None => self.null(),
        }
    }

    fn null(&mut self) {
        self.0.extend_from_slice(b"\\N\t");
    }

    fn number(&mut self, number: u64) {
        // Writing into a Vec cannot fail.
        let _ = write!(self.0, "{number}\t");
    }

    /// `YYYY-MM-DD hh:mm:ss.ffffff`, as the INSERTs bind it (`to_db_time`: clamped to the
    /// column's range; the server keeps the milliseconds).
    fn time(&mut self, at: Option<DateTime<Utc>>) {
        let Some(at) = at else { return self.null() };
        let at = to_db_time(at);
        // A leap second's nanoseconds run past a second: keep to the field's width.
        let micros = (at.nanosecond() / 1000).min(999_999);
        let parts = [
            (at.year() as u32, 4, b'-'),
            (at.month(), 2, b'-'),
            (at.day(), 2, b' '),
            (at.hour(), 2, b':'),
            (at.minute(), 2, b':'),
            (at.second(), 2, b'.'),
            (micros, 6, b'\t'),
        ];
        for (value, digits, then) in parts {
            for place in (0..digits).rev() {
                self.0.push(b'0' + (value / 10u32.pow(place) % 10) as u8);
            }
            self.0.push(then);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn escaped(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Fields(&mut out).bytes(bytes);
        out
    }

    #[test]
    fn fields_escape_what_load_data_reads_as_structure() {
        assert_eq!(escaped(b"a\tb\nc\\d\0e"), b"a\\tb\\nc\\\\d\\0e\t");
        assert_eq!(escaped("plain é".as_bytes()), "plain é\t".as_bytes());
        assert_eq!(escaped(b""), b"\t");
    }

    #[test]
    fn times_are_written_as_the_server_reads_them() {
        let mut out = Vec::new();
        let at = DateTime::parse_from_rfc3339("2026-03-04T05:06:07.089123Z").expect("valid").with_timezone(&Utc);
        Fields(&mut out).time(Some(at));
        Fields(&mut out).time(None);
        let early = DateTime::parse_from_rfc3339("0999-12-31T23:59:59Z").expect("valid").with_timezone(&Utc);
        Fields(&mut out).time(Some(early));
        assert_eq!(
            String::from_utf8(out).expect("valid"),
            "2026-03-04 05:06:07.089123\t\\N\t1000-01-01 00:00:00.000000\t"
        );
    }

    #[test]
    fn uids_are_raw_bytes() {
        let uid = Uuid::from_bytes([9, 10, 92, 0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14]);
        assert_eq!(escaped(uid.as_bytes()), b"\\t\\n\\\\\\0\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0d\x0e\t");
    }
}
