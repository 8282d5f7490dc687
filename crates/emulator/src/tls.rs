//! TLS: a generated CA + server certificate, or PEM files given by the user.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::EmulatorError;

/// Installs ring as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// TLS material ready to serve.
pub(crate) struct TlsMaterial {
    pub(crate) server_config: Arc<ServerConfig>,
    /// PEM that clients should trust.
    pub(crate) ca_pem: String,
}

/// The SANs of the generated server certificate. Besides the emulator's own names it covers the
/// public-cloud names that some clients hard-code (`*.vault.azure.net`, `login.microsoftonline.com`),
/// so a test harness can point those names at the emulator with a hosts entry; the certificate is
/// only trusted by whoever trusts this emulator's freshly generated CA.
pub(crate) fn subject_alt_names(vault_name: &str) -> Vec<String> {
    vec![
        format!("{vault_name}.vault.localhost"),
        "*.vault.localhost".to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "*.vault.azure.net".to_owned(),
        "login.microsoftonline.com".to_owned(),
    ]
}

fn tls_err(context: &str) -> impl Fn(rcgen::Error) -> EmulatorError + '_ {
    move |e| EmulatorError::Tls(format!("{context}: {e}"))
}

/// Generates a CA and a server certificate signed by it.
pub(crate) fn generate(vault_name: &str) -> Result<TlsMaterial, EmulatorError> {
    let now = time::OffsetDateTime::now_utc();
    let validity = |p: &mut CertificateParams| {
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(365);
    };

    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "keyferry emulator CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca_params);
    let ca_key = KeyPair::generate().map_err(tls_err("CA key"))?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(tls_err("CA certificate"))?;

    let mut leaf_params =
        CertificateParams::new(subject_alt_names(vault_name)).map_err(tls_err("server certificate names"))?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, format!("{vault_name}.vault.localhost"));
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.use_authority_key_identifier_extension = true;
    validity(&mut leaf_params);
    let leaf_key = KeyPair::generate().map_err(tls_err("server key"))?;
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca)
        .map_err(tls_err("server certificate"))?;

    let chain = vec![leaf.der().clone(), ca.der().clone()];
    let key = PrivateKeyDer::try_from(leaf_key.serialize_der())
        .map_err(|e| EmulatorError::Tls(format!("server key: {e}")))?;
    Ok(TlsMaterial {
        server_config: server_config(chain, key)?,
        ca_pem: ca.pem(),
    })
}

/// Loads a certificate chain and key from PEM files; the chain PEM is what clients trust.
pub(crate) fn load(cert: &Path, key: &Path) -> Result<TlsMaterial, EmulatorError> {
    let cert_pem = std::fs::read(cert).map_err(|e| EmulatorError::io(cert, e))?;
    let key_pem = std::fs::read(key).map_err(|e| EmulatorError::io(key, e))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EmulatorError::invalid_file(cert, format!("invalid certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(EmulatorError::invalid_file(cert, "no CERTIFICATE block found"));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| EmulatorError::invalid_file(key, format!("invalid private key PEM: {e}")))?;
    let ca_pem = String::from_utf8_lossy(&cert_pem).into_owned();
    Ok(TlsMaterial {
        server_config: server_config(chain, key_der)?,
        ca_pem,
    })
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, EmulatorError> {
    install_crypto_provider();
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| EmulatorError::Tls(format!("certificate/key mismatch or unsupported key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Writes the CA PEM to `path`, creating parent directories.
pub(crate) fn write_ca(path: &Path, pem: &str) -> Result<(), EmulatorError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| EmulatorError::io(dir, e))?;
    }
    std::fs::write(path, pem).map_err(|e| EmulatorError::io(path, e))
}

/// Default CA file location: beside the state file, else in the temp directory.
pub(crate) fn default_ca_path(state: Option<&Path>, port: u16) -> PathBuf {
    match state.and_then(Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("keyferry-emulator-ca.pem"),
        Some(_) => PathBuf::from("keyferry-emulator-ca.pem"),
        None => std::env::temp_dir().join(format!("keyferry-emulator-{}-{port}-ca.pem", std::process::id())),
    }
}
