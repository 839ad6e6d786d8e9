//! The command line: `serve` (default), and offline `domain`, `token` and `app`
//! (`apps`) commands that work on the data directory directly while no server
//! holds it.
//!
//! One room, over 600 lines: the command definitions (clap) and their
//! handlers, each a few dozen lines; the one long path, `backup` through a
//! running server (the path and transport rules of SECURITY.md), is the next
//! seam to cut if it grows.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod apps;
mod docs;
mod progress;

use crate::api::dto::{BackupResponse, DomainResponse, KeyTermsResponse, TokenResponse};
use crate::config::{Config, EnvSecrets, ENV_PASSPHRASE, MIN_PASSPHRASE_CHARS};
use crate::crypto::MasterSecret;
use crate::store::{fsutil, StoreError};
use crate::vault::{OpenReport, TokenTarget, Vault, VaultError};

pub use crate::config::{ENV_NEW_PASSPHRASE, ENV_TOKEN};

/// `oidcvault --version`: the package version and the commit it was built
/// from (see build.rs: `unknown` outside git, or `OIDCVAULT_COMMIT` as set by
/// whoever built it).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("OIDCVAULT_BUILD_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "oidcvault",
    version = VERSION,
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
    /// Manage the sign-in broker's applications (offline).
    #[command(subcommand)]
    App(apps::AppCommand),
    /// Write a consistent copy of the data directory to DEST, whether or not the
    /// server runs (a running server is asked through the admin API, with the
    /// operator token in OIDCVAULT_TOKEN).
    Backup { dest: PathBuf },
    /// Data keys and the master passphrase (offline).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Move an installation into a storage cluster (etcd).
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Open every record and decrypt every secret in memory; exit non-zero
    /// naming each record that fails.
    Verify,
    /// Print the shell completion script for SHELL (reads no configuration).
    Completions {
        #[arg(value_enum)]
        shell: docs::Shell,
    },
    /// Print the man page (roff; reads no configuration): oidcvault man | man -l -
    Man,
}

#[derive(Debug, Subcommand)]
enum StorageCommand {
    /// Copy the stopped data directory SRC (or a backup) into the configured
    /// etcd prefix, which must be empty, then verify every record there. The
    /// master key must open SRC. Back again: `oidcvault backup DEST` from the
    /// cluster writes a data directory.
    Load { src: PathBuf },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Add a data-key term and re-encrypt every secret to it.
    Rotate,
    /// Re-wrap the keyring under a new passphrase (from
    /// OIDCVAULT_NEW_MASTER_PASSPHRASE, or asked for).
    ChangePassphrase,
    /// Print key terms and re-encryption progress.
    Status,
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
    // First, while the process has one thread (see `crate::startup`).
    crate::startup::private_umask();
    let mut secrets = match crate::startup::take_secrets() {
        Ok(s) => s,
        Err(message) => {
            eprintln!("oidcvault: {message}");
            return ExitCode::FAILURE;
        }
    };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // The message up to the usage, on one line: clap puts what is
            // missing (`--redirect-uri <URI>`) on the lines after the first.
            let rendered = e.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty())
                .collect();
            let message = message.join(" ");
            eprintln!(
                "oidcvault: {} (see oidcvault --help)",
                message.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    match execute(cli, &mut secrets) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError(message)) => {
            eprintln!("oidcvault: {message}");
            ExitCode::FAILURE
        }
    }
}

