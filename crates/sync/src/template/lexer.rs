//! Splits a template into text and actions, and actions into tokens.
//!
//! Follows Go's `text/template` lexer: `{{- ` trims whitespace before the action and ` -}}` after it
//! (the dash must be followed/preceded by a space, so `{{-3}}` is the number -3); `{{/* … */}}` is a
//! comment; fields (`.a`), variables (`$x`), strings (`"…"` with escapes, raw `` `…` ``), characters
//! (`'a'`), numbers, `:=`, `=`, `|`, `(`, `)` and `,`.

use super::{Pos, TemplateError};

/// A token inside an action.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// A word: a function name or keyword (`if`, `range`, …).
    Ident(String),
    /// `.name`.
    Field(String),
    /// `.` alone.
    Dot,
    /// `$` or `$name` (the name without `$`; empty for `$`).
    Var(String),
    /// A string literal, unescaped.
    Str(String),
    /// An integer literal (also character literals).
    Int(i64),
    /// A floating-point literal.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `nil`.
    Nil,
    /// `:=`.
    Declare,
    /// `=`.
    Assign,
    /// `|`.
    Pipe,
    /// `(`.
    LParen,
    /// `)`.
    RParen,
    /// `,`.
    Comma,
}

/// A token with its position and whether whitespace preceded it (fields chain only without it).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: Pos,
    pub spaced: bool,
}

/// Text or an action.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Item {
    /// Literal text (already trimmed by neighbouring trim markers).
    Text(String),
    /// An action's tokens; `pos` is where `{{` is.
    Action { pos: Pos, tokens: Vec<Token> },
}

struct Lexer<'a> {
    src: &'a str,
    /// Byte offset.
    at: usize,
    line: u32,
    col: u32,
}

fn err(pos: Pos, message: impl Into<String>) -> TemplateError {
    TemplateError {
        pos,
        message: message.into(),
    }
}

/// Lexes a whole template.
pub(crate) fn lex(src: &str) -> Result<Vec<Item>, TemplateError> {
    let mut lx = Lexer {
        src,
        at: 0,
        line: 1,
        col: 1,
    };
    let mut items = Vec::new();
    let mut trim_next_text = false;
    loop {
        let rest = &lx.src[lx.at..];
        let text_len = rest.find("{{").unwrap_or(rest.len());
        let mut text = rest[..text_len].to_owned();
        lx.advance(text_len);
        if trim_next_text {
            text = text.trim_start_matches(is_space).to_owned();
        }
        if lx.at >= lx.src.len() {
            push_text(&mut items, text);
            return Ok(items);
        }
        // At "{{".
        let pos = lx.pos();
        lx.advance(2);
        if lx.rest().starts_with("- ")
            || lx.rest().starts_with("-\t")
            || lx.rest().starts_with("-\n")
            || lx.rest().starts_with("-\r")
        {
            text = text.trim_end_matches(is_space).to_owned();
            lx.advance(1);
        }
        push_text(&mut items, text);
        lx.skip_space();
        if lx.rest().starts_with("/*") {
            let Some(end) = lx.rest().find("*/") else {
                return Err(err(pos, "unclosed comment"));
            };
            lx.advance(end + 2);
            lx.skip_space();
            trim_next_text = lx.close(pos)?;
            continue;
        }
        let mut tokens = Vec::new();
        loop {
            let spaced = lx.skip_space();
            if let Some(trim) = lx.try_close() {
                trim_next_text = trim;
                break;
            }
            if lx.at >= lx.src.len() {
                return Err(err(pos, "unclosed action (missing }})"));
            }
            let tpos = lx.pos();
            let tok = lx.token(tpos)?;
            tokens.push(Token {
                tok,
                pos: tpos,
                spaced,
            });
        }
        items.push(Item::Action { pos, tokens });
    }
}

fn push_text(items: &mut Vec<Item>, text: String) {
    if !text.is_empty() {
        items.push(Item::Text(text));
    }
}

