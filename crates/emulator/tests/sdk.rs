//! The real, unmodified Azure Key Vault SDK against the emulator, challenge verification on.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use azure_security_keyvault_secrets::ResourceExt;
use azure_security_keyvault_secrets::models::{
    SecretAttributes, SecretClientGetSecretOptions, SecretClientListSecretPropertiesOptions,
    SecretClientListSecretPropertiesVersionsOptions, SetSecretParameters, UpdateSecretPropertiesParameters,
};
use common::{secret_client, status_and_code};
use futures::TryStreamExt;

fn value(v: &str) -> SetSecretParameters {
    SetSecretParameters {
        value: Some(v.to_owned()),
        ..Default::default()
    }
}

#[tokio::test]
async fn set_get_and_versions() {
    let emu = common::start().await;
    let client = secret_client(&emu);

    let first = client
        .set_secret("db-password", value("one").try_into().unwrap(), None)
        .await
        .unwrap();
    let first = first.into_model().unwrap();
    assert_eq!(first.value.as_deref(), Some("one"));
    let first_id = first.resource_id().unwrap();
    assert_eq!(first_id.name, "db-password");
    let first_version = first_id.version.unwrap();
    assert_eq!(first_version.len(), 32);
    assert!(first.id.as_deref().unwrap().starts_with(emu.vault_url()));

    let params = SetSecretParameters {
        value: Some("two".into()),
        content_type: Some("text/plain".into()),
        tags: Some(HashMap::from([("app".into(), "netbox".into())])),
        ..Default::default()
    };
    client
        .set_secret("db-password", params.try_into().unwrap(), None)
        .await
        .unwrap();
    client
        .set_secret("DB-Password", value("three").try_into().unwrap(), None)
        .await
        .unwrap();

    // Latest (the SDK asks for `/secrets/{name}/`), case-insensitively.
    let latest = client
        .get_secret("DB-PASSWORD", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(latest.value.as_deref(), Some("three"));
    let attrs = latest.attributes.unwrap();
    assert_eq!(attrs.enabled, Some(true));
    assert!(attrs.created.is_some() && attrs.updated.is_some());
    assert_eq!(attrs.recoverable_days, Some(90));

    let old = SecretClientGetSecretOptions {
        secret_version: Some(first_version.clone()),
        ..Default::default()
    };
    let old = client
        .get_secret("db-password", Some(old))
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(old.value.as_deref(), Some("one"));

    let options = SecretClientListSecretPropertiesVersionsOptions {
        maxresults: Some(2),
        ..Default::default()
    };
    let pages: Vec<_> = client
        .list_secret_properties_versions("db-password", Some(options))
        .unwrap()
        .into_pages()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 2);
    let versions: Vec<_> = client
        .list_secret_properties_versions("db-password", None)
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert_eq!(versions.len(), 3);
    assert!(
        versions
            .iter()
            .any(|v| v.resource_id().unwrap().version.as_deref() == Some(&first_version))
    );
    assert!(
        versions
            .iter()
            .any(|v| v.content_type.as_deref() == Some("text/plain"))
    );
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn list_pages_through_more_than_25() {
    let emu = common::start().await;
    for i in 0..53 {
        emu.set_secret(&format!("secret-{i:02}"), "v").unwrap();
    }
    let client = secret_client(&emu);

    let pages: Vec<_> = client
        .list_secret_properties(None)
        .unwrap()
        .into_pages()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 3, "25 + 25 + 3");

    let options = SecretClientListSecretPropertiesOptions {
        maxresults: Some(7),
        ..Default::default()
    };
    let items: Vec<_> = client
        .list_secret_properties(Some(options))
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(items.len(), 53);
    let mut names: Vec<_> = items.iter().map(|i| i.resource_id().unwrap().name).collect();
    names.dedup();
    assert_eq!(names.len(), 53, "no duplicates across pages");
    assert!(
        items.iter().all(|i| i.resource_id().unwrap().version.is_none()),
        "list ids carry no version"
    );
    let counters = emu.counters();
    assert_eq!(
        counters.status(keyferry_emulator::Operation::ListSecrets, 200),
        3 + 8
    );
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn update_properties_and_disabled_secrets() {
    let emu = common::start().await;
    let client = secret_client(&emu);
    client
        .set_secret("api-key", value("k").try_into().unwrap(), None)
        .await
        .unwrap();

    let update = UpdateSecretPropertiesParameters {
        content_type: Some("application/json".into()),
        tags: Some(HashMap::from([("owner".into(), "team-a".into())])),
        secret_attributes: Some(SecretAttributes {
            enabled: Some(false),
            ..Default::default()
        }),
    };
    let updated = client
        .update_secret_properties("api-key", update.try_into().unwrap(), None)
        .await
        .unwrap();
    let updated = updated.into_model().unwrap();
    assert_eq!(updated.value, None, "PATCH answers without the value");
    assert_eq!(updated.content_type.as_deref(), Some("application/json"));
    assert_eq!(updated.tags.unwrap()["owner"], "team-a");

    let err = client.get_secret("api-key", None).await.unwrap_err();
    assert_eq!(status_and_code(&err), (403, "Forbidden".to_owned()));

    // Still listed.
    let items: Vec<_> = client
        .list_secret_properties(None)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].attributes.as_ref().unwrap().enabled, Some(false));

    let enable = UpdateSecretPropertiesParameters {
        secret_attributes: Some(SecretAttributes {
            enabled: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    client
        .update_secret_properties("api-key", enable.try_into().unwrap(), None)
        .await
        .unwrap();
    let got = client
        .get_secret("api-key", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(got.value.as_deref(), Some("k"));
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn expired_and_not_yet_valid_secrets_are_still_readable() {
    let emu = common::start().await;
    let client = secret_client(&emu);
    let past = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let future = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let params = SetSecretParameters {
        value: Some("v".into()),
        secret_attributes: Some(SecretAttributes {
            expires: Some(past),
            not_before: Some(future),
            ..Default::default()
        }),
        ..Default::default()
    };
    client
        .set_secret("windowed", params.try_into().unwrap(), None)
        .await
        .unwrap();
    let got = client
        .get_secret("windowed", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let attrs = got.attributes.unwrap();
    assert_eq!(attrs.expires.unwrap().unix_timestamp(), past.unix_timestamp());
    assert_eq!(
        attrs.not_before.unwrap().unix_timestamp(),
        future.unix_timestamp()
    );
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn delete_recover_purge() {
    let emu = common::start().await;
    let client = secret_client(&emu);
    client
        .set_secret("temp", value("x").try_into().unwrap(), None)
        .await
        .unwrap();

    let deleted = client
        .delete_secret("temp", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(
        deleted
            .recovery_id
            .as_deref()
            .unwrap()
            .ends_with("/deletedsecrets/temp")
    );
    assert!(deleted.deleted_date.is_some() && deleted.scheduled_purge_date.is_some());

    let err = client.get_secret("temp", None).await.unwrap_err();
    assert_eq!(status_and_code(&err), (404, "SecretNotFound".to_owned()));
    let err = client
        .set_secret("temp", value("y").try_into().unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(status_and_code(&err), (409, "Conflict".to_owned()));
    assert!(err.to_string().contains("deleted but recoverable"), "{err}");

    let got = client
        .get_deleted_secret("temp", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(got.id.unwrap().contains("/secrets/temp"));
    let listed: Vec<_> = client
        .list_deleted_secret_properties(None)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);

    let recovered = client
        .recover_deleted_secret("temp", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(recovered.resource_id().unwrap().name, "temp");
    let got = client
        .get_secret("temp", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(got.value.as_deref(), Some("x"));

    client.delete_secret("temp", None).await.unwrap();
    client.purge_deleted_secret("temp", None).await.unwrap();
    let err = client.get_deleted_secret("temp", None).await.unwrap_err();
    assert_eq!(status_and_code(&err).0, 404);
    client
        .set_secret("temp", value("fresh").try_into().unwrap(), None)
        .await
        .unwrap();
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn backup_and_restore() {
    let emu = common::start().await;
    let client = secret_client(&emu);
    client
        .set_secret("portable", value("v1").try_into().unwrap(), None)
        .await
        .unwrap();
    client
        .set_secret("portable", value("v2").try_into().unwrap(), None)
        .await
        .unwrap();
    let backup = client
        .backup_secret("portable", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();

    client.delete_secret("portable", None).await.unwrap();
    client.purge_deleted_secret("portable", None).await.unwrap();

    let params = azure_security_keyvault_secrets::models::RestoreSecretParameters {
        secret_backup: backup.value,
    };
    let restored = client
        .restore_secret(params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(restored.resource_id().unwrap().name, "portable");
    let got = client
        .get_secret("portable", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(got.value.as_deref(), Some("v2"));
    let versions: Vec<_> = client
        .list_secret_properties_versions("portable", None)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(versions.len(), 2);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn errors_have_akv_codes() {
    let emu = common::start().await;
    let client = secret_client(&emu);

    let err = client.get_secret("missing", None).await.unwrap_err();
    assert_eq!(status_and_code(&err), (404, "SecretNotFound".to_owned()));
    assert!(err.to_string().contains("missing"), "{err}");

    let err = client.get_secret("bad_name", None).await.unwrap_err();
    assert_eq!(status_and_code(&err), (400, "BadParameter".to_owned()));

    let too_big = "x".repeat(keyferry_emulator::MAX_VALUE_BYTES + 1);
    let err = client
        .set_secret("big", value(&too_big).try_into().unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(status_and_code(&err), (400, "BadParameter".to_owned()));

    let tags = (0..16).map(|i| (format!("t{i}"), "v".to_owned())).collect();
    let params = SetSecretParameters {
        value: Some("v".into()),
        tags: Some(tags),
        ..Default::default()
    };
    let err = client
        .set_secret("tagged", params.try_into().unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(status_and_code(&err), (400, "BadParameter".to_owned()));
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_supported_api_version_works() {
    let emu = common::start().await;
    emu.set_secret("s", "v").unwrap();
    for api_version in ["7.4", "7.5", "7.6", "2025-06-01", "2025-07-01"] {
        let options = azure_security_keyvault_secrets::SecretClientOptions {
            api_version: api_version.to_owned(),
            client_options: common::client_options(&emu, false),
            ..Default::default()
        };
        let credential = common::secret_credential(&emu, "c", "s");
        let client =
            azure_security_keyvault_secrets::SecretClient::new(emu.vault_url(), credential, Some(options))
                .unwrap();
        let got = client.get_secret("s", None).await.unwrap().into_model().unwrap();
        assert_eq!(got.value.as_deref(), Some("v"), "{api_version}");
    }
    emu.shutdown().await.unwrap();
}
