use clap::{Parser, Subcommand};
use evtrack::Config;
use evtrack::telemetry::{LogFormat, init};
use evtrack_cli::commands::{self, KeyArgs, Output};
use std::process::ExitCode;

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
    /// Run the local stack: ingest on EVTRACK_LISTEN, the consumer, migrations, a dev project.
    Up,
    /// Create the database if needed and apply pending migrations.
    Migrate,
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
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
}

#[tokio::main]
async fn main() -> ExitCode {
    init(LogFormat::Text);
    let cli = Cli::parse();
    let config = match Config::from_env() {
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("evtrack: {err:#}");
            ExitCode::FAILURE
        }
    }
}
