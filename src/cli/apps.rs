//! `oidcvault app add|list|remove`: the sign-in broker's applications, offline
//! (a running server holds the data directory: use `/api/v1/admin/apps/`).
//! Printed as the API answers them: JSON on stdout, the client secret once.

use clap::Subcommand;

use super::{invalid_to_line, print_json, CliError};
use crate::api::dto::{AppCreatedResponse, AppResponse};
use crate::vault::Vault;

#[derive(Debug, Subcommand)]
pub(super) enum AppCommand {
    /// Register an application; prints {"id","name","client_id","client_secret",
    /// "redirect_uris","created_at"} (the client secret is shown only here).
    Add {
        name: String,
        /// A redirect URI, matched exactly at sign-in (repeat for several, up to 10).
        #[arg(long = "redirect-uri", value_name = "URI", required = true)]
        redirect_uri: Vec<String>,
    },
    /// Print all applications (never their secrets) as a JSON array.
    List,
    /// Remove an application by id: its pending sign-ins and codes stop working.
    Remove { id: u64 },
}

pub(super) async fn app(vault: &Vault, cmd: AppCommand) -> Result<(), CliError> {
    match cmd {
        AppCommand::Add { name, redirect_uri } => {
            let (app, secret) = vault
                .create_app(&name, &redirect_uri, None)
                .await
                .map_err(invalid_to_line)?;
            print_json(&AppCreatedResponse::new(app, secret.expose()))
        }
        AppCommand::List => {
            let list: Vec<AppResponse> = vault
                .list_apps()?
                .into_iter()
                .map(AppResponse::from)
                .collect();
            print_json(&list)
        }
        AppCommand::Remove { id } => {
            if vault.remove_app(id, None).await? {
                eprintln!("removed application {id}");
                Ok(())
            } else {
                Err(CliError(format!("no application with id {id}")))
            }
        }
    }
}
