//! `keyferry crds`: print the CRDs.

use std::io::Write;
use std::process::ExitCode;

pub fn run() -> ExitCode {
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
