//! Numbered SQL migrations from `migrations/`, compiled in, applied in order and recorded
//! with a checksum; a migration edited after it was applied is refused.

use super::{Store, StoreError, with_timeout};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, TxOpts};
use sha2::{Digest, Sha256};

#[derive(Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "0001_write_path", sql: include_str!("../../../migrations/0001_write_path.sql") },
    Migration {
        version: 2,
        name: "0002_keys_and_jobs",
        sql: include_str!("../../../migrations/0002_keys_and_jobs.sql"),
    },
    Migration { version: 3, name: "0003_lifecycle", sql: include_str!("../../../migrations/0003_lifecycle.sql") },
    Migration {
        version: 4,
        name: "0004_erasure_at_scale",
        sql: include_str!("../../../migrations/0004_erasure_at_scale.sql"),
    },
    Migration { version: 5, name: "0005_audit_log", sql: include_str!("../../../migrations/0005_audit_log.sql") },
    Migration { version: 6, name: "0006_quarantine", sql: include_str!("../../../migrations/0006_quarantine.sql") },
    Migration {
        version: 7,
        name: "0007_quarantine_batch_fields",
        sql: include_str!("../../../migrations/0007_quarantine_batch_fields.sql"),
    },
    Migration {
        version: 8,
        name: "0008_dedupe_by_hour",
        sql: include_str!("../../../migrations/0008_dedupe_by_hour.sql"),
    },
    Migration {
        version: 9,
        name: "0009_read_side_lists",
        sql: include_str!("../../../migrations/0009_read_side_lists.sql"),
    },
    Migration { version: 10, name: "0010_rollups", sql: include_str!("../../../migrations/0010_rollups.sql") },
    Migration {
        version: 11,
        name: "0011_rollup_users",
        sql: include_str!("../../../migrations/0011_rollup_users.sql"),
    },
    Migration {
        version: 12,
        name: "0012_promoted_properties",
        sql: include_str!("../../../migrations/0012_promoted_properties.sql"),
    },
    Migration {
        version: 13,
        name: "0013_rollup_journeys",
        sql: include_str!("../../../migrations/0013_rollup_journeys.sql"),
    },
    Migration {
        version: 14,
        name: "0014_property_demotion",
        sql: include_str!("../../../migrations/0014_property_demotion.sql"),
    },
    Migration {
        version: 15,
        name: "0015_rollup_activity",
        sql: include_str!("../../../migrations/0015_rollup_activity.sql"),
    },
    Migration { version: 16, name: "0016_late_links", sql: include_str!("../../../migrations/0016_late_links.sql") },
    Migration {
        version: 17,
        name: "0017_job_runs_state",
        sql: include_str!("../../../migrations/0017_job_runs_state.sql"),
    },
    Migration {
        version: 18,
        name: "0018_profile_traits_cap",
        sql: include_str!("../../../migrations/0018_profile_traits_cap.sql"),
    },
    Migration {
        version: 19,
        name: "0019_group_members_by_member",
        sql: include_str!("../../../migrations/0019_group_members_by_member.sql"),
    },
    Migration { version: 20, name: "0020_group_types", sql: include_str!("../../../migrations/0020_group_types.sql") },
];

impl Migration {
    pub fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Statements end with `;` at the end of a line; `--` comment lines are dropped.
    pub fn statements(&self) -> Vec<String> {
        let without_comments: String = self
            .sql
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .map(|line| format!("{line}\n"))
            .collect();
        without_comments
            .split(";\n")
            .map(str::trim)
            .filter(|statement| !statement.is_empty())
            .map(|statement| statement.trim_end_matches(';').to_string())
            .collect()
    }
}

impl Store {
    /// Applies every migration not yet applied. Returns the names of those applied now.
    pub async fn migrate(&self) -> Result<Vec<&'static str>, StoreError> {
        self.apply(MIGRATIONS).await
    }

    /// Applies `migrations` in order, one run at a time per database. Each statement is
    /// recorded as it succeeds: DDL commits on its own, so a migration stopped part-way (a
    /// lost connection, a full disk, a duplicate found by a new unique key) resumes at the
    /// statement that failed instead of failing for ever on the ones already applied.
    pub async fn apply(&self, migrations: &[Migration]) -> Result<Vec<&'static str>, StoreError> {
        let mut conn = self.conn().await?;
        for ledger in [
            "CREATE TABLE IF NOT EXISTS schema_migrations (
               version INT UNSIGNED NOT NULL PRIMARY KEY,
               name VARCHAR(200) NOT NULL,
               checksum CHAR(64) NOT NULL,
               applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
             ) ENGINE=InnoDB",
            "CREATE TABLE IF NOT EXISTS schema_migration_steps (
               version INT UNSIGNED NOT NULL,
               step INT UNSIGNED NOT NULL,
               checksum CHAR(64) NOT NULL,
               applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
               PRIMARY KEY (version, step)
             ) ENGINE=InnoDB",
        ] {
            with_timeout(conn.query_drop(ledger)).await?;
        }
        let lock = RunLock::take(&mut conn).await?;
        let applied = apply_in_order(&mut conn, migrations).await;
        lock.release(&mut conn).await;
        applied
    }
}

