//! Numbered SQL migrations from `migrations/`, compiled in, applied in order and recorded
//! with a checksum; a migration edited after it was applied is refused.

use super::{Store, StoreError, with_timeout};
use mysql_async::prelude::Queryable;
use sha2::{Digest, Sha256};

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
        let mut conn = self.conn().await?;
        with_timeout(conn.query_drop(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
               version INT UNSIGNED NOT NULL PRIMARY KEY,
               name VARCHAR(200) NOT NULL,
               checksum CHAR(64) NOT NULL,
               applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
             ) ENGINE=InnoDB",
        ))
        .await?;
        let mut applied_now = Vec::new();
        for migration in MIGRATIONS {
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
            // No client time limit: a backfill or an index rebuild over a large table takes
            // minutes, and a statement given up on by the client runs on in the server, so
            // the migration would be recorded as not applied while its change was made.
            for statement in migration.statements() {
                conn.query_drop(statement.as_str())
                    .await
                    .map_err(|err| StoreError::Migration(format!("{}: {err}", migration.name)))?;
            }
            with_timeout(conn.exec_drop(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
                (migration.version, migration.name, migration.checksum()),
            ))
            .await?;
            tracing::info!(migration = migration.name, "migration applied");
            applied_now.push(migration.name);
        }
        Ok(applied_now)
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
