//! [`SecretsClient`] for [`AzureProvider`]: the Key Vault operations keyferry needs.
//!
//! Request discipline (each line is a request budget decision):
//! - `get_secret`: one GET.
//! - `get_all_secrets`: one paged list (25 a page), filtered here, then one GET per match.
//! - `secret_exists`: one paged list of the secret's versions (plus one deleted-secret lookup when
//!   there is no live secret); never reads the value.
//! - `push_secret`: one GET to compare, one PUT only when the value or tags changed.
//! - `validate`: one list page of one item.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use azure_security_keyvault_certificates::models::{
    CertificateAttributes, CertificateClientGetCertificateOptions,
};
use azure_security_keyvault_keys::models::{KeyAttributes, KeyClientGetKeyOptions};
use azure_security_keyvault_secrets::models::{
    SecretAttributes, SecretClientGetSecretOptions, SecretClientListSecretPropertiesOptions,
    SecretClientListSecretPropertiesVersionsOptions, SecretProperties as SdkSecretProperties,
    SetSecretParameters,
};
use futures::StreamExt as _;
use keyferry_api::external_secret::{FindRef, MetadataPolicy, RemoteRef};
use keyferry_api::names::{ObjectType, check_vault_name, split_remote_key};
use time::OffsetDateTime;
use zeroize::Zeroize as _;

use super::AzureProvider;
use super::errors::{Ctx, map_error};
use crate::{
    Existence, MANAGED_BY_TAG, ProviderError, RemoteValue, SecretProperties, SecretValue, SecretsClient,
    metadata_json,
};

/// Key Vault's page size limit; one list transaction returns at most this many items.
const PAGE_SIZE: i32 = 25;

/// Most secrets (or versions) one listing may return. Key Vault itself has no such limit; 100,000
/// is 4,000 pages, four times the largest vault measured (25,000 secrets, docs/performance.md).
pub const MAX_LISTED_ITEMS: usize = 100_000;

/// Most bytes of properties (names, versions, tags, content types) one listing may keep. With the
/// per-response cap ([`super::MAX_RESPONSE_BYTES`]) this bounds what a vault that pages forever or
/// pads its pages can make the controller hold: listings fail instead.
pub const MAX_LISTING_BYTES: usize = 32 * 1024 * 1024;

/// What one listed item keeps in memory, roughly.
pub(crate) fn retained_bytes(p: &SecretProperties) -> usize {
    64 + p.name.len()
        + p.version.as_deref().map_or(0, str::len)
        + p.content_type.as_deref().map_or(0, str::len)
        + p.tags.iter().map(|(k, v)| k.len() + v.len() + 32).sum::<usize>()
}

/// The attributes every Key Vault object has.
#[derive(Default)]
pub(crate) struct Attrs {
    enabled: Option<bool>,
    created: Option<OffsetDateTime>,
    updated: Option<OffsetDateTime>,
    not_before: Option<OffsetDateTime>,
    expires: Option<OffsetDateTime>,
}

macro_rules! attrs_from {
    ($t:ty) => {
        impl From<&$t> for Attrs {
            fn from(a: &$t) -> Self {
                Attrs {
                    enabled: a.enabled,
                    created: a.created,
                    updated: a.updated,
                    not_before: a.not_before,
                    expires: a.expires,
                }
            }
        }
    };
}
attrs_from!(SecretAttributes);
attrs_from!(KeyAttributes);
attrs_from!(CertificateAttributes);

/// `https://v.vault.azure.net/{secrets|keys|certificates}/{name}[/{version}]` → (name, version).
pub(crate) fn parse_object_id(id: &str) -> Option<(String, Option<String>)> {
    let url = url::Url::parse(id).ok()?;
    let segs: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [_, name] => Some(((*name).to_owned(), None)),
        [_, name, version] => Some(((*name).to_owned(), Some((*version).to_owned()))),
        _ => None,
    }
}

pub(crate) fn properties(
    id: Option<&str>,
    attrs: Attrs,
    tags: Option<&HashMap<String, String>>,
    content_type: Option<&String>,
) -> Option<SecretProperties> {
    let (name, version) = parse_object_id(id?)?;
    Some(SecretProperties {
        name,
        version,
        // Absent attributes mean the service default: enabled.
        enabled: attrs.enabled.unwrap_or(true),
        created: attrs.created.map(OffsetDateTime::unix_timestamp),
        updated: attrs.updated.map(OffsetDateTime::unix_timestamp),
        not_before: attrs.not_before.map(OffsetDateTime::unix_timestamp),
        expires: attrs.expires.map(OffsetDateTime::unix_timestamp),
        tags: tags
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        content_type: content_type.cloned(),
    })
}

