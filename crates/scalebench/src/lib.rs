//! The scale benchmark and the chaos scenario: the keyferry controller as a child process on
//! testenv + the in-process Key Vault emulator. The `keyferry-scalebench` binary drives them; the
//! chaos test of `scripts/test` calls [`chaos::run`] directly.

pub mod args;
pub mod chaos;
pub mod controller;
pub mod objects;
pub mod openbao;
pub mod procfs;
pub mod ready;
pub mod report;
pub mod rotation;
pub mod scale;
pub mod vault;
pub mod workload;
