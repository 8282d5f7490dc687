//! Builds the syntax tree from the lexer's items, resolving function names (an unknown function is a
//! parse error, as in Go).

use super::funcs::Func;
use super::lexer::{Item, Tok, Token, lex};
use super::{Pos, TemplateError};

/// Parenthesis nesting limit: keeps recursion (and the stack) bounded on hostile input.
const MAX_DEPTH: usize = 64;
/// Block nesting limit (`if`/`with`/`range`, and each `else if` link), for the same reason.
const MAX_BLOCK_DEPTH: usize = 100;

/// A node of the tree.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    /// Literal text.
    Text(String),
    /// `{{ pipeline }}`: printed unless it only declares or assigns variables.
    Action(Pipeline),
    /// `{{ if }}…{{ else }}…{{ end }}` (`else if` nests another `If` in `otherwise`).
    If {
        pipe: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    /// `{{ with }}`: like `if`, with dot set to the value.
    With {
        pipe: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    /// `{{ range }}`: over a list or a map (in key order); `otherwise` when empty.
    Range {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    /// `{{ break }}` inside a range.
    Break,
    /// `{{ continue }}` inside a range.
    Continue,
}

/// A pipeline: optional variable declarations, then commands joined by `|`.
#[derive(Clone, Debug)]
pub(crate) struct Pipeline {
    pub pos: Pos,
    /// Variables declared (`:=`) or assigned (`=`); `range` may declare two.
    pub vars: Vec<String>,
    /// `:=` (true) or `=` (false); meaningless when `vars` is empty.
    pub declare: bool,
    pub cmds: Vec<Command>,
}

/// One command: a function and its arguments, or a single operand.
#[derive(Clone, Debug)]
pub(crate) struct Command {
    pub pos: Pos,
    pub args: Vec<Operand>,
}

/// An operand.
#[derive(Clone, Debug)]
pub(crate) enum Operand {
    /// A function name.
    Func(Func, Pos),
    /// `.a.b` — fields of dot.
    Field(Vec<String>, Pos),
    /// `.`.
    Dot,
    /// `$x.a.b` (`$` is the root).
    Var(String, Vec<String>, Pos),
    /// `(pipeline).a.b`.
    Sub(Box<Pipeline>, Vec<String>, Pos),
    /// A string literal.
    Str(String),
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// `true`/`false`.
    Bool(bool),
    /// `nil`.
    Nil(Pos),
}

fn err(pos: Pos, message: impl Into<String>) -> TemplateError {
    TemplateError {
        pos,
        message: message.into(),
    }
}

/// How a list ended.
enum Stop {
    Eof,
    End(Pos),
    /// `{{ else … }}` with the tokens after `else`.
    Else(Pos, Vec<Token>),
}

struct Parser {
    items: std::vec::IntoIter<Item>,
    /// Variables in scope (for "undefined variable" at parse time, as in Go).
    vars: Vec<String>,
    range_depth: usize,
    /// Nesting of `if`/`with`/`range` blocks, bounded like parentheses.
    block_depth: usize,
}

/// Parses a template into its tree.
pub(crate) fn parse(src: &str) -> Result<Vec<Node>, TemplateError> {
    let items = lex(src)?;
    let mut p = Parser {
        items: items.into_iter(),
        vars: vec![String::new()],
        range_depth: 0,
        block_depth: 0,
    };
    let (nodes, stop) = p.list()?;
    match stop {
        Stop::Eof => Ok(nodes),
        Stop::End(pos) => Err(err(pos, "unexpected {{end}}")),
        Stop::Else(pos, _) => Err(err(pos, "unexpected {{else}}")),
    }
}

impl Parser {
    fn list(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(item) = self.items.next() {
            let (pos, tokens) = match item {
                Item::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Item::Action { pos, tokens } => (pos, tokens),
            };
            let Some(first) = tokens.first() else {
                return Err(err(pos, "missing value for command"));
            };
            let keyword = match &first.tok {
                Tok::Ident(w) => w.as_str(),
                _ => "",
            };
            match keyword {
                "end" => {
                    expect_empty(&tokens[1..], "end")?;
                    return Ok((nodes, Stop::End(pos)));
                }
                "else" => return Ok((nodes, Stop::Else(pos, tokens[1..].to_vec()))),
                "if" | "with" | "range" => {
                    self.block_depth += 1;
                    if self.block_depth > MAX_BLOCK_DEPTH {
                        return Err(err(pos, "blocks nested too deeply"));
                    }
                    let node = if keyword == "range" {
                        self.range(pos, &tokens[1..])?
                    } else {
                        self.conditional(keyword, pos, &tokens[1..])?
                    };
                    self.block_depth -= 1;
                    nodes.push(node);
                }
                "break" | "continue" => {
                    expect_empty(&tokens[1..], keyword)?;
                    if self.range_depth == 0 {
                        return Err(err(pos, format!("{{{{{keyword}}}}} outside {{{{range}}}}")));
                    }
                    nodes.push(if keyword == "break" {
                        Node::Break
                    } else {
                        Node::Continue
                    });
                }
                "define" | "template" | "block" => {
                    return Err(err(
                        pos,
                        format!("{{{{{keyword}}}}} is not supported in keyferry templates"),
                    ));
                }
                _ => {
                    let pipe = self.pipeline(pos, &tokens, false)?;
                    nodes.push(Node::Action(pipe));
                }
            }
        }
        Ok((nodes, Stop::Eof))
    }

    /// `if`/`with` (and their `else if`/`else with` chains); `tokens` follow the keyword.
    fn conditional(&mut self, keyword: &str, pos: Pos, tokens: &[Token]) -> Result<Node, TemplateError> {
        let scope = self.vars.len();
        let pipe = self.pipeline(pos, tokens, false)?;
        let (then, stop) = self.list()?;
        let otherwise = match stop {
            Stop::End(_) => Vec::new(),
            Stop::Eof => {
                return Err(err(
                    pos,
                    format!("unclosed {{{{{keyword}}}}} (missing {{{{end}}}})"),
                ));
            }
            Stop::Else(epos, rest) => {
                // As in Go, variables declared in the `if` pipeline stay visible in the else branch.
                match rest.first().map(|t| &t.tok) {
                    None => {
                        let (otherwise, stop) = self.list()?;
                        match stop {
                            Stop::End(_) => otherwise,
                            Stop::Eof => {
                                return Err(err(
                                    pos,
                                    format!("unclosed {{{{{keyword}}}}} (missing {{{{end}}}})"),
                                ));
                            }
                            Stop::Else(p, _) => return Err(err(p, "{{else}} after {{else}}")),
                        }
                    }
                    // `else if …` / `else with …`: a nested conditional that shares our {{end}}.
                    Some(Tok::Ident(w)) if w == "if" || w == "with" => {
                        let w = w.clone();
                        self.block_depth += 1;
                        if self.block_depth > MAX_BLOCK_DEPTH {
                            return Err(err(epos, "blocks nested too deeply"));
                        }
                        let nested = self.conditional(&w, epos, &rest[1..])?;
                        self.block_depth -= 1;
                        vec![nested]
                    }
                    Some(_) => return Err(err(epos, "expected {{else}}, {{else if …}} or {{else with …}}")),
                }
            }
        };
        self.vars.truncate(scope);
        Ok(if keyword == "if" {
            Node::If {
                pipe,
                then,
                otherwise,
            }
        } else {
            Node::With {
                pipe,
                then,
                otherwise,
            }
        })
    }

    fn range(&mut self, pos: Pos, tokens: &[Token]) -> Result<Node, TemplateError> {
        let scope = self.vars.len();
        let pipe = self.pipeline(pos, tokens, true)?;
        self.range_depth += 1;
        let (body, stop) = self.list()?;
        self.range_depth -= 1;
        let otherwise = match stop {
            Stop::End(_) => Vec::new(),
            Stop::Eof => return Err(err(pos, "unclosed {{range}} (missing {{end}})")),
            Stop::Else(epos, rest) => {
                if !rest.is_empty() {
                    return Err(err(epos, "expected {{else}} in {{range}}"));
                }
                let (otherwise, stop) = self.list()?;
                match stop {
                    Stop::End(_) => otherwise,
                    Stop::Eof => return Err(err(pos, "unclosed {{range}} (missing {{end}})")),
                    Stop::Else(p, _) => return Err(err(p, "{{else}} after {{else}}")),
                }
            }
        };
        self.vars.truncate(scope);
        Ok(Node::Range {
            pipe,
            body,
            otherwise,
        })
    }

    /// A whole action's pipeline, with optional declarations (two only for `range`).
    fn pipeline(&mut self, pos: Pos, tokens: &[Token], in_range: bool) -> Result<Pipeline, TemplateError> {
        let mut cur = Cursor {
            tokens,
            at: 0,
            end_pos: pos,
        };
        let (vars, declare) = self.declarations(&mut cur, in_range)?;
        let pipe = self.commands(&mut cur, pos, vars, declare, 0)?;
        if let Some(t) = cur.peek() {
            return Err(err(t.pos, format!("unexpected {} in pipeline", describe(&t.tok))));
        }
        Ok(pipe)
    }

    fn declarations(
        &mut self,
        cur: &mut Cursor<'_>,
        in_range: bool,
    ) -> Result<(Vec<String>, bool), TemplateError> {
        let toks = &cur.tokens[cur.at..];
        let var = |i: usize| match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Var(n)) if !n.is_empty() => Some(n.clone()),
            _ => None,
        };
        let tok = |i: usize| toks.get(i).map(|t| &t.tok);
        let (vars, declare, used) = match (var(0), tok(1)) {
            (Some(a), Some(Tok::Declare)) => (vec![a], true, 2),
            (Some(a), Some(Tok::Assign)) => (vec![a], false, 2),
            (Some(a), Some(Tok::Comma)) if in_range => match (var(2), tok(3)) {
                (Some(b), Some(Tok::Declare)) => (vec![a, b], true, 4),
                (Some(b), Some(Tok::Assign)) => (vec![a, b], false, 4),
                _ => return Err(err(toks[1].pos, "expected $a, $b := in range")),
            },
            _ => return Ok((Vec::new(), true)),
        };
        if !declare {
            for v in &vars {
                if !self.vars.contains(v) {
                    return Err(err(toks[0].pos, format!("undefined variable \"${v}\"")));
                }
            }
        }
        cur.at += used;
        Ok((vars, declare))
    }

    fn commands(
        &mut self,
        cur: &mut Cursor<'_>,
        pos: Pos,
        vars: Vec<String>,
        declare: bool,
        depth: usize,
    ) -> Result<Pipeline, TemplateError> {
        if depth > MAX_DEPTH {
            return Err(err(pos, "parentheses nested too deeply"));
        }
        let mut cmds = Vec::new();
        loop {
            let cpos = cur.peek().map_or(cur.end_pos, |t| t.pos);
            let mut args = Vec::new();
            while let Some(t) = cur.peek() {
                if matches!(t.tok, Tok::Pipe | Tok::RParen) {
                    break;
                }
                args.push(self.operand(cur, depth)?);
            }
            if args.is_empty() {
                return Err(err(
                    cpos,
                    if cmds.is_empty() {
                        "missing value for command"
                    } else {
                        "missing command after |"
                    },
                ));
            }
            let is_func = matches!(args[0], Operand::Func(..));
            if !is_func && args.len() > 1 {
                return Err(err(cpos, "can't give argument to non-function"));
            }
            if !is_func && !cmds.is_empty() {
                return Err(err(
                    cpos,
                    format!("non executable command in pipeline stage {}", cmds.len() + 1),
                ));
            }
            cmds.push(Command { pos: cpos, args });
            match cur.peek().map(|t| &t.tok) {
                Some(Tok::Pipe) => {
                    cur.at += 1;
                }
                _ => break,
            }
        }
        // Declared variables come into scope after their pipeline (Go: `$x := $x` is an error).
        if declare {
            self.vars.extend(vars.iter().cloned());
        }
        Ok(Pipeline {
            pos,
            vars,
            declare,
            cmds,
        })
    }

    fn operand(&mut self, cur: &mut Cursor<'_>, depth: usize) -> Result<Operand, TemplateError> {
        let Some(t) = cur.next() else {
            return Err(err(cur.end_pos, "unexpected end of action"));
        };
        let pos = t.pos;
        let op = match &t.tok {
            Tok::Ident(name) => match Func::lookup(name) {
                Some(f) => Operand::Func(f, pos),
                None => return Err(err(pos, unknown_function(name))),
            },
            Tok::Field(name) => {
                let mut names = vec![name.clone()];
                names.extend(chained_fields(cur));
                Operand::Field(names, pos)
            }
            Tok::Dot => {
                if cur
                    .peek()
                    .is_some_and(|n| !n.spaced && matches!(n.tok, Tok::Field(_)))
                {
                    return Err(err(pos, "unexpected . after term"));
                }
                Operand::Dot
            }
            Tok::Var(name) => {
                if !self.vars.contains(name) {
                    return Err(err(pos, format!("undefined variable \"${name}\"")));
                }
                Operand::Var(name.clone(), chained_fields(cur), pos)
            }
            Tok::LParen => {
                let inner = self.commands(cur, pos, Vec::new(), true, depth + 1)?;
                match cur.next() {
                    Some(Token { tok: Tok::RParen, .. }) => {}
                    _ => return Err(err(pos, "unclosed left paren")),
                }
                Operand::Sub(Box::new(inner), chained_fields(cur), pos)
            }
            Tok::Str(s) => Operand::Str(s.clone()),
            Tok::Int(i) => Operand::Int(*i),
            Tok::Float(f) => Operand::Float(*f),
            Tok::Bool(b) => Operand::Bool(*b),
            Tok::Nil => Operand::Nil(pos),
            other => return Err(err(pos, format!("unexpected {} in operand", describe(other)))),
        };
        Ok(op)
    }
}

