//! One database user per function, each granted only the statements it runs on only the
//! tables it touches (`evtrack db grants` prints them; `infra/db/grants.sql` is that output
//! for the database `evtrack`). It lives beside the SQL it grants: a statement on a new table
//! is added here too. The tests run each function as its user and show it refused what it
//! must not do.
//!
//! MySQL and MariaDB: a `SELECT … LOCK IN SHARE MODE` needs SELECT, a `FOR UPDATE` also
//! UPDATE or DELETE on the locked table; `INSERT … ON DUPLICATE KEY UPDATE` needs INSERT and
//! UPDATE. Reads of soft-deletable tables go through `SELECT *` derived tables, so SELECT
//! is granted on whole tables. PlanetScale has no GRANT: use its roles there (README).

/// Who a database user is for, and what it may do: `(table, privileges)`.
pub struct DatabaseUser {
    /// The function (or `migrator`: the deploy's schema changes and the operator's command line).
    pub function: &'static str,
    pub grants: &'static [(&'static str, &'static str)],
}

/// The functions' users and their rights (the migrator, below, owns the schema).
pub const FUNCTION_USERS: [DatabaseUser; 5] = [
    // Checks write keys; never writes (it queues, the consumer stores).
    DatabaseUser { function: "ingest", grants: &[("api_keys", "SELECT"), ("projects", "SELECT")] },
    // Stores events and profiles; cannot delete anything.
    DatabaseUser {
        function: "consumer",
        grants: &[
            ("projects", "SELECT"),
            ("suppressed_subjects", "SELECT"),
            // A duplicate's insert updates its id to itself (`ON DUPLICATE KEY UPDATE
            // message_id = message_id`); MariaDB checks UPDATE on every column such an insert
            // names, so UPDATE (message_id) alone is refused.
            ("events", "SELECT, INSERT, UPDATE"),
            ("users", "SELECT, INSERT, UPDATE"),
            ("aliases", "SELECT, INSERT, UPDATE"),
            ("group_profiles", "SELECT, INSERT, UPDATE"),
            // Memberships are only added (`INSERT IGNORE`).
            ("group_members", "SELECT, INSERT"),
            ("rejected_events", "SELECT, INSERT, UPDATE"),
            // Only when a key was last used.
            ("api_keys", "SELECT, UPDATE (last_used_at)"),
            // Marks the hours it stores into (`rollups`).
            ("rollup_dirty_hours", "INSERT"),
            // Notes links to erased users (`late_links`).
            ("erasure_late_links", "SELECT, INSERT"),
        ],
    },
    // Management and reads; soft deletes are updates. No DELETE on any table: jobs are
    // triggered by invoking their functions.
    DatabaseUser {
        function: "api",
        grants: &[
            ("projects", "SELECT, INSERT, UPDATE"),
            ("api_keys", "SELECT, INSERT, UPDATE"),
            ("events", "SELECT, UPDATE (deleted_at)"),
            ("users", "SELECT, UPDATE (deleted_at)"),
            ("aliases", "SELECT"),
            ("group_profiles", "SELECT"),
            ("group_members", "SELECT"),
            ("erasures", "SELECT, INSERT"),
            ("erasure_subjects", "SELECT, INSERT"),
            ("suppressed_subjects", "SELECT, INSERT, UPDATE"),
            ("job_runs", "SELECT"),
            ("job_steps", "SELECT"),
            // A cursor is signed with a new key when rotate-keys has not added one in time.
            ("signing_keys", "SELECT, INSERT"),
            ("audit_log", "SELECT, INSERT"),
            // GET /v1/rejected-events.
            ("rejected_events", "SELECT"),
            // Counts; soft deletes and erasure requests mark the hours they change.
            ("rollup_event_hours", "SELECT"),
            ("rollup_user_hours", "SELECT"),
            ("rollup_journey_hours", "SELECT"),
            ("rollup_activity_hours", "SELECT"),
            ("rollup_dirty_hours", "SELECT, INSERT"),
            // Promotions (their backfill is the hours they mark) and the counts they keep.
            ("promoted_properties", "SELECT, INSERT"),
            ("rollup_property_hours", "SELECT"),
            ("rollup_property_backfill", "SELECT, INSERT"),
            // Demotions.
            ("rollup_property_purge", "SELECT, INSERT"),
        ],
    },
    // Erasure, retention, purge and pruning: deletes, never inserts data (only rollups).
    DatabaseUser {
        function: "cleanup",
        grants: &[
            ("job_runs", "SELECT, INSERT, UPDATE, DELETE"),
            ("job_steps", "SELECT, INSERT, UPDATE, DELETE"),
            ("erasures", "SELECT, UPDATE, DELETE"),
            // INSERT: the ids of a request the previous release made (`erasure::erase_some`).
            ("erasure_subjects", "SELECT, INSERT, DELETE"),
            ("projects", "SELECT, DELETE"),
            ("api_keys", "SELECT, DELETE"),
            // UPDATE: the dedupe hour of rows an earlier release stored (`dedupe`).
            ("events", "SELECT, UPDATE (dedupe_hour), DELETE"),
            ("users", "SELECT, DELETE"),
            ("aliases", "SELECT, DELETE"),
            ("group_profiles", "SELECT, DELETE"),
            ("group_members", "SELECT, DELETE"),
            ("rejected_events", "SELECT, DELETE"),
            // INSERT: an id linked to an erased user after its erasure (`late_links`).
            ("suppressed_subjects", "SELECT, INSERT, DELETE"),
            ("erasure_late_links", "SELECT, UPDATE (checked_at), DELETE"),
            ("audit_log", "SELECT, DELETE"),
            // The rollup step, and the marks deletes leave.
            ("rollup_event_hours", "SELECT, INSERT, DELETE"),
            ("rollup_user_hours", "SELECT, INSERT, DELETE"),
            ("rollup_journey_hours", "SELECT, INSERT, DELETE"),
            ("rollup_activity_hours", "SELECT, INSERT, DELETE"),
            ("rollup_dirty_hours", "SELECT, INSERT, DELETE"),
            ("promoted_properties", "SELECT, DELETE"),
            ("rollup_property_hours", "SELECT, INSERT, DELETE"),
            ("rollup_property_backfill", "SELECT, DELETE"),
            ("rollup_property_purge", "SELECT, DELETE"),
        ],
    },
    // Ends keys, rotates the signing keyring.
    DatabaseUser {
        function: "rotate-keys",
        grants: &[
            ("job_runs", "SELECT, INSERT, UPDATE"),
            ("job_steps", "SELECT, INSERT, UPDATE"),
            ("projects", "SELECT"),
            ("api_keys", "SELECT, UPDATE (ended_at, ended_reason)"),
            ("signing_keys", "SELECT, INSERT, UPDATE, DELETE"),
        ],
    },
];

