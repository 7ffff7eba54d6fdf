// The comparison in the end-to-end benchmark: what a team would write in Node.js to do
// evtrack's job on one machine — Express parsing Segment batches, a write key checked, the
// events queued in memory, and one writer storing them with mysql2, 500 rows per
// `INSERT … ON DUPLICATE KEY UPDATE`, into evtrack's own `events` table (same indexes).
// Env: DATABASE_URL, PROJECT_ID (the internal id), WRITE_KEY. Prints `listening on PORT`.
import express from 'express';
import mysql from 'mysql2/promise';
import { randomBytes } from 'node:crypto';

const pool = mysql.createPool({ uri: process.env.DATABASE_URL, connectionLimit: 2, timezone: 'Z' });
const project = Number(process.env.PROJECT_ID);
const expectedAuth = 'Basic ' + Buffer.from(`${process.env.WRITE_KEY}:`).toString('base64');
const queue = [];

// Time-ordered ids (as evtrack's UUIDv7 uids), so that the uid index is no random one.
function uid() {
  const id = randomBytes(16);
  id.writeUIntBE(Date.now(), 0, 6);
  return id;
}

function time(value, fallback) {
  const at = value ? new Date(value) : fallback;
  return Number.isNaN(at.getTime()) ? fallback : at;
}

const app = express();
app.use(express.json({ limit: '1mb' }));
app.post('/v1/batch', (req, res) => {
  if (req.get('authorization') !== expectedAuth) {
    return res.status(401).json({ code: 'unauthorized' });
  }
  const batch = req.body?.batch;
  if (!Array.isArray(batch)) {
    return res.status(400).json({ code: 'invalid_body' });
  }
  const received = new Date();
  const sentAt = time(req.body.sentAt, null);
  for (const event of batch) {
    if (typeof event?.messageId !== 'string' || typeof event.type !== 'string') continue;
    const original = time(event.timestamp, received);
    const timestamp = sentAt ? new Date(received - (sentAt - original)) : original;
    queue.push([
      uid(), project, event.messageId, Math.floor(original.getTime() / 3_600_000), event.type,
      event.event ?? null, event.userId ?? null, JSON.stringify(event.properties ?? {}),
      JSON.stringify(event.context ?? {}), timestamp, original, sentAt, received, '203.0.113.0',
    ]);
  }
  res.json({ success: true });
});

async function write() {
  for (;;) {
    if (queue.length === 0) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      continue;
    }
    const rows = queue.splice(0, 500);
    await pool.query(
      `INSERT INTO events (uid, project_id, message_id, dedupe_hour, type, name, user_id, properties,
         context, timestamp, original_timestamp, sent_at, received_at, ip)
       VALUES ? ON DUPLICATE KEY UPDATE message_id = message_id`,
      [rows],
    );
  }
}

const server = app.listen(0, '127.0.0.1', () => console.log(`listening on ${server.address().port}`));
write().catch((err) => {
  console.error(err);
  process.exit(1);
});
