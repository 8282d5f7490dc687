//! Templates: a Go `text/template` subset with ESO's functions (template engine `v2`).
//!
//! Why not the `gtmpl` crate (a Go template port): it has ~150 `unwrap`/`panic!` sites reachable from
//! template text, reports lines but not columns, and has no bound on output or steps. Templates come
//! from ExternalSecret authors and run inside the controller, so the engine must never panic, must say
//! exactly where a template is wrong, and must stay within memory and CPU bounds. This one is small
//! (lexer → parser → evaluator) and does all three.
//!
//! Supported (see `crates/sync/README.md` for the full list with examples):
//!
//! * actions `{{ pipeline }}`, trim markers `{{-`/`-}}`, comments `{{/* */}}`;
//! * `.key`, `.a.b`, `index . "key-with-dash"`, `$`, `$x := …`, `$x = …`, parentheses, `|` pipelines;
//! * `if`/`else if`/`else`/`end`, `with`/`else with`, `range` (lists, maps, integers; `$i, $v :=`;
//!   `else`; `break`, `continue`);
//! * string (`"…"`, `` `…` ``), character, integer, float, `true`/`false` literals;
//! * functions: [`function_names`].
//!
//! Not supported: `define`, `template`, `block`, and every function not listed — a clear error names
//! the position and the function. `env`, `expandenv`, files and network are absent on purpose.
//!
//! Semantics: a missing map key is an error (ESO runs templates with `missingkey=error`).

mod crypto;
mod eval;
mod funcs;
mod lexer;
mod parser;
mod printf;

use std::collections::BTreeMap;
use std::fmt;

pub use eval::{ExecStats, MAX_ALLOC, MAX_DURATION, MAX_STEPS, MAX_VALUE, Value};
use keyferry_providers::SecretValue;

/// A position in a template: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
}

/// A template error: where and what. Never contains a value: messages name functions, fields written
/// in the template, types and sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    /// Where; line 0 for errors about the output as a whole (not printed).
    pub pos: Pos,
    /// What.
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Errors about the output as a whole (line 0) have no position.
        if self.pos.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "{}:{}: {}", self.pos.line, self.pos.col, self.message)
        }
    }
}

impl std::error::Error for TemplateError {}

/// A parsed template.
#[derive(Clone, Debug)]
pub struct Template {
    nodes: Vec<parser::Node>,
}

impl Template {
    /// Parses a template. Unknown functions, unbalanced `{{end}}` and bad syntax fail here.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        Ok(Template {
            nodes: parser::parse(src)?,
        })
    }

    /// Executes the template with `data` as dot (and `$`).
    pub fn execute(&self, data: &Value) -> Result<Vec<u8>, TemplateError> {
        self.execute_with_stats(data, MAX_DURATION).0
    }

    /// Executes with a wall-clock limit and reports what the execution cost (steps, bytes charged,
    /// output), whether it succeeded or not.
    pub fn execute_with_stats(
        &self,
        data: &Value,
        max_duration: std::time::Duration,
    ) -> (Result<Vec<u8>, TemplateError>, ExecStats) {
        eval::Eval::run(&self.nodes, data, max_duration)
    }

    /// Executes the template over secret data: each key is a string (or bytes, when not UTF-8).
    pub fn render(&self, data: &BTreeMap<String, SecretValue>) -> Result<SecretValue, TemplateError> {
        self.execute(&secrets_value(data)).map(SecretValue::new)
    }
}

/// Secret data as a template map.
pub fn secrets_value(data: &BTreeMap<String, SecretValue>) -> Value {
    Value::Map(std::sync::Arc::new(
        data.iter()
            .map(|(k, v)| (k.clone(), Value::from_bytes(v.expose().to_vec())))
            .collect(),
    ))
}

/// The names of the supported functions.
pub fn function_names() -> &'static [&'static str] {
    funcs::Func::NAMES
}

#[cfg(test)]
mod crypto_tests;
#[cfg(test)]
mod tests;