fn unknown_function(name: &str) -> String {
    match name {
        "env" | "expandenv" | "getHostByName" | "readFile" | "glob" => format!(
            "function {name:?} is not available: templates cannot read the environment, files or the network"
        ),
        _ => format!(
            "function {name:?} is not supported (see crates/sync/README.md for the supported functions)"
        ),
    }
}

/// `.b.c` directly after a term (no space).
fn chained_fields(cur: &mut Cursor<'_>) -> Vec<String> {
    let mut names = Vec::new();
    while let Some(Token {
        tok: Tok::Field(n),
        spaced: false,
        ..
    }) = cur.peek()
    {
        names.push(n.clone());
        cur.at += 1;
    }
    names
}

fn expect_empty(rest: &[Token], keyword: &str) -> Result<(), TemplateError> {
    match rest.first() {
        None => Ok(()),
        Some(t) => Err(err(
            t.pos,
            format!("unexpected {} in {{{{{keyword}}}}}", describe(&t.tok)),
        )),
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident(w) => format!("{w:?}"),
        Tok::Field(f) => format!("field .{f}"),
        Tok::Dot => "\".\"".to_owned(),
        Tok::Var(v) => format!("variable ${v}"),
        Tok::Str(_) => "string".to_owned(),
        Tok::Int(_) | Tok::Float(_) => "number".to_owned(),
        Tok::Bool(b) => b.to_string(),
        Tok::Nil => "nil".to_owned(),
        Tok::Declare => "\":=\"".to_owned(),
        Tok::Assign => "\"=\"".to_owned(),
        Tok::Pipe => "\"|\"".to_owned(),
        Tok::LParen => "\"(\"".to_owned(),
        Tok::RParen => "\")\"".to_owned(),
        Tok::Comma => "\",\"".to_owned(),
    }
}

struct Cursor<'a> {
    tokens: &'a [Token],
    at: usize,
    /// Position reported for errors at the end of the action.
    end_pos: Pos,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.at)
    }
    fn next(&mut self) -> Option<&'a Token> {
        let t = self.tokens.get(self.at);
        self.at += usize::from(t.is_some());
        t
    }
}
