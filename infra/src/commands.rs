//! Operator tasks: migrations, projects, keys. Each opens the database named by
//! EVTRACK_DATABASE_URL, does one thing, and prints text or (with --json) one JSON object.

use anyhow::{Context, bail};
use chrono::{Duration, Utc};
use evtrack::Config;
use evtrack::keys::{ApiKey, KeyHasher, Scope};
use evtrack::store::{NewKey, Project, Store};
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
    /// The project's id (not needed for admin keys).
    #[arg(long)]
    pub project: Option<Uuid>,
    /// write (ingest only), read, or admin.
    #[arg(long, default_value = "write")]
    pub scope: String,
    /// A label to recognise the key by.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Days until the key expires.
    #[arg(long, default_value_t = 365)]
    pub expires_days: u32,
    /// Never expire (only when asked for explicitly).
    #[arg(long)]
    pub no_expiry: bool,
    #[arg(long)]
    pub json: bool,
}

/// Creates the database if needed, applies migrations, and returns a store on it.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::create_database(&config.database_url).await.map_err(|err| {
        anyhow::anyhow!(
            "cannot reach MySQL/MariaDB ({err}).\n  \
             Is it running? Start it with `infra/dev.sh services` (installs and starts MariaDB and Redis),\n  \
             or `sudo service mariadb start`, or point EVTRACK_DATABASE_URL at your server."
        )
    })?;
    let store = Store::connect(&config.database_url, config.database_pool_max)?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    Store::create_database(&config.database_url).await?;
    let store = Store::connect(&config.database_url, 1)?;
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
    json!({
        "id": project.uid,
        "name": project.name,
        "retention_days": project.retention_days,
        "store_full_ip": project.store_full_ip,
        "created_at": project.created_at,
    })
}

pub async fn create_project(config: &Config, name: &str, output: Output) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let project = store.create_project(name).await?;
    match output {
        Output::Json => println!("{}", project_json(&project)),
        Output::Text => println!("created project {:?} with id {}", project.name, project.uid),
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
                println!("{}  {}", project.uid, project.name);
            }
        }
    }
    store.close().await;
    Ok(())
}

/// A new key, stored as its hash; the plaintext is returned to be shown once.
pub async fn issue_key(
    store: &Store,
    config: &Config,
    project: Option<Uuid>,
    scope: Scope,
    name: &str,
    expires_in: Option<Duration>,
) -> anyhow::Result<(Uuid, ApiKey)> {
    let key = ApiKey::generate(scope);
    let hasher = KeyHasher::new(&config.key_pepper, config.key_pepper_version);
    let uid = store
        .insert_key(NewKey {
            project_uid: project,
            scope,
            name,
            hash: hasher.hash(&key),
            pepper_version: hasher.version(),
            display_prefix: key.display_prefix(),
            expires_at: expires_in.map(|after| Utc::now() + after),
        })
        .await?;
    Ok((uid, key))
}

pub async fn create_key(config: &Config, args: KeyArgs) -> anyhow::Result<()> {
    let Some(scope) = Scope::parse(&args.scope) else {
        bail!("--scope must be write, read or admin");
    };
    let expires_in = (!args.no_expiry).then(|| Duration::days(i64::from(args.expires_days)));
    let store = open_store(config).await?;
    let (uid, key) = issue_key(&store, config, args.project, scope, &args.name, expires_in).await?;
    let expires_at = expires_in.map(|after| Utc::now() + after);
    if args.json {
        println!(
            "{}",
            json!({"id": uid, "key": key.reveal(), "scope": scope.as_str(), "project": args.project, "expires_at": expires_at})
        );
    } else {
        println!("{} key {uid} created; it is shown only this once:\n\n  {}\n", scope.as_str(), key.reveal());
        match expires_at {
            Some(at) => println!("It expires at {at}."),
            None => println!("It never expires."),
        }
    }
    store.close().await;
    Ok(())
}
