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
