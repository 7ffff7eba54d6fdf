//! The dual keys. Internal `BIGINT` ids are for joins and never leave the process (they have
//! no `Serialize`); public ids are UUIDv7 (time-ordered, so InnoDB inserts stay sequential),
//! stored as `BINARY(16)`.

use uuid::Uuid;

/// A new public id.
pub fn new_public_id() -> Uuid {
    Uuid::now_v7()
}

/// A project's private database id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProjectId(pub u64);

/// An API key's private database id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub u64);

/// An id as MySQL compares it: without its trailing spaces (PAD SPACE collations), so that
/// `alice` and `alice ` are one id in SQL. Rust code that sets ids apart, or together, where
/// SQL does too (erasure hashes, link caps) compares this.
pub fn as_compared(id: &str) -> &str {
    id.trim_end_matches(' ')
}