/// The schema owner: migrations on deploy, and the operator's command line (which migrates
/// before it works, and runs jobs in-process).
pub const MIGRATOR_PRIVILEGES: &str = "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX";

/// The longest prefix whose users' names fit MySQL's 32 characters: the longest name after
/// it is `_rotate_keys` (a test checks every function's).
pub const MAX_USER_PREFIX_CHARS: usize = 32 - "_rotate_keys".len();

/// `evtrack_ingest`, `evtrack_rotate_keys`, …; `prefix` replaces `evtrack` (`--user-prefix`:
/// an environment sharing a server; a test database's own).
pub fn user_name(prefix: &str, function: &str) -> String {
    format!("{prefix}_{}", function.replace('-', "_"))
}

/// The statements that give every function's user (and the migrator) its rights on
/// `database`, and nothing else: each user's earlier rights are revoked first. Users must
/// exist (`create_user_statements`). Names are checked: identifiers cannot be bound as
/// parameters. The REVOKE is server-wide: use one set of users per database server (a
/// staging database beside production's needs its own users and prefix).
pub fn grant_statements(database: &str, prefix: &str) -> Vec<String> {
    assert!(is_identifier(database) && is_identifier(prefix), "names are letters, digits and _");
    let mut statements = Vec::new();
    let migrator = user_name(prefix, "migrator");
    statements.push(format!("REVOKE ALL PRIVILEGES, GRANT OPTION FROM '{migrator}'@'%'"));
    statements.push(format!("GRANT {MIGRATOR_PRIVILEGES} ON `{database}`.* TO '{migrator}'@'%'"));
    for user in &FUNCTION_USERS {
        let name = user_name(prefix, user.function);
        statements.push(format!("REVOKE ALL PRIVILEGES, GRANT OPTION FROM '{name}'@'%'"));
        for (table, privileges) in user.grants {
            statements.push(format!("GRANT {privileges} ON `{database}`.`{table}` TO '{name}'@'%'"));
        }
    }
    statements
}

/// `CREATE USER IF NOT EXISTS` for every user, with the passwords given as `(function, password)`.
pub fn create_user_statements(prefix: &str, passwords: &[(&str, String)]) -> Vec<String> {
    passwords
        .iter()
        .flat_map(|(function, password)| {
            assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()), "generated passwords are alphanumeric");
            let user = user_name(prefix, function);
            // ALTER too: a user that exists gets the password printed with it.
            [
                format!("CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{password}'"),
                format!("ALTER USER '{user}'@'%' IDENTIFIED BY '{password}'"),
            ]
        })
        .collect()
}

/// Every user's function name: the five functions and the migrator.
pub fn all_functions() -> impl Iterator<Item = &'static str> {
    FUNCTION_USERS.iter().map(|user| user.function).chain(["migrator"])
}

/// What `evtrack db grants` prints (and `infra/db/grants.sql` holds for the database and
/// users `evtrack`).
pub fn grants_sql(database: &str, user_prefix: &str) -> String {
    let mut sql = String::from(
        "-- evtrack's database users: one per function, each with only what it runs.\n\
         -- Generated by `evtrack db grants [--database <name>] [--user-prefix <prefix>]`\n\
         -- from shared/src/store/grants.rs; do not edit.\n\
         -- Create the users first (`evtrack db users` prints CREATE USER statements with\n\
         -- fresh passwords and the database URLs to store in each function's secret).\n\n",
    );
    for statement in grant_statements(database, user_prefix) {
        sql.push_str(&statement);
        sql.push_str(";\n");
    }
    sql
}

pub fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_name_fits_mysql_with_the_longest_prefix() {
        let prefix = "p".repeat(MAX_USER_PREFIX_CHARS);
        let lengths: Vec<usize> = all_functions().map(|function| user_name(&prefix, function).len()).collect();
        assert!(lengths.iter().all(|&length| length <= 32), "{lengths:?}");
        assert!(lengths.contains(&32), "the bound is the longest name's: {lengths:?}");
    }
}
