//! The published JSON Schema (deploy/vm/agent.schema.json) matches the config types, and the
//! shipped example configs parse.

use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn published_schema_matches_the_config_types() {
    let path = repo().join("deploy/vm/agent.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == keyferry_agent::config::json_schema(),
        "{} is out of date: run `keyferry agent schema > deploy/vm/agent.schema.json`",
        path.display()
    );
}

#[test]
fn example_configs_parse() {
    let path = repo().join("examples/vm/db-01/agent.yaml");
    if let Err(e) = keyferry_agent::AgentConfig::load(&path) {
        panic!("{e}");
    }
}