async fn apply_in_order(conn: &mut Conn, migrations: &[Migration]) -> Result<Vec<&'static str>, StoreError> {
    let mut applied_now = Vec::new();
    for migration in migrations {
        let recorded: Option<String> = with_timeout(
            conn.exec_first("SELECT checksum FROM schema_migrations WHERE version = ?", (migration.version,)),
        )
        .await?;
        match recorded {
            Some(checksum) if checksum == migration.checksum() => continue,
            Some(_) => {
                return Err(StoreError::Migration(format!(
                    "{} changed after it was applied; add a new migration instead of editing it",
                    migration.name
                )));
            }
            None => {}
        }
        let steps_done: Vec<(u32, String)> = with_timeout(conn.exec(
            "SELECT step, checksum FROM schema_migration_steps WHERE version = ? ORDER BY step",
            (migration.version,),
        ))
        .await?;
        if steps_done.iter().any(|(_, checksum)| *checksum != migration.checksum()) {
            return Err(StoreError::Migration(format!(
                "{} was partly applied (statements {}) from a different text of it; finish or undo \
                 those statements by hand, then delete its rows from schema_migration_steps",
                migration.name,
                steps_done.iter().map(|(step, _)| step.to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        let statements = migration.statements();
        for (index, statement) in statements.iter().enumerate() {
            let step = index as u32 + 1;
            if steps_done.iter().any(|(done, _)| *done == step) {
                continue;
            }
            // No client time limit: a backfill or an index rebuild over a large table takes
            // minutes, and a statement given up on by the client runs on in the server, so
            // the migration would be recorded as not applied while its change was made.
            conn.query_drop(statement.as_str()).await.map_err(|err| {
                StoreError::Migration(format!(
                    "{}, statement {step} of {}: {err}; the statements before it are applied, and \
                     the next `evtrack migrate` resumes at this one (if the connection was lost, \
                     check first whether this one took effect)",
                    migration.name,
                    statements.len()
                ))
            })?;
            with_timeout(conn.exec_drop(
                "INSERT INTO schema_migration_steps (version, step, checksum) VALUES (?, ?, ?)",
                (migration.version, step, migration.checksum()),
            ))
            .await?;
        }
        let mut tx = with_timeout(conn.start_transaction(TxOpts::default())).await?;
        with_timeout(tx.exec_drop(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
            (migration.version, migration.name, migration.checksum()),
        ))
        .await?;
        with_timeout(tx.exec_drop("DELETE FROM schema_migration_steps WHERE version = ?", (migration.version,)))
            .await?;
        with_timeout(tx.commit()).await?;
        tracing::info!(migration = migration.name, "migration applied");
        applied_now.push(migration.name);
    }
    Ok(applied_now)
}

/// A named lock of this database on the server, held by the migrating connection: two
/// `evtrack migrate` at once (a deploy and an operator, two stages on one server) would run
/// the same statements twice, and the second would fail on what the first made.
struct RunLock;

impl RunLock {
    /// The name holds a hash of the database's name: lock names are at most 64 characters.
    const NAME: &'static str = "CONCAT('evtrack_migrate_', SHA1(DATABASE()))";

    async fn take(conn: &mut Conn) -> Result<RunLock, StoreError> {
        loop {
            let taken: Option<Option<i64>> =
                with_timeout(conn.query_first(format!("SELECT GET_LOCK({}, 5)", Self::NAME))).await?;
            match taken.flatten() {
                Some(1) => return Ok(RunLock),
                Some(0) => tracing::info!("waiting for another migration run on this database to end"),
                _ => return Err(StoreError::Migration("the server refused the migrations' lock".into())),
            }
        }
    }

    /// Closing the connection would release it too; a pooled connection lives on.
    async fn release(self, conn: &mut Conn) {
        if let Err(err) = with_timeout(conn.query_drop(format!("DO RELEASE_LOCK({})", Self::NAME))).await {
            tracing::warn!(error = %err, "could not release the migrations' lock; it ends with the connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_migrations_is_listed_in_order() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
        let mut files: Vec<String> = std::fs::read_dir(folder)
            .expect("migrations folder")
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS.iter().map(|m| format!("{}.sql", m.name)).collect();
        assert_eq!(files, listed);
        for (position, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, position + 1);
            assert!(migration.name.starts_with(&format!("{:04}_", migration.version)));
        }
    }

    #[test]
    fn statements_split_on_line_ending_semicolons() {
        let migration = Migration {
            version: 9,
            name: "x",
            sql: "-- a; comment\nCREATE TABLE a (x INT);\n\nCREATE TABLE b (y VARCHAR(3) DEFAULT ';');\n",
        };
        assert_eq!(
            migration.statements(),
            vec!["CREATE TABLE a (x INT)".to_string(), "CREATE TABLE b (y VARCHAR(3) DEFAULT ';')".to_string()]
        );
    }
}
