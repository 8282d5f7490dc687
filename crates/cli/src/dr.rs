//! `keyferry dr export|verify`: break-glass bundles. `export` reads the vault secrets the
//! ExternalSecrets under PATHS reference and writes them to a SOPS/age file (`sops -d` opens it);
//! `verify` checks, without a key and without reading values, that every referenced secret is in the
//! bundle at the vault's current version. `render --break-glass` serves ExternalSecrets from a bundle.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use keyferry_api::external_secret::{ExternalSecret, FindRef, SecretStoreRef, StoreKind};
use keyferry_api::manifest::{Located, Manifest};
use keyferry_api::names::{ObjectType, split_remote_key};
use keyferry_providers::breakglass::{BreakGlassClient, export_entries_with_progress, same_vault};
use keyferry_providers::{ProviderError, SecretsClient};
use keyferry_sops::bundle::{BundleMeta, bundle_index, open_bundle, seal_bundle};
use keyferry_sops::{AgeIdentity, AgeRecipient, Format};

use crate::inputs;
use crate::stores::{StoreArgs, StoreKey, Stores};

/// `keyferry dr …`
#[derive(Debug, clap::Args)]
pub struct DrArgs {
    #[command(subcommand)]
    command: DrCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DrCommand {
    /// Export the referenced vault secrets into a SOPS/age-encrypted bundle.
    Export(ExportArgs),
    /// Check a bundle is complete and current, without a key and without reading values.
    Verify(VerifyArgs),
    /// Create an age key pair: the key file (mode 0600) and its public key (age1…) on stdout.
    Keygen(KeygenArgs),
}

/// Arguments of `keyferry dr keygen` (`age-keygen` may not be installed where keyferry is).
#[derive(Debug, clap::Args)]
struct KeygenArgs {
    /// Where to write the private key file; it must not exist.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

fn keygen(args: KeygenArgs) -> ExitCode {
    if args.out.exists() {
        return fail(
            "dr keygen",
            2,
            &format!("{}: exists; refusing to overwrite a key", args.out.display()),
        );
    }
    let id = AgeIdentity::generate();
    if let Err(e) = write_private(&args.out, &id.to_key_file()) {
        return fail(
            "dr keygen",
            2,
            &format!("{}: cannot write: {e}", args.out.display()),
        );
    }
    println!("{}", id.recipient());
    ExitCode::SUCCESS
}

/// Which secrets the bundle must hold.
#[derive(Debug, Clone, clap::Args)]
struct Selection {
    /// Keep only secret names matching one of these globs.
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Drop secret names matching one of these globs.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
}

/// Arguments of `keyferry dr export`.
#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// Files or directories with the ExternalSecrets and stores whose secrets to export.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// age public keys (age1…) that can open the bundle; give one per custodian.
    #[arg(long = "age-recipient", required = true, value_name = "AGE_PUBKEY")]
    recipients: Vec<String>,
    /// Where to write the bundle (mode 0600).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Write JSON instead of YAML.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    selection: Selection,
    #[command(flatten)]
    stores: StoreArgs,
}

/// Report formats of `dr verify`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Human,
    Json,
    Junit,
    Github,
}

/// Arguments of `keyferry dr verify`.
#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// The bundle.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Files or directories with the ExternalSecrets and stores the bundle must cover.
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// An age key file: also verify the MAC and that every value decrypts.
    #[arg(long, value_name = "KEYFILE")]
    age_identity: Option<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value = "human")]
    format: ReportFormat,
    #[command(flatten)]
    selection: Selection,
    #[command(flatten)]
    stores: StoreArgs,
}

/// Runs `dr export` or `dr verify`.
pub async fn run(args: DrArgs) -> ExitCode {
    match args.command {
        DrCommand::Export(a) => export(a).await,
        DrCommand::Verify(a) => verify(a).await,
        DrCommand::Keygen(a) => keygen(a),
    }
}

fn fail(cmd: &str, code: u8, message: &str) -> ExitCode {
    eprintln!("keyferry {cmd}: {message}");
    ExitCode::from(code)
}

/// A store the ExternalSecrets use, with the vault URL recorded in the bundle and the names needed.
struct Wanted {
    vault_url: String,
    names: BTreeSet<String>,
    finds: Vec<FindRef>,
}