/// Go's trim markers trim ASCII spaces, tabs, carriage returns and newlines.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        &self.src[self.at..]
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// Advances by `n` bytes (always on a char boundary), tracking line and column.
    fn advance(&mut self, n: usize) {
        let end = (self.at + n).min(self.src.len());
        for c in self.src[self.at..end].chars() {
            if c == '\n' {
                self.line = self.line.saturating_add(1);
                self.col = 1;
            } else {
                self.col = self.col.saturating_add(1);
            }
        }
        self.at = end;
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.advance(c.len_utf8());
        Some(c)
    }

    /// Skips whitespace; returns whether there was any.
    fn skip_space(&mut self) -> bool {
        let n = self.rest().len() - self.rest().trim_start_matches(is_space).len();
        self.advance(n);
        n > 0
    }

    /// At ` -}}` or `}}` (after whitespace was skipped): consumes it and returns whether it trims.
    fn try_close(&mut self) -> Option<bool> {
        if self.rest().starts_with("}}") {
            self.advance(2);
            return Some(false);
        }
        // Go wants a space before the dash; after a token without one we still accept it (harmless).
        if self.rest().starts_with("-}}") {
            self.advance(3);
            return Some(true);
        }
        None
    }

    fn close(&mut self, open: Pos) -> Result<bool, TemplateError> {
        self.try_close()
            .ok_or_else(|| err(open, "comment must be followed by }}"))
    }

    fn token(&mut self, pos: Pos) -> Result<Tok, TemplateError> {
        let Some(c) = self.peek() else {
            return Err(err(pos, "unexpected end of template"));
        };
        let tok = match c {
            '|' => {
                self.bump();
                Tok::Pipe
            }
            '(' => {
                self.bump();
                Tok::LParen
            }
            ')' => {
                self.bump();
                Tok::RParen
            }
            ',' => {
                self.bump();
                Tok::Comma
            }
            '=' => {
                self.bump();
                Tok::Assign
            }
            ':' => {
                self.bump();
                if self.peek() == Some('=') {
                    self.bump();
                    Tok::Declare
                } else {
                    return Err(err(pos, "expected := after :"));
                }
            }
            '"' => Tok::Str(self.quoted(pos)?),
            '`' => {
                self.bump();
                let Some(end) = self.rest().find('`') else {
                    return Err(err(pos, "unterminated raw string"));
                };
                let s = self.rest()[..end].to_owned();
                self.advance(end + 1);
                Tok::Str(s)
            }
            '\'' => Tok::Int(self.char_literal(pos)?),
            '.' => {
                self.bump();
                let name = self.word();
                if name.is_empty() {
                    if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                        return self.number(pos, ".");
                    }
                    Tok::Dot
                } else {
                    Tok::Field(name)
                }
            }
            '$' => {
                self.bump();
                Tok::Var(self.word())
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => self.number(pos, "")?,
            c if c.is_alphabetic() || c == '_' => {
                let w = self.word();
                match w.as_str() {
                    "true" => Tok::Bool(true),
                    "false" => Tok::Bool(false),
                    "nil" => Tok::Nil,
                    _ => Tok::Ident(w),
                }
            }
            c => return Err(err(pos, format!("unexpected character {c:?} in action"))),
        };
        Ok(tok)
    }

    /// Letters, digits and underscores.
    fn word(&mut self) -> String {
        let n = self
            .rest()
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(self.rest().len());
        let w = self.rest()[..n].to_owned();
        self.advance(n);
        w
    }

    fn number(&mut self, pos: Pos, prefix: &str) -> Result<Tok, TemplateError> {
        let n = self
            .rest()
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || ((c == '-' || c == '+') && i == 0))
                    && !((c == '-' || c == '+') && i > 0 && self.rest()[..i].ends_with(['e', 'E']))
            })
            .map_or(self.rest().len(), |(i, _)| i);
        let text = format!("{prefix}{}", &self.rest()[..n]);
        self.advance(n);
        let clean = text.replace('_', "");
        let (neg, digits) = match clean.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
        };
        let int = if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
            i64::from_str_radix(hex, 16).ok()
        } else {
            digits.parse::<i64>().ok()
        };
        if let Some(i) = int {
            return Ok(Tok::Int(if neg { -i } else { i }));
        }
        match clean.parse::<f64>() {
            Ok(f) if f.is_finite() && !digits.starts_with(['-', '+']) => Ok(Tok::Float(f)),
            _ => Err(err(pos, format!("bad number syntax: {text:?}"))),
        }
    }

    fn quoted(&mut self, pos: Pos) -> Result<String, TemplateError> {
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None | Some('\n') => return Err(err(pos, "unterminated quoted string")),
                Some('"') => return Ok(s),
                Some('\\') => s.push(self.escape(pos, '"')?),
                Some(c) => s.push(c),
            }
        }
    }

    fn char_literal(&mut self, pos: Pos) -> Result<i64, TemplateError> {
        self.bump();
        let c = match self.bump() {
            Some('\\') => self.escape(pos, '\'')?,
            Some('\'') | Some('\n') | None => return Err(err(pos, "bad character literal")),
            Some(c) => c,
        };
        if self.bump() != Some('\'') {
            return Err(err(pos, "unterminated character literal"));
        }
        Ok(i64::from(u32::from(c)))
    }

    fn escape(&mut self, pos: Pos, quote: char) -> Result<char, TemplateError> {
        let c = self.bump().ok_or_else(|| err(pos, "unterminated escape"))?;
        Ok(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '\\' => '\\',
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'v' => '\u{b}',
            '0' => '\0',
            'x' => self.hex_escape(pos, 2)?,
            'u' => self.hex_escape(pos, 4)?,
            'U' => self.hex_escape(pos, 8)?,
            c if c == quote => c,
            c => return Err(err(pos, format!("unknown escape sequence \\{c}"))),
        })
    }

    fn hex_escape(&mut self, pos: Pos, digits: usize) -> Result<char, TemplateError> {
        let text: String = self.rest().chars().take(digits).collect();
        if text.len() != digits || !text.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(err(pos, "bad hexadecimal escape"));
        }
        self.advance(digits);
        u32::from_str_radix(&text, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| err(pos, "escape is not a valid character"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        match lex(src).unwrap().into_iter().next() {
            Some(Item::Action { tokens, .. }) => tokens.into_iter().map(|t| t.tok).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tokens() {
        assert_eq!(
            toks(r#"{{ $x := index . "a-b" | printf "%s\n" 3 -2 1.5 'a' .a.b nil true }}"#),
            vec![
                Tok::Var("x".into()),
                Tok::Declare,
                Tok::Ident("index".into()),
                Tok::Dot,
                Tok::Str("a-b".into()),
                Tok::Pipe,
                Tok::Ident("printf".into()),
                Tok::Str("%s\n".into()),
                Tok::Int(3),
                Tok::Int(-2),
                Tok::Float(1.5),
                Tok::Int(97),
                Tok::Field("a".into()),
                Tok::Field("b".into()),
                Tok::Nil,
                Tok::Bool(true),
            ]
        );
    }

    #[test]
    fn trim_markers_and_comments() {
        let items = lex("a  {{- .x -}}  b {{/* c */}} c\n{{- /* d */ -}}\n e").unwrap();
        let texts: Vec<_> = items
            .iter()
            .filter_map(|i| {
                if let Item::Text(t) = i {
                    Some(t.as_str())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(texts, vec!["a", "b ", " c", "e"]);
        assert_eq!(toks("{{-3}}"), vec![Tok::Int(-3)]);
    }

    #[test]
    fn positions() {
        let e = lex("line1\n  {{ .a ").unwrap_err();
        assert_eq!(e.to_string(), "2:3: unclosed action (missing }})");
        let e = lex("{{ \"abc }}").unwrap_err();
        assert_eq!(e.to_string(), "1:4: unterminated quoted string");
    }
}
