//! Operator tasks: migrations, projects, keys, jobs. Each opens the database named by
//! EVTRACK_DATABASE_URL, does one thing, and prints text or (with --json) one JSON object.

use crate::toolbox::{jobs, open_store};
use anyhow::{Context, bail};
use chrono::{DateTime, Duration, Utc};
use evtrack::Config;
use evtrack::config::{JOB_NAMES, Required};
use evtrack::jobs::{Outcome, Trigger};
use evtrack::keys::{ApiKey, Expiry, KeyService, NewKeyRequest, Scope};
use evtrack::store::grants;
use evtrack::store::{KeyInfo, Project, Store};
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

impl Output {
    pub fn from_flag(json: bool) -> Self {
        if json { Output::Json } else { Output::Text }
    }
}

#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// The project's id.
    #[arg(long)]
    pub project: Uuid,
    /// write (ingest only; may ship in a browser) or read (the project's data).
    #[arg(long, default_value = "write")]
    pub scope: String,
    #[command(flatten)]
    pub lifetime: NewKeyArgs,
}

/// What every new key takes: a label and a lifetime.
#[derive(Debug, clap::Args)]
pub struct NewKeyArgs {
    /// A label to recognise the key by.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Days until the key expires (default: the scope's, see EVTRACK_KEY_EXPIRY_DAYS_*).
    #[arg(long, conflicts_with = "no_expiry")]
    pub expires_days: Option<u32>,
    /// Never expire (only when asked for explicitly).
    #[arg(long)]
    pub no_expiry: bool,
    #[arg(long)]
    pub json: bool,
}

impl NewKeyArgs {
    fn expiry(&self) -> Expiry {
        match (self.no_expiry, self.expires_days) {
            (true, _) => Expiry::Never,
            (false, Some(days)) => Expiry::After(Duration::days(i64::from(days))),
            (false, None) => Expiry::Default,
        }
    }
}

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    Store::create_database(&config.database_url, &config.database_tls).await?;
    let store = Store::connect(&config.database_url, &config.database_tls, 1)?;
    let applied = store.migrate().await?;
    if applied.is_empty() {
        println!("database is up to date");
    }
    for name in applied {
        println!("applied {name}");
    }
    store.close().await;
    Ok(())
}

fn project_json(project: &Project) -> serde_json::Value {
    serde_json::to_value(project).unwrap_or_default()
}

pub async fn create_project(config: &Config, name: &str, output: Output) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let project = store.create_project(name).await?;
    match output {
        Output::Json => println!("{}", project_json(&project)),
        Output::Text => println!("created project {:?} with id {}", project.name, project.id),
    }
    store.close().await;
    Ok(())
}

pub async fn list_projects(config: &Config, output: Output) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let projects = store.list_projects().await?;
    match output {
        Output::Json => println!("{}", json!({ "projects": projects.iter().map(project_json).collect::<Vec<_>>() })),
        Output::Text => {
            for project in &projects {
                println!("{}  {}", project.id, project.name);
            }
        }
    }
    store.close().await;
    Ok(())
}

pub async fn create_key(config: &Config, args: KeyArgs) -> anyhow::Result<()> {
    let scope = match Scope::parse(&args.scope) {
        Some(scope @ (Scope::Write | Scope::Read)) => scope,
        _ => bail!("--scope must be write or read (admin keys: `evtrack admin-key create`)"),
    };
    new_key(config, Some(args.project), scope, &args.lifetime).await
}

pub async fn create_admin_key(config: &Config, args: NewKeyArgs) -> anyhow::Result<()> {
    new_key(config, None, Scope::Admin, &args).await
}

async fn new_key(config: &Config, project: Option<Uuid>, scope: Scope, args: &NewKeyArgs) -> anyhow::Result<()> {
    refuse_development_secrets(config, &[Required::KeyPepper])?;
    let store = open_store(config).await?;
    let request = NewKeyRequest { project, scope, name: &args.name, expiry: args.expiry() };
    let (info, key) = KeyService::new(store.clone(), config).create(request).await?;
    print_new_key(&info, &key, args.json);
    store.close().await;
    Ok(())
}