/// How a store names its secrets in a bundle.
#[derive(Clone, Debug)]
enum Naming {
    /// Key Vault (and `fake`): `secret/` prefix dropped, case-insensitive.
    KeyVault,
    /// Vault / OpenBao: the path in the mount (a leading `<mount>/` dropped).
    Vault {
        /// `spec.provider.vault.path`.
        mount: Option<String>,
    },
}

impl Naming {
    /// The bundle name of a remote key, or why it cannot be exported. Names are compared
    /// case-insensitively in a bundle (Key Vault's rule).
    fn name(&self, key: &str) -> Result<String, String> {
        match self {
            Naming::KeyVault => match split_remote_key(key) {
                (ObjectType::Secret, name) => Ok(name.to_ascii_lowercase()),
                _ => Err(format!(
                    "remoteRef.key {key}: only secrets are exported to a bundle"
                )),
            },
            Naming::Vault { mount } => {
                Ok(keyferry_providers::vault::key_in_mount(mount.as_deref(), key).to_ascii_lowercase())
            }
        }
    }
}

/// The store URL each store manifest names (the bundle records the manifest's URL, not a mapped
/// one): a Key Vault URL, or a Vault server and mount ([`keyferry_providers::vault::store_url`]).
fn store_urls(documents: &[Located<Manifest>]) -> BTreeMap<StoreKey, (String, Naming)> {
    let mut out = BTreeMap::new();
    for doc in documents {
        let Some((key, provider)) = crate::stores::store_of(&doc.value) else {
            continue;
        };
        let url = match (&provider.azurekv, &provider.fake, &provider.vault) {
            (Some(az), _, _) => (az.vault_url.trim_end_matches('/').to_owned(), Naming::KeyVault),
            (None, Some(_), _) => (format!("fake://{}", key.name), Naming::KeyVault),
            (None, None, Some(v)) => (
                keyferry_providers::vault::store_url(&v.server, v.path.as_deref()),
                Naming::Vault {
                    mount: v.path.clone(),
                },
            ),
            (None, None, None) => continue,
        };
        out.insert(key, url);
    }
    out
}

fn key_for(namespace: &str, r: &SecretStoreRef) -> StoreKey {
    let kind = r.kind_or_default();
    StoreKey {
        kind,
        namespace: if kind == StoreKind::SecretStore {
            namespace.to_owned()
        } else {
            String::new()
        },
        name: r.name.clone(),
    }
}

/// The allowlist: per store, the secret names the ExternalSecrets reference. Errors name the
/// document (one line each).
fn allowlist(documents: &[Located<Manifest>], errors: &mut Vec<String>) -> BTreeMap<StoreKey, Wanted> {
    let urls = store_urls(documents);
    let mut out: BTreeMap<StoreKey, Wanted> = BTreeMap::new();
    for doc in documents {
        let Manifest::ExternalSecret(es) = &doc.value else {
            continue;
        };
        let es: &ExternalSecret = es;
        let ns = es.metadata.namespace.clone().unwrap_or_default();
        let default_store = es.spec.secret_store_ref.as_ref();
        let mut add = |store: Option<&SecretStoreRef>, key: Option<&str>, find: Option<&FindRef>| {
            let Some(store) = store.or(default_store) else {
                errors.push(format!("{}: spec.secretStoreRef is missing", doc.origin));
                return;
            };
            let sk = key_for(&ns, store);
            let Some((url, naming)) = urls.get(&sk) else {
                errors.push(format!(
                    "{}: store {} is not among the given manifests (or its provider has no bundle support)",
                    doc.origin, store.name
                ));
                return;
            };
            let w = out.entry(sk).or_insert_with(|| Wanted {
                vault_url: url.clone(),
                names: BTreeSet::new(),
                finds: Vec::new(),
            });
            if let Some(key) = key {
                match naming.name(key) {
                    Ok(name) => {
                        w.names.insert(name);
                    }
                    Err(e) => errors.push(format!("{}: {e}", doc.origin)),
                }
            }
            if let Some(f) = find {
                w.finds.push(f.clone());
            }
        };
        for d in &es.spec.data {
            let store = d.source_ref.as_ref().and_then(|s| s.store_ref.as_ref());
            add(store, Some(&d.remote_ref.key), None);
        }
        for d in &es.spec.data_from {
            let store = d.source_ref.as_ref().and_then(|s| s.store_ref.as_ref());
            if let Some(e) = &d.extract {
                add(store, Some(&e.key), None);
            }
            if let Some(f) = &d.find {
                add(store, None, Some(f));
            }
        }
    }
    out
}

