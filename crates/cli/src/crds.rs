//! `keyferry crds`: print the CRDs, or write the API reference generated from them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `keyferry crds` flags.
#[derive(clap::Args, Debug)]
pub struct CrdsArgs {
    /// Instead of printing the CRDs, write the Markdown API reference (one page per kind and an
    /// index) into this directory, e.g. `docs/reference`.
    #[arg(long, value_name = "DIR")]
    pub reference: Option<PathBuf>,
}

pub fn run(args: &CrdsArgs) -> ExitCode {
    if let Some(dir) = &args.reference {
        return match write_reference(dir) {
            Ok(n) => {
                eprintln!("keyferry crds: wrote {n} pages to {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keyferry crds: {e}");
                ExitCode::from(2)
            }
        };
    }
    match keyferry_api::crds::all_yaml() {
        Ok(yaml) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(yaml.as_bytes()).and_then(|()| out.flush()).is_err() {
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyferry crds: cannot serialize the CRDs: {e}");
            ExitCode::from(2)
        }
    }
}

fn write_reference(dir: &Path) -> Result<usize, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let pages = keyferry_api::reference::pages(&keyferry_api::crds::all());
    for page in &pages {
        let path = dir.join(&page.file);
        std::fs::write(&path, &page.markdown).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(pages.len())
}