fn print_new_key(info: &KeyInfo, key: &ApiKey, json: bool) {
    if json {
        let mut value = serde_json::to_value(info).unwrap_or_default();
        value["key"] = json!(key.reveal());
        println!("{value}");
        return;
    }
    println!("{} key {} created; it is shown only this once:\n\n  {}\n", info.scope.as_str(), info.id, key.reveal());
    match info.expires_at {
        Some(at) => println!("It expires at {at}."),
        None => println!("It never expires."),
    }
}

pub async fn list_keys(config: &Config, project: Option<Uuid>, json: bool) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let keys = store.list_keys(project, None, usize::MAX).await?;
    if json {
        println!("{}", json!({ "keys": keys }));
    } else {
        for key in &keys {
            let expires = key.expires_at.map_or("never".to_string(), |at| at.to_rfc3339());
            println!(
                "{}  {:<5}  {}…  {:<8}  expires {}  {}",
                key.id,
                key.scope.as_str(),
                key.prefix,
                key.status,
                expires,
                key.name
            );
        }
    }
    store.close().await;
    Ok(())
}

pub async fn rotate_key(config: &Config, key: Uuid, grace_hours: Option<u32>, json: bool) -> anyhow::Result<()> {
    refuse_development_secrets(config, &[Required::KeyPepper])?;
    let store = open_store(config).await?;
    let service = KeyService::new(store.clone(), config);
    let grace = grace_hours.map(|hours| Duration::hours(i64::from(hours)));
    let (info, new_key) = service.rotate(key, grace).await?;
    print_new_key(&info, &new_key, json);
    if !json {
        let old = store.key_info(key).await?;
        if let Some(ends) = old.and_then(|old| old.grace_ends_at) {
            println!("The old key {key} keeps working until {ends}.");
        }
    }
    store.close().await;
    Ok(())
}

pub async fn revoke_key(config: &Config, key: Uuid, json: bool) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let info = KeyService::new(store.clone(), config).revoke(key).await?;
    if json {
        println!("{}", json!(info));
    } else {
        println!(
            "key {} revoked; ingest may accept it for up to {} s more (its key cache).",
            info.id,
            config.key_cache_ttl.as_secs()
        );
    }
    store.close().await;
    Ok(())
}

/// Runs a job's slot (now, to the second, unless given) through the job ledger.
pub async fn run_job(config: &Config, name: &str, slot: Option<DateTime<Utc>>, json: bool) -> anyhow::Result<()> {
    if name == evtrack_rotate_keys::JOB {
        refuse_development_secrets(config, &[Required::MasterKeys])?;
    }
    let store = open_store(config).await?;
    let trigger = Trigger::new(slot.unwrap_or_else(Utc::now), "cli");
    let Some(outcome) = jobs(&store, config).await?.run(name, trigger).await else {
        bail!("no job named {name:?}; jobs: {}", JOB_NAMES.join(", "));
    };
    let outcome = outcome?;
    if json {
        println!("{}", outcome.to_json());
    } else {
        let run = outcome.run();
        let verb = if matches!(outcome, Outcome::Ran(_)) { "ran" } else { "already taken; nothing done:" };
        println!("{name} slot {} {verb} (run {}, {})", run.slot, run.id, run.state);
        for step in &run.steps {
            println!("  {:<24} {:>8} rows  {:>6} ms", step.name, step.rows, step.duration_ms);
        }
    }
    store.close().await;
    // A slot that ended failed is no success to a script or a cron job asking for it again.
    if outcome.run().state == "failed" {
        bail!("the run of this slot failed: {}", outcome.run().error.as_deref().unwrap_or("no error recorded"));
    }
    Ok(())
}

