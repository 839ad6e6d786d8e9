//! The command line: `serve` (default), and offline `domain` and `token` commands
//! that work on the data directory directly while no server holds it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::api::{DomainResponse, TokenResponse};
use crate::config::Config;
use crate::vault::{OpenReport, TokenTarget, Vault};

#[derive(Debug, Parser)]
#[command(
    name = "oidcvault",
    version,
    about = "Keeps enterprise OIDC SSO configurations, secrets encrypted at rest."
)]
struct Cli {
    /// Configuration file [default: ./config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Manage enterprise domains (offline).
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Manage API tokens (offline).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
enum DomainCommand {
    /// Add a domain; prints {"id","domain","created_at"}.
    Add { name: String },
    /// Print all domains as a JSON array.
    List,
    /// Remove a domain with its OIDC configuration and its tokens.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (shown only once).
    Create {
        /// A token that acts for this enterprise domain.
        #[arg(
            long,
            value_name = "NAME",
            required_unless_present = "operator",
            conflicts_with = "operator"
        )]
        domain: Option<String>,
        /// An operator token (manages domains and tokens).
        #[arg(long)]
        operator: bool,
    },
    /// Print all tokens (never their values) as a JSON array.
    List,
    /// Revoke a token by id.
    Revoke { id: u64 },
}

/// A failure: one line for stderr.
#[derive(Debug)]
pub struct CliError(String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string().replace('\n', " "))
    }
}

/// Parse the command line, run it, and return the exit code.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "oidcvault: {} (see oidcvault --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError(message)) => {
            eprintln!("oidcvault: {message}");
            ExitCode::FAILURE
        }
    }
}

fn report_open(report: &OpenReport) {
    if let Some(path) = &report.key_file_created {
        tracing::warn!(
            "created a new master key file {}: back it up now, apart from the data directory; \
             without it no stored secret can ever be read",
            path.display()
        );
    }
    tracing::info!(
        initialized = report.initialized,
        kdf_ms = report.kdf_millis as u64,
        "keyring unlocked"
    );
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

fn execute(cli: Cli) -> Result<(), CliError> {
    let config = Config::load(cli.config.as_deref())?;
    let env: Vec<(String, String)> = std::env::vars().collect();
    let command = cli.command.unwrap_or(Command::Serve);
    let serving = matches!(command, Command::Serve);
    crate::logging::init(&config.log, if serving { None } else { Some("warn") });

    let (vault, report) = Vault::open(&config, &env)?;
    drop(env);
    report_open(&report);
    let system = actix_web::rt::System::new();
    let result = system.block_on(async {
        match command {
            Command::Serve => crate::server::serve(&config, vault)
                .await
                .map_err(CliError::from),
            Command::Domain(cmd) => {
                let r = domain(&vault, cmd).await;
                vault.shutdown();
                r
            }
            Command::Token(cmd) => {
                let r = token(&vault, cmd).await;
                vault.shutdown();
                r
            }
        }
    });
    result
}

async fn domain(vault: &Vault, cmd: DomainCommand) -> Result<(), CliError> {
    match cmd {
        DomainCommand::Add { name } => {
            let d = vault.add_domain(&name).await.map_err(invalid_to_line)?;
            print_json(&DomainResponse::from(d))
        }
        DomainCommand::List => {
            let list: Vec<DomainResponse> = vault
                .list_domains()?
                .into_iter()
                .map(DomainResponse::from)
                .collect();
            print_json(&list)
        }
        DomainCommand::Remove { name } => {
            let Some(d) = vault.domain_by_name(&name)? else {
                return Err(CliError(format!("no enterprise domain named {name:?}")));
            };
            vault.remove_domain(d.id).await?;
            eprintln!(
                "removed enterprise domain {} (id {}) with its configuration and tokens",
                d.name, d.id
            );
            Ok(())
        }
    }
}

async fn token(vault: &Vault, cmd: TokenCommand) -> Result<(), CliError> {
    match cmd {
        TokenCommand::Create { domain, operator } => {
            let target = match (domain, operator) {
                (Some(name), false) => TokenTarget::Domain(name),
                _ => TokenTarget::Operator,
            };
            let (_, token) = vault.create_token(&target).await.map_err(invalid_to_line)?;
            println!("{}", token.expose());
            Ok(())
        }
        TokenCommand::List => {
            let list: Vec<TokenResponse> = vault
                .list_tokens()?
                .into_iter()
                .map(TokenResponse::from)
                .collect();
            print_json(&list)
        }
        TokenCommand::Revoke { id } => {
            if vault.revoke_token(id).await? {
                eprintln!("revoked token {id}");
                Ok(())
            } else {
                Err(CliError(format!("no token with id {id}")))
            }
        }
    }
}

/// Field errors as one readable line: `domain: Enter a valid domain name...`.
fn invalid_to_line(e: crate::vault::VaultError) -> CliError {
    match e {
        crate::vault::VaultError::Invalid(fields) => CliError(
            fields
                .iter()
                .map(|(f, msgs)| format!("{f}: {}", msgs.join(" ")))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        other => other.into(),
    }
}