/// Compiles the include/exclude globs.
fn globs(sel: &Selection) -> Result<(Option<globset::GlobSet>, globset::GlobSet), String> {
    let build = |pats: &[String]| -> Result<globset::GlobSet, String> {
        let mut b = globset::GlobSetBuilder::new();
        for p in pats {
            b.add(
                globset::GlobBuilder::new(p)
                    .case_insensitive(true)
                    .build()
                    .map_err(|e| format!("glob {p:?}: {e}"))?,
            );
        }
        b.build().map_err(|e| e.to_string())
    };
    let include = if sel.include.is_empty() {
        None
    } else {
        Some(build(&sel.include)?)
    };
    Ok((include, build(&sel.exclude)?))
}

/// Resolves `find` selections against the store (properties only) and applies the globs.
async fn final_names(
    client: &dyn SecretsClient,
    w: &Wanted,
    sel: &Selection,
) -> Result<Vec<String>, ProviderError> {
    let mut names = w.names.clone();
    if !w.finds.is_empty() {
        let props = client.list_secret_properties().await?;
        for f in &w.finds {
            let re = keyferry_providers::compile_find_regexp(f)?;
            for p in props
                .iter()
                .filter(|p| keyferry_providers::find_matches(re.as_ref(), &f.tags, p))
            {
                names.insert(p.name.to_ascii_lowercase());
            }
        }
    }
    let (include, exclude) = globs(sel).map_err(|detail| ProviderError::Invalid { detail })?;
    Ok(names
        .into_iter()
        .filter(|n| include.as_ref().is_none_or(|g| g.is_match(n)) && !exclude.is_match(n))
        .collect())
}

/// Exit code for a provider failure: 3 if the vault could not be used, else 2.
fn vault_code(e: &ProviderError) -> u8 {
    match e {
        ProviderError::Unavailable { .. }
        | ProviderError::Unreachable { .. }
        | ProviderError::Throttled { .. }
        | ProviderError::Forbidden { .. } => 3,
        _ => 2,
    }
}

struct Prepared {
    stores: Stores,
    wanted: BTreeMap<StoreKey, Wanted>,
}

fn prepare(
    cmd: &str,
    paths: &[PathBuf],
    store_args: &StoreArgs,
    sel: &Selection,
) -> Result<Prepared, ExitCode> {
    let inputs = inputs::read(paths).map_err(|e| fail(cmd, 2, &e.to_string()))?;
    let settings = store_args.settings().map_err(|e| fail(cmd, 2, &e.to_string()))?;
    globs(sel).map_err(|e| fail(cmd, 2, &e))?;
    let mut errors = inputs.errors;
    let wanted = allowlist(&inputs.documents, &mut errors);
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        return Err(fail(cmd, 2, &format!("{} input error(s)", errors.len())));
    }
    let stores = Stores::build(&inputs.documents, &settings);
    Ok(Prepared { stores, wanted })
}

fn client_for(stores: &Stores, key: &StoreKey) -> Result<Arc<dyn SecretsClient>, String> {
    stores
        .all()
        .find(|(k, _)| *k == key)
        .map(|(_, c)| c)
        .unwrap_or_else(|| Err(format!("store {} has no client", key.name)))
}