/// Writes everything held about `user` in `project` to `output` as NDJSON (GDPR access),
/// with a progress bar on the terminal.
pub async fn export_user(config: &Config, project: Uuid, user: &str, output: &std::path::Path) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    use std::io::Write;
    let store = open_store(config).await?;
    let project_id = store.project_id(project).await?.with_context(|| format!("no project {project}"))?;
    let total = store.count_events_of_user(project_id, user).await?;
    let progress = indicatif::ProgressBar::new(total);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events ({eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut file = std::io::BufWriter::new(crate::export::private_file(output)?);
    let mut lines = std::pin::pin!(evtrack_api::export::user_export(store.clone(), project_id, user.to_string()));
    while let Some(text) = lines.try_next().await? {
        file.write_all(text.as_bytes())?;
        progress.inc(text.lines().filter(|line| line.starts_with("{\"type\":\"event\"")).count() as u64);
    }
    file.flush()?;
    progress.finish_and_clear();
    println!("exported {} events and the profile of {user:?} to {}", progress.position(), output.display());
    store.close().await;
    Ok(())
}

/// Writes the project's events of `[from, to)` to `output` through the api (`export`).
pub async fn export_range(
    project: Uuid,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    url: &str,
    key: Option<&str>,
    output: &std::path::Path,
) -> anyhow::Result<()> {
    let (Some(from), Some(to)) = (from, to) else { bail!("give --from and --to, or --user") };
    if from >= to {
        bail!("--from is before --to");
    }
    let key = key.context("give a read key of the project (or an admin key): --key or EVTRACK_API_KEY")?;
    let export = crate::export::RangeExport { url, key, project, from, to, output };
    let events = export.run().await?;
    println!("exported {events} events of {from} to {to} to {}", output.display());
    Ok(())
}

/// The built-in development secrets are for a database on this machine: a command that
/// writes keys or signing keys to any other, or opens its queue messages, refuses them, as
/// the Lambdas do.
pub(crate) fn refuse_development_secrets(config: &Config, secrets: &[Required]) -> anyhow::Result<()> {
    if config.database_is_local() {
        return Ok(());
    }
    config.require(secrets).map_err(|reason| anyhow::anyhow!("{reason} (the database is not on this machine)"))
}

/// `evtrack db grants`: the least-privilege grants of every function's database user.
pub fn print_grants(database: &str, user_prefix: &str) -> anyhow::Result<()> {
    check_names(database, user_prefix)?;
    print!("{}", grants::grants_sql(database, user_prefix));
    Ok(())
}

/// The database's name and the users' prefix, as `grants` may put them in statements.
fn check_names(database: &str, user_prefix: &str) -> anyhow::Result<()> {
    anyhow::ensure!(grants::is_identifier(database), "the database name is letters, digits and _");
    anyhow::ensure!(
        grants::is_identifier(user_prefix) && user_prefix.len() <= grants::MAX_USER_PREFIX_CHARS,
        "the user prefix is letters, digits and _, at most {} characters (MySQL's user names: 32)",
        grants::MAX_USER_PREFIX_CHARS
    );
    Ok(())
}

/// `evtrack db users`: CREATE USER with a fresh random password per user, and the URL each
/// function's secret should hold.
pub fn print_users(database: &str, user_prefix: &str, host: &str, port: u16) -> anyhow::Result<()> {
    use rand::Rng;
    check_names(database, user_prefix)?;
    let passwords: Vec<(&str, String)> = grants::all_functions()
        .map(|function| {
            let password: String =
                rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).map(char::from).collect();
            (function, password)
        })
        .collect();
    for statement in grants::create_user_statements(user_prefix, &passwords) {
        println!("{statement};");
    }
    println!("\n-- Each function's database URL, for its Secrets Manager secret (shown once):");
    for (function, password) in &passwords {
        let user = grants::user_name(user_prefix, function);
        println!("-- {function:<12} mysql://{user}:{password}@{host}:{port}/{database}?require_ssl=true");
    }
    Ok(())
}
