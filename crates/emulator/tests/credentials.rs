//! azure_identity credentials (client secret, workload identity) against the emulator's token
//! endpoint, used by the real SecretClient.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use azure_identity::{
    ClientAssertionCredentialOptions, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use keyferry_emulator::{ClientEntry, Clients, EmulatorConfig, Operation};

fn restricted() -> EmulatorConfig {
    EmulatorConfig {
        clients: Clients::Allowed(vec![
            ClientEntry {
                client_id: "sp".into(),
                client_secret: Some("sp-secret".into()),
                federated: false,
            },
            ClientEntry {
                client_id: "workload".into(),
                client_secret: None,
                federated: true,
            },
        ]),
        ..EmulatorConfig::default()
    }
}

#[tokio::test]
async fn client_secret_credential_with_restricted_clients() {
    let emu = common::start_with(restricted()).await;
    emu.set_secret("s", "v").unwrap();

    let good = common::secret_client_with(&emu, common::secret_credential(&emu, "sp", "sp-secret"), false);
    let got = good.get_secret("s", None).await.unwrap().into_model().unwrap();
    assert_eq!(got.value.as_deref(), Some("v"));
    // The token is cached: more calls, one token request.
    for _ in 0..5 {
        good.get_secret("s", None).await.unwrap();
    }
    assert_eq!(emu.counters().requests(Operation::Token), 1);

    let bad = common::secret_client_with(&emu, common::secret_credential(&emu, "sp", "wrong"), false);
    let err = bad.get_secret("s", None).await.unwrap_err();
    assert!(
        err.to_string().contains("invalid_client") || format!("{err:?}").contains("7000215"),
        "{err:?}"
    );
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn workload_identity_credential() {
    let emu = common::start_with(restricted()).await;
    emu.set_secret("s", "v").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2ln",
    )
    .unwrap();

    let credential = |client_id: &str| {
        WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions {
                client_options: common::client_options(&emu, false),
            },
            client_id: Some(client_id.to_owned()),
            tenant_id: Some(emu.tenant_id().to_owned()),
            token_file_path: Some(token_file.clone()),
        }))
        .unwrap()
    };

    let client = common::secret_client_with(&emu, credential("workload") as Arc<_>, false);
    let got = client.get_secret("s", None).await.unwrap().into_model().unwrap();
    assert_eq!(got.value.as_deref(), Some("v"));

    // A service principal without federation may not use an assertion.
    let client = common::secret_client_with(&emu, credential("sp") as Arc<_>, false);
    assert!(client.get_secret("s", None).await.is_err());
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn dev_mode_accepts_any_client() {
    let emu = common::start().await;
    emu.set_secret("s", "v").unwrap();
    let client =
        common::secret_client_with(&emu, common::secret_credential(&emu, "anyone", "anything"), false);
    assert!(client.get_secret("s", None).await.is_ok());
    emu.shutdown().await.unwrap();
}