async fn export(args: ExportArgs) -> ExitCode {
    const CMD: &str = "dr export";
    let mut recipients = Vec::new();
    for r in &args.recipients {
        match AgeRecipient::parse(r) {
            Ok(r) => recipients.push(r),
            Err(e) => return fail(CMD, 2, &format!("--age-recipient: {e}")),
        }
    }
    let p = match prepare(CMD, &args.paths, &args.stores, &args.selection) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut entries = Vec::new();
    let mut missing = Vec::new();
    let mut seen = BTreeSet::new();
    let bar = export_progress();
    for (key, w) in &p.wanted {
        let client = match client_for(&p.stores, key) {
            Ok(c) => c,
            Err(e) => return fail(CMD, 2, &e),
        };
        let names = match final_names(client.as_ref(), w, &args.selection).await {
            Ok(n) => n,
            Err(e) => return fail(CMD, vault_code(&e), &format!("store {}: {e}", key.name)),
        };
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| seen.insert((w.vault_url.to_ascii_lowercase(), n.clone())))
            .collect();
        bar.inc_length(u64::try_from(names.len()).unwrap_or(u64::MAX));
        bar.set_message(key.name.clone());
        let tick = || bar.inc(1);
        match export_entries_with_progress(client.as_ref(), &w.vault_url, &names, &tick).await {
            Ok((e, m)) => {
                entries.extend(e);
                missing.extend(m.into_iter().map(|n| format!("{}/{n}", w.vault_url)));
            }
            Err(e) => return fail(CMD, vault_code(&e), &format!("store {}: {e}", key.name)),
        }
    }
    bar.finish_and_clear();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let format = if args.json { Format::Json } else { Format::Yaml };
    let text = match seal_bundle(&entries, &recipients, now).and_then(|d| d.to_text(format)) {
        Ok(t) => t,
        Err(e) => return fail(CMD, 2, &e.to_string()),
    };
    if let Err(e) = write_private(&args.out, &text) {
        return fail(CMD, 2, &format!("{}: cannot write: {e}", args.out.display()));
    }
    for m in &missing {
        eprintln!("warning: {m}: not in the vault; not exported");
    }
    eprintln!(
        "exported {} secret(s) from {} store(s) to {} for {} recipient(s)",
        entries.len(),
        p.wanted.len(),
        args.out.display(),
        recipients.len()
    );
    if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A progress bar on stderr while secrets are exported, drawn only on a terminal (CI logs and
/// redirected output stay clean). Names stores, never secrets.
fn export_progress() -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} exporting {pos}/{len} secrets ({msg}) {wide_bar} {elapsed}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Writes a file readable by its owner only (the bundle is encrypted, but its metadata is not public).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// One `dr verify` finding.
struct Finding {
    vault: String,
    name: String,
    problem: String,
}

async fn verify(args: VerifyArgs) -> ExitCode {
    const CMD: &str = "dr verify";
    let shown = args.file.display().to_string();
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => return fail(CMD, 2, &format!("{shown}: cannot read: {e}")),
    };
    let doc = match keyferry_sops::parse(&text) {
        Ok(d) => d,
        Err(e) => return fail(CMD, 2, &format!("{shown}: {e}")),
    };
    let index = match bundle_index(&doc) {
        Ok(i) => i,
        Err(e) => return fail(CMD, 2, &format!("{shown}: {e}")),
    };
    if let Some(keyfile) = &args.age_identity {
        let ids = match read_identities(keyfile) {
            Ok(i) => i,
            Err(e) => return fail(CMD, 2, &e),
        };
        if let Err(e) = open_bundle(&doc, &ids) {
            return fail(CMD, 2, &format!("{shown}: {e}"));
        }
    }
    let mut findings = Vec::new();
    let mut checked = 0usize;
    // Two stores on one vault (a ClusterSecretStore and a SecretStore) check each secret once.
    let mut seen = BTreeSet::new();
    if !args.paths.is_empty() {
        let p = match prepare(CMD, &args.paths, &args.stores, &args.selection) {
            Ok(p) => p,
            Err(code) => return code,
        };
        for (key, w) in &p.wanted {
            let client = match client_for(&p.stores, key) {
                Ok(c) => c,
                Err(e) => return fail(CMD, 2, &e),
            };
            let names = match final_names(client.as_ref(), w, &args.selection).await {
                Ok(n) => n,
                Err(e) => return fail(CMD, vault_code(&e), &format!("store {}: {e}", key.name)),
            };
            // One listing per store: Key Vault lists each secret's update time (not its version id),
            // so a changed `updated` marks a rotation; when the listing has versions they are compared.
            let listed: BTreeMap<String, keyferry_providers::SecretProperties> =
                match client.list_secret_properties().await {
                    Ok(list) => list
                        .into_iter()
                        .map(|p| (p.name.to_ascii_lowercase(), p))
                        .collect(),
                    Err(e) => return fail(CMD, vault_code(&e), &format!("store {}: {e}", key.name)),
                };
            for name in names {
                if !seen.insert((w.vault_url.to_ascii_lowercase(), name.clone())) {
                    continue;
                }
                checked += 1;
                let entry: Option<&BundleMeta> = index
                    .iter()
                    .find(|m| same_vault(&m.vault_url, &w.vault_url) && m.name.eq_ignore_ascii_case(&name));
                let current = match listed.get(&name.to_ascii_lowercase()) {
                    Some(p) => p,
                    None => {
                        if entry.is_none() {
                            findings.push(Finding {
                                vault: w.vault_url.clone(),
                                name,
                                problem: "missing from the vault and from the bundle".to_owned(),
                            });
                        }
                        continue;
                    }
                };
                let problem = match entry {
                    None => Some("missing from the bundle".to_owned()),
                    Some(m) if !is_current(m, current) => Some(format!(
                        "stale: bundle has version {} (updated {}), the vault's current is {} (updated {})",
                        m.version.as_deref().unwrap_or("-"),
                        m.updated.map_or("-".to_owned(), |u| u.to_string()),
                        current.version.as_deref().unwrap_or("-"),
                        current.updated.map_or("-".to_owned(), |u| u.to_string()),
                    )),
                    Some(_) => None,
                };
                if let Some(problem) = problem {
                    findings.push(Finding {
                        vault: w.vault_url.clone(),
                        name,
                        problem,
                    });
                }
            }
        }
    }
    report(
        &args.format,
        &shown,
        index.len(),
        checked,
        &findings,
        args.age_identity.is_some(),
    );
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Whether a bundle entry is the vault's current version: by version id when the listing has one,
/// else by update time (a new version always has a new `updated`).
fn is_current(entry: &BundleMeta, listed: &keyferry_providers::SecretProperties) -> bool {
    match (&entry.version, &listed.version) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => entry.updated.is_some() && entry.updated == listed.updated,
    }
}

