use clap::{Parser, Subcommand};
use evtrack::Config;
use evtrack::telemetry::{LogFormat, init};
use evtrack_cli::commands::{self, KeyArgs, NewKeyArgs, Output};
use std::process::ExitCode;
use uuid::Uuid;

/// evtrack: serverless event tracking. Settings come from EVTRACK_* environment variables
/// (see the README).
#[derive(Parser)]
#[command(name = "evtrack", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the local stack: ingest and api on EVTRACK_LISTEN, the consumer, the job
    /// schedules, migrations, and on first run a development project and keys.
    Up,
    /// Create the database if needed and apply pending migrations.
    Migrate,
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage a project's API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Admin keys (projects, keys, jobs); `create` bootstraps the first one.
    #[command(subcommand, name = "admin-key")]
    AdminKey(AdminKeyCommand),
    /// Scheduled jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Database users, one per function, with least privilege (MySQL, MariaDB, RDS).
    #[command(subcommand)]
    Db(DbCommand),
    /// The quarantine: events requests held that could not be stored, kept with the reason.
    #[command(subcommand)]
    Rejected(RejectedCommand),
    /// Write a project's data to a file as NDJSON: with --user, everything held about that
    /// user (GDPR access, from the database); with --from and --to, the events of that time
    /// range, read through the api (any machine with a read key).
    Export {
        #[arg(long)]
        project: Uuid,
        #[arg(long, conflicts_with_all = ["from", "to"], required_unless_present_all = ["from", "to"])]
        user: Option<String>,
        /// Event time at or after (RFC 3339).
        #[arg(long, requires = "to")]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// Event time before (RFC 3339).
        #[arg(long, requires = "from")]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// The api's base URL (the stack's, or the HTTP API's on AWS).
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
        /// A read key of the project, or an admin key (with --from/--to).
        #[arg(long, env = "EVTRACK_API_KEY", hide_env_values = true)]
        key: Option<String>,
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum RejectedCommand {
    /// List a project's rejected events, newest first (or, with --messages, the queue
    /// messages refused whole, which name no project one can trust).
    List {
        #[arg(long, required_unless_present = "messages")]
        project: Option<Uuid>,
        /// The queue messages refused whole instead (unsealed, forged, stale, unknown project).
        #[arg(long, conflicts_with = "project")]
        messages: bool,
        #[command(flatten)]
        filter: RejectedArgs,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Send a project's rejected events back through ingest (after a fix), as their requests
    /// sent them; replayed ones leave the quarantine, those refused again are kept anew.
    Replay {
        #[arg(long)]
        project: Uuid,
        #[command(flatten)]
        filter: RejectedArgs,
        /// Ingest's base URL (the stack's, or the HTTP API's on AWS).
        #[arg(long)]
        url: String,
        /// A write key of the project.
        #[arg(long, env = "EVTRACK_WRITE_KEY", hide_env_values = true)]
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// After a rollback to a release that did not know this one's queue seal: give the queue
    /// messages it refused as forged (or of an unsupported version) that this release's seal
    /// opens to this release's consumer, which stores their events once. Needs the functions'
    /// pepper (EVTRACK_KEY_PEPPER, ...); messages it does not open are left.
    Reopen {
        /// Only those recorded at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only those recorded before this time (RFC 3339).
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct RejectedArgs {
    /// Only this reason code (invalid_value, event_too_large, ...).
    #[arg(long)]
    reason: Option<String>,
    /// Only those recorded at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only those recorded before this time (RFC 3339).
    #[arg(long)]
    until: Option<chrono::DateTime<chrono::Utc>>,
}

impl RejectedArgs {
    fn filter(self) -> evtrack::store::RejectedFilter {
        evtrack_cli::rejected::filter(self.reason, self.since, self.until)
    }
}

#[derive(Subcommand)]
enum DbCommand {
    /// Print the GRANT statements of every function's user (and the migrator).
    Grants {
        #[arg(long, default_value = "evtrack")]
        database: String,
        /// The users' names start with this (`<prefix>_ingest`, …): one set per environment
        /// when environments share a database server (`evtrack_staging`).
        #[arg(long, default_value = "evtrack")]
        user_prefix: String,
    },
    /// Print CREATE USER statements with fresh random passwords, and each function's
    /// database URL (to store in its secret). Run once; then apply `evtrack db grants`.
    Users {
        #[arg(long, default_value = "evtrack")]
        database: String,
        /// As for `grants`: the same prefix there.
        #[arg(long, default_value = "evtrack")]
        user_prefix: String,
        /// The host the functions connect to, for the printed URLs.
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 3306)]
        port: u16,
    },
}

#[derive(Subcommand)]
enum AdminKeyCommand {
    /// Create an admin key (needs database access); printed once, never stored in clear.
    Create(NewKeyArgs),
}

#[derive(Subcommand)]
enum JobCommand {
    /// Run one slot of a job through the job ledger (once, however often it is asked).
    Run {
        /// rotate-keys or cleanup
        name: String,
        /// The slot (RFC 3339); now, to the second, by default.
        #[arg(long)]
        slot: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Create a project.
    Create {
        #[arg(long)]
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List projects.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an API key; the key is printed once and never stored in clear.
    Create(KeyArgs),
    /// List keys (never the keys themselves: their prefix, scope, status, expiry).
    List {
        #[arg(long)]
        project: Option<Uuid>,
        #[arg(long)]
        json: bool,
    },
    /// Replace a key: prints the new key; the old one works until its grace period ends.
    Rotate {
        id: Uuid,
        /// Hours the old key keeps working (default 24; 0 for a leaked key).
        #[arg(long)]
        grace_hours: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// End a key now.
    Revoke {
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    init(LogFormat::Text);
    let cli = Cli::parse();
    let config = match Config::from_env_and_secrets().await {
        Ok(config) => config,
        Err(err) => {
            eprintln!("evtrack: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Up => evtrack_cli::stack::up(config).await,
        Command::Migrate => commands::migrate(&config).await,
        Command::Project(ProjectCommand::Create { name, json }) => {
            commands::create_project(&config, &name, Output::from_flag(json)).await
        }
        Command::Project(ProjectCommand::List { json }) => {
            commands::list_projects(&config, Output::from_flag(json)).await
        }
        Command::Key(KeyCommand::Create(args)) => commands::create_key(&config, args).await,
        Command::Key(KeyCommand::List { project, json }) => commands::list_keys(&config, project, json).await,
        Command::Key(KeyCommand::Rotate { id, grace_hours, json }) => {
            commands::rotate_key(&config, id, grace_hours, json).await
        }
        Command::Key(KeyCommand::Revoke { id, json }) => commands::revoke_key(&config, id, json).await,
        Command::AdminKey(AdminKeyCommand::Create(args)) => commands::create_admin_key(&config, args).await,
        Command::Job(JobCommand::Run { name, slot, json }) => commands::run_job(&config, &name, slot, json).await,
        Command::Db(DbCommand::Grants { database, user_prefix }) => commands::print_grants(&database, &user_prefix),
        Command::Db(DbCommand::Users { database, user_prefix, host, port }) => {
            commands::print_users(&database, &user_prefix, &host, port)
        }
        Command::Export { project, user: Some(user), output, .. } => {
            commands::export_user(&config, project, &user, &output).await
        }
        Command::Export { project, user: None, from, to, url, key, output } => {
            commands::export_range(project, from, to, &url, key.as_deref(), &output).await
        }
        Command::Rejected(RejectedCommand::List { project, messages: _, filter, limit, json }) => {
            evtrack_cli::rejected::list(&config, project, filter.filter(), limit, json).await
        }
        Command::Rejected(RejectedCommand::Reopen { since, until, json }) => {
            evtrack_cli::rejected::reopen(&config, evtrack_cli::rejected::filter(None, since, until), json).await
        }
        Command::Rejected(RejectedCommand::Replay { project, filter, url, key, json }) => {
            evtrack_cli::rejected::replay(&config, project, filter.filter(), &url, &key, json).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("evtrack: {err:#}");
            ExitCode::FAILURE
        }
    }
}