impl AzureProvider {
    fn ctx<'a>(&'a self, key: &'a str) -> Ctx<'a> {
        Ctx {
            store: &self.inner.vault_url,
            identity: &self.inner.identity,
            key: Some(key),
        }
    }

    fn fail(&self, key: &str, e: &azure_core::Error) -> ProviderError {
        map_error(e, self.ctx(key))
    }

    fn malformed(&self, key: &str, what: &str) -> ProviderError {
        ProviderError::Invalid {
            detail: format!("{}: malformed response for {key}: {what}", self.inner.vault_url),
        }
    }

    fn disabled(&self, key: &str) -> ProviderError {
        ProviderError::Disabled {
            key: key.to_owned(),
            store: self.inner.vault_url.clone(),
        }
    }

    /// Splits and checks a remote key. Checking the name matters: it becomes a URL path segment.
    fn object<'k>(&self, key: &'k str) -> Result<(ObjectType, &'k str), ProviderError> {
        let (kind, name) = split_remote_key(key);
        check_vault_name(name).map_err(|e| ProviderError::Invalid {
            detail: format!("remote key {key:?}: {e}"),
        })?;
        Ok((kind, name))
    }

    async fn get_secret_object(
        &self,
        name: &str,
        remote: &RemoteRef,
        fetch_meta: bool,
    ) -> Result<RemoteValue, ProviderError> {
        let key = remote.key.as_str();
        let options = SecretClientGetSecretOptions {
            secret_version: remote.version.clone(),
            ..Default::default()
        };
        let mut secret = self
            .inner
            .secrets
            .get_secret(name, Some(options))
            .await
            .and_then(|r| r.into_model())
            .map_err(|e| self.fail(key, &e))?;
        let attrs = secret.attributes.as_ref().map(Attrs::from).unwrap_or_default();
        let props = properties(
            secret.id.as_deref(),
            attrs,
            secret.tags.as_ref(),
            secret.content_type.as_ref(),
        )
        .ok_or_else(|| self.malformed(key, "no usable id"))?;
        let value = secret.value.take();
        if fetch_meta {
            if let Some(mut v) = value {
                v.zeroize();
            }
            // ESO's `GetSecretMap` names tags `<secret>_<tag>` (for secrets only: it refuses
            // `dataFrom` on keys and certificates).
            return Ok(RemoteValue::azure_metadata(name, &props));
        }
        if !props.enabled {
            // AKV answers 403 SecretDisabled itself; this guards servers that return the bundle.
            return Err(self.disabled(key));
        }
        let value = value.ok_or_else(|| self.malformed(key, "no value"))?;
        // `SecretValue::from(String)` moves the buffer, so no unzeroed copy is left behind.
        Ok(RemoteValue::new(SecretValue::from(value), props.version))
    }

    async fn get_key_object(
        &self,
        name: &str,
        remote: &RemoteRef,
        fetch_meta: bool,
    ) -> Result<RemoteValue, ProviderError> {
        let key = remote.key.as_str();
        let options = KeyClientGetKeyOptions {
            key_version: remote.version.clone(),
            ..Default::default()
        };
        let bundle = self
            .inner
            .keys
            .get_key(name, Some(options))
            .await
            .and_then(|r| r.into_model())
            .map_err(|e| self.fail(key, &e))?;
        let mut jwk = bundle.key.ok_or_else(|| self.malformed(key, "no key"))?;
        let attrs = bundle.attributes.as_ref().map(Attrs::from).unwrap_or_default();
        let props = properties(jwk.kid.as_deref(), attrs, bundle.tags.as_ref(), None)
            .ok_or_else(|| self.malformed(key, "no usable kid"))?;
        if fetch_meta {
            return Ok(RemoteValue::new(metadata_json(&props), props.version));
        }
        if !props.enabled {
            return Err(self.disabled(key));
        }
        // Key Vault never returns private material for keys; strip it anyway so a misbehaving
        // server cannot make us publish it.
        (jwk.d, jwk.dp, jwk.dq, jwk.p, jwk.q, jwk.qi, jwk.k, jwk.t) =
            (None, None, None, None, None, None, None, None);
        let json =
            serde_json::to_vec(&jwk).map_err(|_| self.malformed(key, "key not serializable as JWK"))?;
        Ok(RemoteValue::new(SecretValue::new(json), props.version))
    }

    async fn get_certificate_object(
        &self,
        name: &str,
        remote: &RemoteRef,
        fetch_meta: bool,
    ) -> Result<RemoteValue, ProviderError> {
        let key = remote.key.as_str();
        let options = CertificateClientGetCertificateOptions {
            certificate_version: remote.version.clone(),
            ..Default::default()
        };
        let cert = self
            .inner
            .certs
            .get_certificate(name, Some(options))
            .await
            .and_then(|r| r.into_model())
            .map_err(|e| self.fail(key, &e))?;
        let attrs = cert.attributes.as_ref().map(Attrs::from).unwrap_or_default();
        let props = properties(
            cert.id.as_deref(),
            attrs,
            cert.tags.as_ref(),
            cert.content_type.as_ref(),
        )
        .ok_or_else(|| self.malformed(key, "no usable id"))?;
        if fetch_meta {
            return Ok(RemoteValue::new(metadata_json(&props), props.version));
        }
        if !props.enabled {
            return Err(self.disabled(key));
        }
        let der = cert.cer.ok_or_else(|| self.malformed(key, "no cer"))?;
        Ok(RemoteValue::new(SecretValue::new(der), props.version))
    }

    /// Collects a listing into our properties, within [`MAX_LISTED_ITEMS`] and
    /// [`MAX_LISTING_BYTES`]; `what` names the listing in errors (the secret, or `(list)`).
    async fn collect_listing<S>(&self, pager: S, what: &str) -> Result<Vec<SecretProperties>, ProviderError>
    where
        S: futures::Stream<Item = azure_core::Result<SdkSecretProperties>>,
    {
        let mut pager = std::pin::pin!(pager);
        let (mut out, mut listed, mut bytes) = (Vec::new(), 0usize, 0usize);
        while let Some(item) = pager.next().await {
            let item = item.map_err(|e| self.fail(what, &e))?;
            listed += 1;
            if listed > MAX_LISTED_ITEMS {
                return Err(self.listing_too_large(what, format!("more than {MAX_LISTED_ITEMS} items")));
            }
            let attrs = item.attributes.as_ref().map(Attrs::from).unwrap_or_default();
            let Some(props) = properties(
                item.id.as_deref(),
                attrs,
                item.tags.as_ref(),
                item.content_type.as_ref(),
            ) else {
                tracing::warn!(vault = %self.inner.vault_url, listing = what, "skipping a listed item without a usable id");
                continue;
            };
            bytes = bytes.saturating_add(retained_bytes(&props));
            if bytes > MAX_LISTING_BYTES {
                return Err(self.listing_too_large(
                    what,
                    format!("more than {MAX_LISTING_BYTES} bytes of names, versions and tags"),
                ));
            }
            out.push(props);
        }
        Ok(out)
    }

    fn listing_too_large(&self, what: &str, over: String) -> ProviderError {
        ProviderError::Invalid {
            detail: format!(
                "{}: the listing for {what} returned {over}, keyferry's cap per listing; not read further",
                self.inner.vault_url
            ),
        }
    }

    /// Properties of every version of a live secret; empty when there is none.
    async fn versions(&self, name: &str) -> Result<Vec<SecretProperties>, ProviderError> {
        let options = SecretClientListSecretPropertiesVersionsOptions {
            maxresults: Some(PAGE_SIZE),
            ..Default::default()
        };
        let listed = match self
            .inner
            .secrets
            .list_secret_properties_versions(name, Some(options))
        {
            Ok(pager) => self.collect_listing(pager, name).await,
            Err(e) => Err(self.fail(name, &e)),
        };
        match listed {
            Err(ProviderError::NotFound { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// For a name with no live secret: soft-deleted or missing.
    async fn deleted_or_missing(&self, name: &str) -> Result<Existence, ProviderError> {
        match self
            .inner
            .secrets
            .get_deleted_secret(name, None)
            .await
            .and_then(|r| r.into_model())
        {
            Ok(mut deleted) => {
                // The deleted bundle may carry the value; we never wanted it.
                if let Some(mut v) = deleted.value.take() {
                    v.zeroize();
                }
                Ok(Existence::SoftDeleted)
            }
            Err(e) => match self.fail(name, &e) {
                ProviderError::NotFound { .. } => Ok(Existence::Missing),
                // Without permission to see deleted secrets, the live answer stands: it is not there.
                ProviderError::Forbidden { .. } => Ok(Existence::Missing),
                other => Err(other),
            },
        }
    }
}

/// The current version among a secret's versions: the newest `created` (then `updated`).
///
/// Key Vault's version list does not mark the current version; the newest is current unless two
/// versions were created within the same second, which the service's 1 s timestamps cannot order.
fn current_version(versions: Vec<SecretProperties>) -> Option<SecretProperties> {
    versions.into_iter().max_by_key(|p| (p.created, p.updated))
}

fn is_managed(tags: &BTreeMap<String, String>) -> bool {
    tags.get(MANAGED_BY_TAG.0).map(String::as_str) == Some(MANAGED_BY_TAG.1)
}

#[async_trait]
impl SecretsClient for AzureProvider {
    fn listing_page_size(&self) -> Option<usize> {
        usize::try_from(PAGE_SIZE).ok()
    }
    async fn get_secret(&self, remote: &RemoteRef) -> Result<RemoteValue, ProviderError> {
        let (kind, name) = self.object(&remote.key)?;
        let fetch_meta = remote.metadata_policy == Some(MetadataPolicy::Fetch);
        match kind {
            ObjectType::Secret => self.get_secret_object(name, remote, fetch_meta).await,
            ObjectType::Key => self.get_key_object(name, remote, fetch_meta).await,
            ObjectType::Certificate => self.get_certificate_object(name, remote, fetch_meta).await,
        }
    }

    async fn get_all_secrets(&self, find: &FindRef) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        crate::find_secrets(self, find).await
    }

    async fn list_secret_properties(&self) -> Result<Vec<SecretProperties>, ProviderError> {
        let options = SecretClientListSecretPropertiesOptions {
            maxresults: Some(PAGE_SIZE),
            ..Default::default()
        };
        match self.inner.secrets.list_secret_properties(Some(options)) {
            Ok(pager) => self.collect_listing(pager, "(list)").await,
            Err(e) => Err(self.fail("(list)", &e)),
        }
    }

    async fn secret_exists(&self, remote: &RemoteRef) -> Result<Existence, ProviderError> {
        let (kind, name) = self.object(&remote.key)?;
        if kind != ObjectType::Secret {
            return Err(ProviderError::Invalid {
                detail: format!("remote key {}: existence checks cover secrets only", remote.key),
            });
        }
        let versions = self.versions(name).await?;
        if versions.is_empty() {
            return self.deleted_or_missing(name).await;
        }
        let chosen = match &remote.version {
            Some(want) => versions
                .into_iter()
                .find(|p| p.version.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(want))),
            None => current_version(versions),
        };
        Ok(chosen.map_or(Existence::Missing, Existence::Present))
    }

    /// One GET of the current version (Key Vault has no properties-only read of one secret; the
    /// value in the answer is wiped at once). A certificate's properties are those of its backing
    /// secret, which listings show under the certificate's name; keys are not in a secret listing.
    async fn secret_properties(&self, key: &str) -> Result<Option<SecretProperties>, ProviderError> {
        let (kind, name) = self.object(key)?;
        if kind == ObjectType::Key {
            return Ok(None);
        }
        let answer = self
            .inner
            .secrets
            .get_secret(name, None)
            .await
            .and_then(|r| r.into_model());
        let mut secret = match answer {
            Ok(secret) => secret,
            Err(e) => {
                return match self.fail(key, &e) {
                    ProviderError::NotFound { .. } => Ok(None),
                    // A disabled current version is not readable; its properties are listed.
                    ProviderError::Disabled { .. } => {
                        let remote = RemoteRef {
                            key: name.to_owned(),
                            ..RemoteRef::default()
                        };
                        Ok(match self.secret_exists(&remote).await? {
                            Existence::Present(p) => Some(p),
                            Existence::SoftDeleted | Existence::Missing => None,
                        })
                    }
                    other => Err(other),
                };
            }
        };
        if let Some(mut v) = secret.value.take() {
            v.zeroize();
        }
        let attrs = secret.attributes.as_ref().map(Attrs::from).unwrap_or_default();
        properties(
            secret.id.as_deref(),
            attrs,
            secret.tags.as_ref(),
            secret.content_type.as_ref(),
        )
        .map(Some)
        .ok_or_else(|| self.malformed(key, "no usable id"))
    }

    async fn push_secret(
        &self,
        name: &str,
        value: &SecretValue,
        tags: &BTreeMap<String, String>,
    ) -> Result<bool, ProviderError> {
        let (kind, name) = self.object(name)?;
        if kind != ObjectType::Secret {
            return Err(ProviderError::Invalid {
                detail: format!("push writes secrets only, not {name:?} ({kind:?})"),
            });
        }
        let text = value.expose_str().ok_or_else(|| ProviderError::Invalid {
            detail: format!(
                "{}: value for {name} is not UTF-8; Key Vault secrets hold text",
                self.inner.vault_url
            ),
        })?;
        let mut want_tags = tags.clone();
        want_tags.insert(MANAGED_BY_TAG.0.to_owned(), MANAGED_BY_TAG.1.to_owned());

        let current = self
            .inner
            .secrets
            .get_secret(name, None)
            .await
            .and_then(|r| r.into_model());
        match current {
            Ok(mut current) => {
                let current_tags: BTreeMap<String, String> =
                    current.tags.take().unwrap_or_default().into_iter().collect();
                let mut current_value = current.value.take().unwrap_or_default();
                let unchanged = current_value == text && current_tags == want_tags;
                current_value.zeroize();
                if !is_managed(&current_tags) {
                    // Like ESO's PushSecret: never overwrite a secret someone else owns.
                    return Err(ProviderError::Invalid {
                        detail: format!(
                            "{}: secret {name} exists and is not managed by keyferry (no managed-by=keyferry tag); not overwriting",
                            self.inner.vault_url
                        ),
                    });
                }
                if unchanged {
                    return Ok(false);
                }
            }
            Err(e) => match self.fail(name, &e) {
                ProviderError::NotFound { .. } => {}
                // A disabled secret cannot be read to compare; a new version will be written (and
                // the service itself refuses if a policy forbids it).
                ProviderError::Disabled { .. } => {}
                other => return Err(other),
            },
        }
        let params = SetSecretParameters {
            value: Some(text.to_owned()),
            tags: Some(want_tags.into_iter().collect()),
            ..SetSecretParameters::default()
        };
        let body = params
            .try_into()
            .map_err(|e: azure_core::Error| self.fail(name, &e))?;
        self.inner
            .secrets
            .set_secret(name, body, None)
            .await
            .map_err(|e| self.fail(name, &e))?;
        Ok(true)
    }

    async fn delete_secret(&self, name: &str) -> Result<(), ProviderError> {
        let remote = RemoteRef {
            key: name.to_owned(),
            ..RemoteRef::default()
        };
        match self.secret_exists(&remote).await? {
            Existence::Present(p) if is_managed(&p.tags) => {
                let (_, name) = self.object(name)?;
                self.inner
                    .secrets
                    .delete_secret(name, None)
                    .await
                    .map_err(|e| self.fail(name, &e))?;
                Ok(())
            }
            Existence::Present(_) => Err(ProviderError::Invalid {
                detail: format!(
                    "{}: secret {name} is not managed by keyferry (no managed-by=keyferry tag); not deleting",
                    self.inner.vault_url
                ),
            }),
            Existence::SoftDeleted => Ok(()),
            Existence::Missing => Err(ProviderError::NotFound {
                key: name.to_owned(),
                store: self.inner.vault_url.clone(),
            }),
        }
    }

    async fn validate(&self) -> Result<(), ProviderError> {
        let options = SecretClientListSecretPropertiesOptions {
            maxresults: Some(1),
            ..Default::default()
        };
        let pager = self
            .inner
            .secrets
            .list_secret_properties(Some(options))
            .map_err(|e| self.fail("(validate)", &e))?;
        match pager.into_pages().next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(self.fail("(validate)", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids() {
        assert_eq!(
            parse_object_id("https://kv.vault.azure.net/secrets/db/0123abcd"),
            Some(("db".into(), Some("0123abcd".into())))
        );
        assert_eq!(
            parse_object_id("https://kv.vault.localhost:8443/secrets/db"),
            Some(("db".into(), None))
        );
        assert_eq!(
            parse_object_id("https://kv.vault.azure.net/keys/k/v1?api-version=7.6"),
            Some(("k".into(), Some("v1".into())))
        );
        assert_eq!(parse_object_id("not a url"), None);
        assert_eq!(parse_object_id("https://kv.vault.azure.net/"), None);
    }

    #[test]
    fn newest_version_is_current() {
        let v = |id: &str, created: i64| SecretProperties {
            version: Some(id.into()),
            created: Some(created),
            ..SecretProperties::default()
        };
        let got = current_version(vec![v("a", 10), v("c", 30), v("b", 20)]);
        assert_eq!(got.and_then(|p| p.version).as_deref(), Some("c"));
        assert!(current_version(Vec::new()).is_none());
    }
}