fn report(
    format: &ReportFormat,
    file: &str,
    entries: usize,
    checked: usize,
    findings: &[Finding],
    mac: bool,
) {
    let mut out = std::io::stdout().lock();
    match format {
        ReportFormat::Human => {
            for f in findings {
                let _ = writeln!(out, "{}/{}: {}", f.vault, f.name, f.problem);
            }
            let _ = writeln!(
                out,
                "{file}: {entries} entries; {checked} referenced secret(s) checked; {} problem(s){}",
                findings.len(),
                if mac { "; MAC and every value verified" } else { "" }
            );
        }
        ReportFormat::Json => {
            let items: Vec<serde_json::Value> = findings
                .iter()
                .map(|f| serde_json::json!({"vault": f.vault, "name": f.name, "problem": f.problem}))
                .collect();
            let v = serde_json::json!({"file": file, "entries": entries, "checked": checked, "macVerified": mac, "findings": items});
            let _ = writeln!(out, "{v}");
        }
        ReportFormat::Github => {
            for f in findings {
                let _ = writeln!(
                    out,
                    "::error file={file},title=break-glass bundle::{}/{}: {}",
                    f.vault, f.name, f.problem
                );
            }
        }
        ReportFormat::Junit => {
            let esc = |s: &str| {
                s.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&quot;")
            };
            let _ = writeln!(
                out,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"keyferry dr verify\" tests=\"{}\" failures=\"{}\">",
                checked.max(findings.len()),
                findings.len()
            );
            for f in findings {
                let _ = writeln!(
                    out,
                    "  <testcase classname=\"{}\" name=\"{}\"><failure message=\"{}\"/></testcase>",
                    esc(&f.vault),
                    esc(&f.name),
                    esc(&f.problem)
                );
            }
            let _ = writeln!(out, "</testsuite>");
        }
    }
}

/// Reads an age key file; errors never show its content.
pub fn read_identities(path: &std::path::Path) -> Result<Vec<AgeIdentity>, String> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?,
    );
    keyferry_sops::parse_identities(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `render --break-glass`: replaces every Azure/Vault/fake store's client by the bundle's entries for its
/// vault URL.
pub fn serve_from_bundle(
    stores: &mut Stores,
    documents: &[Located<Manifest>],
    bundle: &std::path::Path,
    identity: &std::path::Path,
) -> Result<(), String> {
    let shown = bundle.display().to_string();
    let text = std::fs::read_to_string(bundle).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let ids = read_identities(identity)?;
    let doc = keyferry_sops::parse(&text).map_err(|e| format!("{shown}: {e}"))?;
    let entries = open_bundle(&doc, &ids).map_err(|e| format!("{shown}: {e}"))?;
    let urls = store_urls(documents);
    stores.override_clients(|key| {
        let (url, _) = urls.get(key)?;
        let client =
            BreakGlassClient::from_entries(&format!("break-glass {}", key.name), Some(url), entries.clone());
        Some(Arc::new(client) as Arc<dyn SecretsClient>)
    });
    Ok(())
}
