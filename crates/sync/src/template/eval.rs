//! Executes a parsed template against data.
//!
//! Semantics follow Go's `text/template` with ESO's `missingkey=error`: a missing map key is an
//! error, not `<no value>`. Execution is bounded: output and every intermediate string are capped at
//! [`MAX_VALUE`] bytes, at most [`MAX_STEPS`] nodes and range iterations run, every byte copied or
//! produced is counted against [`MAX_ALLOC`] *before* it is allocated (`range N` materializes
//! nothing; `$`, `.`, lists and maps are shared, so copying them is free), and a wall-clock
//! deadline ([`MAX_DURATION`]) backs these up — so a hostile template cannot exhaust memory or CPU.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::funcs::{self, Func};
use super::parser::{Command, Node, Operand, Pipeline};
use super::{Pos, TemplateError};

/// Largest output or intermediate value: a Kubernetes Secret holds at most 1 MiB.
pub const MAX_VALUE: usize = 1024 * 1024;
/// Most nodes and range iterations one execution may run.
pub const MAX_STEPS: u64 = 1_000_000;
/// Most bytes one execution may allocate in total (every value copied or produced is counted, before
/// it is made): the engine's own accounting, an upper bound of what it holds at once besides its input.
pub const MAX_ALLOC: usize = 16 * 1024 * 1024;
/// Longest wall-clock time one execution may take (a backstop; the step and byte bounds end hostile
/// templates long before).
pub const MAX_DURATION: Duration = Duration::from_secs(1);

/// What one execution cost, by the engine's own accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Nodes, calls and range iterations run.
    pub steps: u64,
    /// Bytes charged against [`MAX_ALLOC`] (copies and results, counted before they are made).
    pub allocated: usize,
    /// Output bytes.
    pub output: usize,
}

/// A template value. `Debug` shows the type and size only: values hold secrets.
#[derive(Clone, PartialEq)]
pub enum Value {
    /// No value (Go's nil).
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// UTF-8 text.
    Str(String),
    /// Bytes that are not UTF-8 (binary secret values).
    Bytes(Vec<u8>),
    /// A list (shared: copying a list is cheap).
    List(Arc<Vec<Value>>),
    /// A map with string keys, iterated in key order (shared: copying `$` or `.` is cheap).
    Map(Arc<BTreeMap<String, Value>>),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Value({}, <redacted, {} bytes>)",
            self.type_name(),
            self.size()
        )
    }
}

impl Value {
    /// Text when UTF-8, bytes otherwise.
    pub fn from_bytes(b: Vec<u8>) -> Value {
        match String::from_utf8(b) {
            Ok(s) => Value::Str(s),
            Err(e) => Value::Bytes(e.into_bytes()),
        }
    }

    /// Converts parsed JSON.
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0)), Value::Int),
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(a) => Value::List(Arc::new(a.iter().map(Value::from_json).collect())),
            serde_json::Value::Object(o) => Value::Map(Arc::new(
                o.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect(),
            )),
        }
    }

    /// Converts to JSON (bytes that are not UTF-8 become base64, as Go's `encoding/json` does).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Nil => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Bytes(b) => serde_json::Value::String(crate::decode::b64_encode(b)),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// Go's type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) | Value::Bytes(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// Approximate size in bytes (strings' lengths, summed through lists and maps; 8 per scalar
    /// and per container, so nesting empty lists is not free).
    pub fn size(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::List(l) => l.iter().fold(8usize, |n, v| n.saturating_add(v.size())),
            Value::Map(m) => m.iter().fold(8usize, |n, (k, v)| {
                n.saturating_add(k.len()).saturating_add(v.size())
            }),
            _ => 8,
        }
    }

    /// What copying the value allocates on the heap: its bytes for strings; nothing for scalars
    /// and shared containers (a reference count).
    fn copy_cost(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        }
    }

    /// Go's truth: false, 0, nil, and empty strings, lists and maps are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Bytes(b) => !b.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// How Go's `fmt.Print` shows the value (`<no value>` for nil, `[a b]`, `map[k:v]`); bytes that
    /// are not UTF-8 are converted lossily — [`Value::write_to`] writes them raw.
    pub fn to_text(&self) -> String {
        match self {
            Value::Nil => "<no value>".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format!("{f}"),
            Value::Str(s) => s.clone(),
            Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            Value::List(l) => format!("[{}]", l.iter().map(Value::to_text).collect::<Vec<_>>().join(" ")),
            Value::Map(m) => {
                format!(
                    "map[{}]",
                    m.iter()
                        .map(|(k, v)| format!("{k}:{}", v.to_text()))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        }
    }

    /// Appends the printed form to `out` (raw bytes for [`Value::Bytes`]).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Value::Str(s) => out.extend_from_slice(s.as_bytes()),
            Value::Bytes(b) => out.extend_from_slice(b),
            other => out.extend_from_slice(other.to_text().as_bytes()),
        }
    }
}

/// Control flow out of a list of nodes.
enum Flow {
    Normal,
    Break,
    Continue,
}

/// One execution.
pub(crate) struct Eval<'a> {
    root: &'a Value,
    vars: Vec<(String, Value)>,
    out: Vec<u8>,
    steps: u64,
    allocated: usize,
    deadline: Instant,
}

