//! `keyferry validate` and `keyferry check`: the engines live in `keyferry-gates`; this module gives
//! `check` its vault clients, built from the stores the manifests define exactly as `render` builds
//! them (credentials from `AZURE_*` in a pipeline, or `--credentials`; `--seed` for offline runs).

use std::process::ExitCode;
use std::sync::Arc;

use keyferry_api::secret_store::{AzureKvProvider, StoreProvider};
use keyferry_gates::cli::CheckArgs;
use keyferry_gates::{ResolveError, StoreContext};
use keyferry_providers::{FakeStore, SecretsClient};

use crate::stores::{StoreArgs, StoreKey, build_client};

/// Arguments of `keyferry check`.
#[derive(Debug, clap::Args)]
pub struct CheckCommand {
    #[command(flatten)]
    check: CheckArgs,
    #[command(flatten)]
    stores: StoreArgs,
}

pub async fn run_check(args: CheckCommand) -> ExitCode {
    let settings = match args.stores.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keyferry check: {e}");
            return ExitCode::from(2);
        }
    };
    let seeded: Option<Arc<dyn SecretsClient>> = settings
        .seed
        .as_ref()
        .map(|seed| Arc::new(FakeStore::from_seed("seeded vault", seed)) as Arc<dyn SecretsClient>);
    let make_resolver = move |_policy: &keyferry_gates::Policy| {
        Ok(
            move |ctx: &StoreContext<'_>| -> Result<Arc<dyn SecretsClient>, ResolveError> {
                if let Some(seeded) = &seeded {
                    return Ok(seeded.clone());
                }
                let key = StoreKey {
                    kind: ctx.id.kind,
                    namespace: ctx.id.namespace.clone().unwrap_or_default(),
                    name: ctx.id.name.clone(),
                };
                // A store declared only in the policy has a vault URL and nothing else: Azure with the
                // pipeline's AZURE_* identity.
                let declared;
                let provider = match (ctx.spec, ctx.vault_url) {
                    (Some(spec), _) => &spec.provider,
                    (None, Some(url)) => {
                        declared = StoreProvider {
                            azurekv: Some(AzureKvProvider {
                                vault_url: url.to_owned(),
                                ..AzureKvProvider::default()
                            }),
                            ..StoreProvider::default()
                        };
                        &declared
                    }
                    (None, None) => {
                        return Err(ResolveError::Config(
                            "no vault URL is known for this store".to_owned(),
                        ));
                    }
                };
                build_client(&key, provider, &settings).map_err(|e| ResolveError::Config(e.to_string()))
            },
        )
    };
    keyferry_gates::cli::run_check_async(args.check, make_resolver).await
}