fn report_open(report: &OpenReport, config: &Config) {
    if report.permissions_tightened > 0 {
        tracing::warn!(
            paths = report.permissions_tightened,
            "made {} paths under {} and {} private to this user (folders 0700, files 0600): \
             they were readable by others",
            report.permissions_tightened,
            config.data_dir().display(),
            config.backup_dir().display()
        );
    }
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

fn execute(cli: Cli, secrets: &mut EnvSecrets) -> Result<(), CliError> {
    // Generated from the command definition: no configuration, no data directory.
    match &cli.command {
        Some(Command::Man) => return docs::man(&mut std::io::stdout().lock()),
        Some(Command::Completions { shell }) => {
            return docs::completions(*shell, &mut std::io::stdout().lock())
        }
        _ => {}
    }
    let config = Config::load(cli.config.as_deref())?;
    // Without the secret variables: `crate::startup` took them out.
    let env: Vec<(String, String)> = std::env::vars().collect();
    let command = cli.command.unwrap_or(Command::Serve);
    let serving = matches!(command, Command::Serve);
    // Offline commands: warnings, and the audit line of each change they make.
    // Held to the end: dropping it writes out every pending log line.
    let _log_writer = crate::logging::init(
        &config.log,
        if serving {
            None
        } else {
            Some("warn,oidcvault::audit=info")
        },
    );

    // The server's own application data, apart from the vault (an offline
    // command builds neither: it reads no CA file and records no metrics).
    let served = if serving {
        let outbound = crate::outbound::Outbound::new(&config.outbound_settings())
            .map_err(|e| CliError(format!("invalid configuration: {e}")))?;
        let metrics =
            crate::metrics::Metrics::new().map_err(|e| CliError(format!("metrics: {e}")))?;
        Some((outbound, metrics))
    } else {
        None
    };
    let commit_metrics = served.as_ref().map(|(_, m)| m.commit.clone());
    if let Command::Storage(StorageCommand::Load { src }) = &command {
        // Before a vault is opened on the cluster: that would create a keyring
        // in the empty prefix the load must fill.
        let loaded = crate::vault::load_data_dir(
            &config,
            &env,
            secrets,
            src,
            &progress::PhaseReporter::stderr("storage load"),
        )?;
        eprintln!(
            "storage load: {} records copied into {}; verifying",
            loaded.records,
            config.etcd_settings().describe()
        );
    }
    let opened = Vault::open_with_secrets(&config, &env, secrets, commit_metrics);
    // The keyring is open (or never will be): the passphrase is wiped now, not
    // kept for the rest of the run.
    secrets.master_passphrase = None;
    let secrets: &EnvSecrets = secrets;
    if let (Command::Backup { dest }, Err(VaultError::Store(StoreError::InUse { .. }))) =
        (&command, &opened)
    {
        return backup_through_server(&config, secrets, dest);
    }
    let (vault, report) = opened?;
    report_open(&report, &config);
    let system = actix_web::rt::System::new();
    let result = system.block_on(async {
        match command {
            Command::Serve => match served {
                Some((outbound, metrics)) => {
                    crate::server::serve(&config, vault, outbound, metrics)
                        .await
                        .map_err(CliError::from)
                }
                None => Err(CliError("serve: no application data".into())),
            },
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
            Command::App(cmd) => {
                let r = apps::app(&vault, cmd).await;
                vault.shutdown();
                r
            }
            Command::Backup { dest } => {
                let r = backup_offline(&vault, &dest).await;
                vault.shutdown();
                r
            }
            Command::Key(cmd) => {
                let r = key(&vault, &config, secrets, cmd).await;
                vault.shutdown();
                r
            }
            Command::Verify | Command::Storage(StorageCommand::Load { .. }) => {
                let r = verify(&vault);
                vault.shutdown();
                r
            }
            Command::Man | Command::Completions { .. } => Ok(()),
        }
    });
    result
}

async fn domain(vault: &Vault, cmd: DomainCommand) -> Result<(), CliError> {
    match cmd {
        DomainCommand::Add { name } => {
            let d = vault
                .add_domain(&name, None)
                .await
                .map_err(invalid_to_line)?;
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
            vault.remove_domain(d.id, None).await?;
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
            let (_, token) = vault
                .create_token(&target, None)
                .await
                .map_err(invalid_to_line)?;
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
            if vault.revoke_token(id, None).await? {
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

async fn backup_offline(vault: &Vault, dest: &std::path::Path) -> Result<(), CliError> {
    let progress = progress::PhaseReporter::stderr("backup");
    let info = vault.write_backup_with(dest, &progress)?;
    vault.audit_backup(&info, None).await?;
    print_json(&BackupResponse::from(&info))
}

/// The server holds the data directory: ask it for a backup over the admin API,
/// then move the finished copy from `storage.backup_dir` to `dest`. Only a
/// folder directly in this configuration's `storage.backup_dir` is moved,
/// whatever path the server answers.
fn backup_through_server(
    config: &Config,
    secrets: &EnvSecrets,
    dest: &std::path::Path,
) -> Result<(), CliError> {
    let token = secrets.token.as_ref().ok_or_else(|| {
        CliError(format!(
            "the data directory is in use by a running server; set {ENV_TOKEN} to an operator \
                 token so the backup can be asked of it (POST /api/v1/admin/backup)"
        ))
    })?;
    if !fsutil::is_absent_or_empty(dest)? {
        return Err(CliError(format!(
            "backup destination {} exists and is not empty",
            dest.display()
        )));
    }
    let (agent, base) = server_client(config)?;
    let response = agent
        .post(&format!("{base}/api/v1/admin/backup"))
        .set("Authorization", &format!("Bearer {}", token.as_str()))
        .call();
    let mut body: BackupResponse = match response {
        Ok(r) => r.into_json()?,
        Err(ureq::Error::Status(code, r)) => {
            let detail = r
                .into_json::<serde_json::Value>()
                .ok()
                .and_then(|v| v["detail"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(CliError(format!(
                "the server refused the backup: HTTP {code} {detail}"
            )));
        }
        Err(e) => return Err(CliError(format!("cannot reach the server at {base}: {e}"))),
    };
    let made = served_backup_path(config, Some(&body.path))?;
    if dest.exists() {
        std::fs::remove_dir(dest)?;
    }
    if std::fs::rename(&made, dest).is_err() {
        fsutil::copy_tree(&made, dest)?;
        fsutil::sync_tree(dest)?;
        std::fs::remove_dir_all(&made)?;
    }
    body.path = dest.display().to_string();
    print_json(&body)
}

/// The backup a server says it wrote, resolved (symbolic links followed): it
/// must be a folder directly in `storage.backup_dir`, or nothing is moved.
fn served_backup_path(
    config: &Config,
    answered: Option<&str>,
) -> Result<std::path::PathBuf, CliError> {
    let dir = config.backup_dir();
    let refuse = |why: String| {
        CliError(format!(
            "the server answered {why}, not a backup folder in storage.backup_dir ({}); \
             nothing was moved",
            dir.display()
        ))
    };
    let answered = answered
        .filter(|p| !p.is_empty())
        .ok_or_else(|| refuse("no backup path".into()))?;
    let dir_real = dir.canonicalize().map_err(|e| {
        CliError(format!(
            "cannot resolve storage.backup_dir {}: {e}; nothing was moved",
            dir.display()
        ))
    })?;
    let path = std::path::Path::new(answered);
    let is_folder = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir());
    match path.canonicalize() {
        Ok(real) if is_folder && real.parent() == Some(dir_real.as_path()) => Ok(real),
        _ => Err(refuse(format!("the path {answered:?}"))),
    }
}

/// Whether `host` (`host:port` or `[v6]:port`) names this machine: a loopback
/// address or `localhost`.
fn is_loopback_host(host: &str) -> bool {
    if let Ok(addr) = host.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    host.rsplit_once(':')
        .is_some_and(|(name, _)| name.eq_ignore_ascii_case("localhost"))
}

/// An HTTP client for the configured server, trusting its own certificate
/// chain when it serves TLS. Over plain HTTP only to this machine: the
/// operator token must not cross a network in the clear.
fn server_client(config: &Config) -> Result<(ureq::Agent, String), CliError> {
    use rustls::pki_types::pem::PemObject;
    let host = match config.server.bind.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => match a {
            std::net::SocketAddr::V4(_) => format!("127.0.0.1:{}", a.port()),
            std::net::SocketAddr::V6(_) => format!("[::1]:{}", a.port()),
        },
        _ => config.server.bind.clone(),
    };
    let builder = ureq::AgentBuilder::new().timeout(std::time::Duration::from_secs(300));
    match config.tls() {
        None if !is_loopback_host(&host) => Err(CliError(format!(
            "refusing to send the operator token over plain HTTP to {host}, which is not a \
             loopback address (server.bind); serve TLS (server.tls_cert, server.tls_key) or \
             run the backup with server.bind on loopback"
        ))),
        None => Ok((builder.build(), format!("http://{host}"))),
        Some((cert, _)) => {
            // Trust exactly the server's own certificate (the first of
            // server.tls_cert), whatever names it carries: the CLI connects to
            // the bind address, which a real certificate need not name.
            let pinned = rustls::pki_types::CertificateDer::pem_file_iter(&cert)?
                .next()
                .ok_or_else(|| CliError(format!("no certificate in {}", cert.display())))??;
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(PinnedCert {
                    cert: pinned.into_owned(),
                    provider,
                }))
                .with_no_client_auth();
            Ok((
                builder.tls_config(std::sync::Arc::new(tls)).build(),
                format!("https://{host}"),
            ))
        }
    }
}

/// Accepts exactly one certificate (byte for byte) and checks the handshake
/// signature with it, as rustls does for any server certificate.
#[derive(Debug)]
struct PinnedCert {
    cert: rustls::pki_types::CertificateDer<'static>,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

async fn key(
    vault: &Vault,
    config: &Config,
    secrets: &EnvSecrets,
    cmd: KeyCommand,
) -> Result<(), CliError> {
    match cmd {
        KeyCommand::Rotate => {
            let progress = progress::PhaseReporter::stderr("key rotate");
            let term = vault.rotate(None, "requested").await?;
            crate::progress::Progress::finish(&progress, &format!("new term {term} active"));
            let n = vault.finish_reencryption_with(&progress).await?;
            eprintln!("rotated: {n} secrets re-encrypted to the new term");
            print_json(&KeyTermsResponse::from(&vault.key_status()?))
        }
        KeyCommand::Status => print_json(&KeyTermsResponse::from(&vault.key_status()?)),
        KeyCommand::ChangePassphrase => {
            let new = new_passphrase(secrets)?;
            vault.change_passphrase(&new, config.kdf_params())?;
            eprintln!(
                "master passphrase changed; from now on start with {ENV_PASSPHRASE} set to the new \
                 passphrase (the old passphrase or key file no longer opens the keyring)"
            );
            Ok(())
        }
    }
}

fn new_passphrase(secrets: &EnvSecrets) -> Result<MasterSecret, CliError> {
    let value = match &secrets.new_master_passphrase {
        Some(v) => v.clone(),
        None => {
            let first = zeroize::Zeroizing::new(
                rpassword::prompt_password("New master passphrase: ").map_err(|e| {
                    CliError(format!(
                        "cannot read the new passphrase ({e}); set {ENV_NEW_PASSPHRASE} instead"
                    ))
                })?,
            );
            let again = zeroize::Zeroizing::new(rpassword::prompt_password("Repeat it: ")?);
            if *first != *again {
                return Err(CliError(
                    "the two passphrases differ; nothing was changed".into(),
                ));
            }
            first
        }
    };
    if value.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(CliError(format!(
            "the new passphrase is shorter than {MIN_PASSPHRASE_CHARS} characters; nothing was changed"
        )));
    }
    Ok(MasterSecret::new(zeroize::Zeroizing::new(
        value.as_bytes().to_vec(),
    )))
}

/// What `oidcvault verify` prints (a command of its own: no API route answers it).
#[derive(serde::Serialize)]
struct VerifySummary {
    domains: u64,
    configs: u64,
    tokens: u64,
    apps: u64,
    audit_events: u64,
    audit_legacy_events: u64,
    audit_pruned_events: u64,
    audit_broken_at: Option<u64>,
    secrets_opened: u64,
    /// How many; each is printed on standard error.
    failures: usize,
}

fn verify(vault: &Vault) -> Result<(), CliError> {
    let r = vault.verify_with(&progress::PhaseReporter::stderr("verify"))?;
    print_json(&VerifySummary {
        domains: r.domains,
        configs: r.configs,
        tokens: r.tokens,
        apps: r.apps,
        audit_events: r.audit_events,
        audit_legacy_events: r.audit_legacy_events,
        audit_pruned_events: r.audit_pruned_events,
        audit_broken_at: r.audit_broken_at,
        secrets_opened: r.secrets_opened,
        failures: r.failures.len(),
    })?;
    if r.audit_legacy_events > 0 {
        // Written before the trail was chained: reported, not a failure.
        eprintln!(
            "verify: unauthenticated legacy events: {} (the chain starts after them)",
            r.audit_legacy_events
        );
    }
    for f in &r.failures {
        eprintln!("verify: {f}");
    }
    if r.failures.is_empty() {
        Ok(())
    } else {
        Err(CliError(format!(
            "{} record(s) failed verification",
            r.failures.len()
        )))
    }
}