fn err(pos: Pos, message: impl Into<String>) -> TemplateError {
    TemplateError {
        pos,
        message: message.into(),
    }
}

impl<'a> Eval<'a> {
    pub(crate) fn run(
        nodes: &[Node],
        root: &'a Value,
        max_duration: Duration,
    ) -> (Result<Vec<u8>, TemplateError>, ExecStats) {
        let mut ev = Eval {
            root,
            vars: Vec::new(),
            out: Vec::new(),
            steps: 0,
            allocated: 0,
            deadline: Instant::now() + max_duration,
        };
        let result = ev.list(nodes, root);
        let stats = ExecStats {
            steps: ev.steps,
            allocated: ev.allocated,
            output: ev.out.len(),
        };
        (result.map(|_| ev.out), stats)
    }

    fn step(&mut self, pos: Pos) -> Result<(), TemplateError> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(err(pos, format!("template runs more than {MAX_STEPS} steps")));
        }
        // Checking the clock is cheap but not free: every 1024 steps (and the first).
        if self.steps % 1024 == 1 && Instant::now() > self.deadline {
            return Err(err(pos, "template ran past its deadline"));
        }
        Ok(())
    }

    /// Counts `bytes` against [`MAX_ALLOC`] before they are allocated.
    fn charge(&mut self, pos: Pos, bytes: usize) -> Result<(), TemplateError> {
        let total = self.allocated.saturating_add(bytes);
        if total > MAX_ALLOC {
            // Refused, so not allocated: `allocated` stays within the bound.
            return Err(err(
                pos,
                format!("template allocates more than {MAX_ALLOC} bytes"),
            ));
        }
        self.allocated = total;
        Ok(())
    }

    fn write(&mut self, pos: Pos, v: &Value) -> Result<(), TemplateError> {
        // Check before appending, so the output never exceeds the bound.
        match v {
            Value::Str(_) | Value::Bytes(_) => {
                self.reserve(pos, v.size())?;
                v.write_to(&mut self.out);
            }
            other => {
                let text = other.to_text();
                self.reserve(pos, text.len())?;
                self.out.extend_from_slice(text.as_bytes());
            }
        }
        Ok(())
    }

    fn reserve(&self, pos: Pos, more: usize) -> Result<(), TemplateError> {
        if self.out.len().saturating_add(more) > MAX_VALUE {
            return Err(err(pos, format!("template output exceeds {MAX_VALUE} bytes")));
        }
        Ok(())
    }

    fn list(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, TemplateError> {
        for node in nodes {
            match node {
                Node::Text(t) => {
                    self.reserve(Pos::default(), t.len())?;
                    self.out.extend_from_slice(t.as_bytes());
                }
                Node::Action(pipe) => {
                    self.step(pipe.pos)?;
                    let v = self.pipeline(pipe, dot)?;
                    if pipe.vars.is_empty() {
                        self.write(pipe.pos, &v)?;
                    }
                }
                Node::If {
                    pipe,
                    then,
                    otherwise,
                }
                | Node::With {
                    pipe,
                    then,
                    otherwise,
                } => {
                    self.step(pipe.pos)?;
                    let mark = self.vars.len();
                    let v = self.pipeline(pipe, dot)?;
                    let flow = match (node, v.truthy()) {
                        (Node::With { .. }, true) => self.list(then, &v)?,
                        (_, true) => self.list(then, dot)?,
                        (_, false) => self.list(otherwise, dot)?,
                    };
                    self.vars.truncate(mark);
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::Range {
                    pipe,
                    body,
                    otherwise,
                } => {
                    self.step(pipe.pos)?;
                    let flow = self.range(pipe, body, otherwise, dot)?;
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn range(
        &mut self,
        pipe: &Pipeline,
        body: &[Node],
        otherwise: &[Node],
        dot: &Value,
    ) -> Result<Flow, TemplateError> {
        // The range pipeline's variables are per-iteration, not assigned from the pipeline's value.
        let bare = Pipeline {
            pos: pipe.pos,
            vars: Vec::new(),
            declare: true,
            cmds: pipe.cmds.clone(),
        };
        let v = self.pipeline(&bare, dot)?;
        // Iterate in place: nothing is materialized, each element is copied (and charged) when used.
        let len = match &v {
            Value::List(l) => l.len(),
            Value::Map(m) => m.len(),
            Value::Int(n) if *n >= 0 => usize::try_from(*n).unwrap_or(usize::MAX),
            Value::Nil => 0,
            other => {
                return Err(err(
                    pipe.pos,
                    format!("range can't iterate over {}", other.type_name()),
                ));
            }
        };
        if len == 0 {
            let mark = self.vars.len();
            let flow = self.list(otherwise, dot)?;
            self.vars.truncate(mark);
            return Ok(flow);
        }
        let mut keys = match &v {
            Value::Map(m) => Some(m.iter()),
            _ => None,
        };
        for i in 0..len {
            self.step(pipe.pos)?;
            let index = Value::Int(i64::try_from(i).unwrap_or(i64::MAX));
            let (key, elem) = match (&v, keys.as_mut()) {
                (Value::List(l), _) => (index, l[i].clone()),
                (Value::Map(_), Some(it)) => match it.next() {
                    Some((k, e)) => (Value::Str(k.clone()), e.clone()),
                    None => break,
                },
                _ => (index.clone(), index),
            };
            self.charge(pipe.pos, key.copy_cost().saturating_add(elem.copy_cost()))?;
            let mark = self.vars.len();
            match pipe.vars.as_slice() {
                [] => {}
                [v] => self.bind(pipe, v, elem.clone())?,
                [k, v, ..] => {
                    self.bind(pipe, k, key)?;
                    self.bind(pipe, v, elem.clone())?;
                }
            }
            let flow = self.list(body, &elem)?;
            self.vars.truncate(mark);
            if matches!(flow, Flow::Break) {
                break;
            }
        }
        Ok(Flow::Normal)
    }

    fn bind(&mut self, pipe: &Pipeline, name: &str, v: Value) -> Result<(), TemplateError> {
        if pipe.declare {
            self.vars.push((name.to_owned(), v));
            return Ok(());
        }
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = v;
                Ok(())
            }
            None => Err(err(pipe.pos, format!("undefined variable \"${name}\""))),
        }
    }

    fn pipeline(&mut self, pipe: &Pipeline, dot: &Value) -> Result<Value, TemplateError> {
        let mut prev: Option<Value> = None;
        for cmd in &pipe.cmds {
            prev = Some(self.command(cmd, dot, prev)?);
        }
        let v = prev.unwrap_or(Value::Nil);
        for name in &pipe.vars {
            self.bind(pipe, name, v.clone())?;
        }
        Ok(v)
    }

    fn command(&mut self, cmd: &Command, dot: &Value, piped: Option<Value>) -> Result<Value, TemplateError> {
        match cmd.args.first() {
            Some(Operand::Func(f, pos)) => {
                let mut args = Vec::with_capacity(cmd.args.len());
                let mut literal = Vec::with_capacity(cmd.args.len());
                for a in &cmd.args[1..] {
                    args.push(self.operand(a, dot)?);
                    literal.push(matches!(a, Operand::Str(_)));
                }
                args.extend(piped);
                self.call(*f, *pos, args, &literal)
            }
            // The parser guarantees a non-function command has one operand and is not piped into.
            Some(op) => self.operand(op, dot),
            None => Err(err(cmd.pos, "empty command")),
        }
    }

    fn call(
        &mut self,
        f: Func,
        pos: Pos,
        args: Vec<Value>,
        literal: &[bool],
    ) -> Result<Value, TemplateError> {
        self.step(pos)?;
        // Functions bound their own results (MAX_VALUE, checked before building); the result is
        // counted here, and what they would build from oversized input is refused up front.
        self.charge(pos, funcs::precharge(f, &args))?;
        let v = funcs::call(f, args, literal).map_err(|m| err(pos, format!("{}: {m}", f.name())))?;
        self.charge(pos, v.size())?;
        Ok(v)
    }

    fn operand(&mut self, op: &Operand, dot: &Value) -> Result<Value, TemplateError> {
        Ok(match op {
            Operand::Func(f, pos) => self.call(*f, *pos, Vec::new(), &[])?,
            Operand::Field(names, pos) => {
                let v = fields(dot, names, *pos)?;
                self.charge(*pos, v.copy_cost())?;
                v
            }
            Operand::Dot => {
                self.charge(Pos::default(), dot.copy_cost())?;
                dot.clone()
            }
            Operand::Var(name, names, pos) => {
                let base = if name.is_empty() {
                    self.root
                } else {
                    match self.vars.iter().rev().find(|(n, _)| n == name) {
                        Some((_, v)) => v,
                        None => return Err(err(*pos, format!("undefined variable \"${name}\""))),
                    }
                };
                let v = fields(base, names, *pos)?;
                self.charge(*pos, v.copy_cost())?;
                v
            }
            Operand::Sub(pipe, names, pos) => {
                let v = self.pipeline(pipe, dot)?;
                fields(&v, names, *pos)?
            }
            Operand::Str(s) => Value::Str(s.clone()),
            Operand::Int(i) => Value::Int(*i),
            Operand::Float(f) => Value::Float(*f),
            Operand::Bool(b) => Value::Bool(*b),
            Operand::Nil(pos) => return Err(err(*pos, "nil is not a command")),
        })
    }
}

/// `.a.b.c` on `base`; a missing key is an error (ESO's `missingkey=error`). Only the end is copied.
fn fields(base: &Value, names: &[String], pos: Pos) -> Result<Value, TemplateError> {
    let mut cur = base;
    for name in names {
        cur = match cur {
            Value::Map(m) => m
                .get(name)
                .ok_or_else(|| err(pos, format!("map has no entry for key {name:?}")))?,
            Value::Nil => return Err(err(pos, format!("nil pointer evaluating .{name}"))),
            other => {
                return Err(err(
                    pos,
                    format!("can't evaluate field {name} in type {}", other.type_name()),
                ));
            }
        };
    }
    Ok(cur.clone())
}
