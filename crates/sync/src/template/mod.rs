//! Go `text/template` subset (ESO's template engine v2).

use std::fmt;

/// A position in a template: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
}

/// A template error: where and what. Never contains a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.pos.line, self.pos.col, self.message)
    }
}

impl std::error::Error for TemplateError {}

/// A parsed template.
#[derive(Clone, Debug)]
pub struct Template {}

impl Template {
    /// Parses a template.
    pub fn parse(_src: &str) -> Result<Template, TemplateError> {
        Ok(Template {})
    }
}
