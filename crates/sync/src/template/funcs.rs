//! The template functions: Go's builtins that ESO templates use, and a few sprig functions.
//!
//! Deliberately absent: `env`, `expandenv`, and anything touching files, the network or the clock;
//! templates see only the fetched values. Unlike sprig, `b64dec`, `fromJson` and `index` fail with an
//! error instead of yielding an empty or error-text value, so a broken template cannot silently write
//! garbage into a Secret. Errors name the function and describe types and sizes, never content.

use std::borrow::Cow;
use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::crypto;
use super::eval::{MAX_VALUE, Value};
use crate::decode::{b64_decode, b64_encode};

/// Largest `indent`/`nindent` count and `printf` width: bounds allocations on hostile input.
const MAX_PAD: usize = 1024;

macro_rules! funcs {
    ($($variant:ident = $name:literal),* $(,)?) => {
        /// A supported function.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum Func { $($variant),* }

        impl Func {
            /// Every function name, for documentation and tests.
            pub(crate) const NAMES: &'static [&'static str] = &[$($name),*];

            /// The function called `name`, if supported.
            pub(crate) fn lookup(name: &str) -> Option<Func> {
                match name { $($name => Some(Func::$variant),)* _ => None }
            }

            /// The function's name.
            pub(crate) fn name(self) -> &'static str {
                match self { $(Func::$variant => $name),* }
            }
        }
    };
}

funcs! {
    And = "and", Or = "or", Not = "not", Eq = "eq", Ne = "ne", Lt = "lt", Le = "le", Gt = "gt", Ge = "ge",
    Len = "len", Index = "index", Print = "print", Printf = "printf", Println = "println",
    ToString = "toString", B64Enc = "b64enc", B64Dec = "b64dec", FromJson = "fromJson", ToJson = "toJson",
    Upper = "upper", Lower = "lower", Trim = "trim", TrimPrefix = "trimPrefix", TrimSuffix = "trimSuffix",
    Replace = "replace", Quote = "quote", Squote = "squote", Default = "default", Empty = "empty",
    Required = "required", Indent = "indent", Nindent = "nindent", Contains = "contains",
    HasPrefix = "hasPrefix", HasSuffix = "hasSuffix", Join = "join", Split = "splitList", List = "list",
    Dict = "dict", Sha256sum = "sha256sum", Coalesce = "coalesce", Ternary = "ternary",
    // ESO's certificate and key functions (crypto.rs)
    Pkcs12Key = "pkcs12key", Pkcs12KeyPass = "pkcs12keyPass", Pkcs12Cert = "pkcs12cert",
    Pkcs12CertPass = "pkcs12certPass", PemToPkcs12 = "pemToPkcs12", PemToPkcs12Pass = "pemToPkcs12Pass",
    FullPemToPkcs12 = "fullPemToPkcs12", FullPemToPkcs12Pass = "fullPemToPkcs12Pass",
    FilterPem = "filterPEM", FilterCertChain = "filterCertChain",
    JwkPublicKeyPem = "jwkPublicKeyPem", JwkPrivateKeyPem = "jwkPrivateKeyPem",
}

type R = Result<Value, String>;

fn err(e: crypto::CryptoError) -> String {
    e.to_string()
}

fn arity(args: &[Value], n: usize) -> Result<(), String> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!(
            "expected {n} argument{}, got {}",
            if n == 1 { "" } else { "s" },
            args.len()
        ))
    }
}

fn min_arity(args: &[Value], n: usize) -> Result<(), String> {
    if args.len() >= n {
        Ok(())
    } else {
        Err(format!("expected at least {n} arguments, got {}", args.len()))
    }
}

/// A value as text: strings as they are, bytes if UTF-8, numbers and booleans formatted.
fn text(v: &Value) -> Result<Cow<'_, str>, String> {
    match v {
        Value::Str(s) => Ok(Cow::Borrowed(s)),
        Value::Bytes(b) => std::str::from_utf8(b)
            .map(Cow::Borrowed)
            .map_err(|_| "value is not UTF-8 text".to_owned()),
        Value::Int(_) | Value::Float(_) | Value::Bool(_) => Ok(Cow::Owned(v.to_text())),
        Value::Nil => Ok(Cow::Borrowed("")),
        other => Err(format!("expected a string, got {}", other.type_name())),
    }
}

fn bytes(v: &Value) -> Result<Cow<'_, [u8]>, String> {
    match v {
        Value::Bytes(b) => Ok(Cow::Borrowed(b)),
        other => text(other).map(|t| match t {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        }),
    }
}

fn int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(*f as i64),
        Value::Str(s) => s.trim().parse().map_err(|_| "expected an integer".to_owned()),
        other => Err(format!("expected an integer, got {}", other.type_name())),
    }
}

fn checked(v: Value) -> R {
    if v.size() > MAX_VALUE {
        Err(format!("result exceeds {} bytes", MAX_VALUE))
    } else {
        Ok(v)
    }
}

fn str_value(s: String) -> Value {
    Value::Str(s)
}

/// What `f` will allocate beyond its result's size, estimated from its arguments before it runs:
/// `splitList` and `fromJson` build one value (32 bytes and more) per piece of a string, which the
/// result's byte size does not show.
pub(crate) fn precharge(f: Func, args: &[Value]) -> usize {
    let piece = std::mem::size_of::<Value>().saturating_add(16);
    match (f, args) {
        (Func::Split, [sep, s]) => match (text(sep), text(s)) {
            (Ok(sep), Ok(s)) if !sep.is_empty() => {
                s.matches(&*sep).count().saturating_add(1).saturating_mul(piece)
            }
            _ => 0,
        },
        // At most one JSON value per byte or two of input; parsed twice (serde_json, then Value).
        (Func::FromJson, [s]) => bytes(s).map_or(0, |b| b.len().saturating_mul(piece)),
        _ => 0,
    }
}

/// Calls `f`; errors are prefixed with the function's name by the caller.
///
/// `literal[i]` tells whether argument `i` was written in the template as a string literal: only
/// those may be quoted in an error (`index . "db-host"`), since any other argument may hold a value
/// (`index . .password`).
pub(crate) fn call(f: Func, args: Vec<Value>, literal: &[bool]) -> R {
    let a = &args;
    let is_literal = |i: usize| literal.get(i).copied().unwrap_or(false);
    let v = match f {
        Func::And => {
            min_arity(a, 1)?;
            a.iter().find(|v| !v.truthy()).unwrap_or(&a[a.len() - 1]).clone()
        }
        Func::Or => {
            min_arity(a, 1)?;
            a.iter().find(|v| v.truthy()).unwrap_or(&a[a.len() - 1]).clone()
        }
        Func::Not => {
            arity(a, 1)?;
            Value::Bool(!a[0].truthy())
        }
        Func::Eq => {
            min_arity(a, 2)?;
            let mut any = false;
            for other in &a[1..] {
                any |= compare(&a[0], other)? == std::cmp::Ordering::Equal;
            }
            Value::Bool(any)
        }
        Func::Ne => {
            arity(a, 2)?;
            Value::Bool(compare(&a[0], &a[1])? != std::cmp::Ordering::Equal)
        }
        Func::Lt | Func::Le | Func::Gt | Func::Ge => {
            arity(a, 2)?;
            let ord = compare(&a[0], &a[1])?;
            Value::Bool(match f {
                Func::Lt => ord.is_lt(),
                Func::Le => ord.is_le(),
                Func::Gt => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        Func::Len => {
            arity(a, 1)?;
            let n = match &a[0] {
                Value::Str(s) => s.len(),
                Value::Bytes(b) => b.len(),
                Value::List(l) => l.len(),
                Value::Map(m) => m.len(),
                other => return Err(format!("len of {}", other.type_name())),
            };
            Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
        }
        Func::Index => {
            min_arity(a, 1)?;
            let mut cur = a[0].clone();
            for (i, key) in a.iter().enumerate().skip(1) {
                cur = index(cur, key, is_literal(i))?;
            }
            cur
        }
        Func::Print => str_value(go_sprint(a)),
        Func::Println => {
            let mut s = a.iter().map(Value::to_text).collect::<Vec<_>>().join(" ");
            s.push('\n');
            str_value(s)
        }
        Func::Printf => {
            min_arity(a, 1)?;
            str_value(super::printf::sprintf(&text(&a[0])?, &a[1..], MAX_PAD)?)
        }
        Func::ToString => {
            arity(a, 1)?;
            match &a[0] {
                Value::Str(_) | Value::Bytes(_) => a[0].clone(),
                other => str_value(other.to_text()),
            }
        }
        Func::B64Enc => {
            arity(a, 1)?;
            str_value(b64_encode(&bytes(&a[0])?))
        }
        Func::B64Dec => {
            arity(a, 1)?;
            Value::from_bytes(b64_decode(&bytes(&a[0])?)?)
        }
        Func::FromJson => {
            arity(a, 1)?;
            let json: serde_json::Value = serde_json::from_slice(&bytes(&a[0])?).map_err(|e| {
                // serde_json's messages quote no input for untyped parsing; keep only position anyway.
                format!("not valid JSON (at line {} column {})", e.line(), e.column())
            })?;
            Value::from_json(&json)
        }
        Func::ToJson => {
            arity(a, 1)?;
            str_value(a[0].to_json().to_string())
        }
        Func::Upper => {
            arity(a, 1)?;
            str_value(text(&a[0])?.to_uppercase())
        }
        Func::Lower => {
            arity(a, 1)?;
            str_value(text(&a[0])?.to_lowercase())
        }
        Func::Trim => {
            arity(a, 1)?;
            str_value(text(&a[0])?.trim().to_owned())
        }
        Func::TrimPrefix => {
            arity(a, 2)?;
            let (p, s) = (text(&a[0])?, text(&a[1])?);
            str_value(s.strip_prefix(&*p).unwrap_or(&s).to_owned())
        }
        Func::TrimSuffix => {
            arity(a, 2)?;
            let (p, s) = (text(&a[0])?, text(&a[1])?);
            str_value(s.strip_suffix(&*p).unwrap_or(&s).to_owned())
        }
        Func::Replace => {
            arity(a, 3)?;
            let (old, new, s) = (text(&a[0])?, text(&a[1])?, text(&a[2])?);
            let count = if old.is_empty() {
                s.chars().count() + 1
            } else {
                s.matches(&*old).count()
            };
            if s.len().saturating_add(count.saturating_mul(new.len())) > MAX_VALUE {
                return Err(format!("result exceeds {MAX_VALUE} bytes"));
            }
            str_value(s.replace(&*old, &new))
        }
        Func::Quote | Func::Squote => {
            let parts: Result<Vec<String>, String> = a
                .iter()
                .filter(|v| !matches!(v, Value::Nil))
                .map(|v| {
                    let t = text(v)?;
                    Ok(if f == Func::Quote {
                        go_quote(&t)
                    } else {
                        format!("'{t}'")
                    })
                })
                .collect();
            str_value(parts?.join(" "))
        }
        Func::Default => {
            min_arity(a, 1)?;
            if a.len() > 2 {
                return Err(format!("expected 1 or 2 arguments, got {}", a.len()));
            }
            match a.get(1) {
                Some(given) if given.truthy() => given.clone(),
                _ => a[0].clone(),
            }
        }
        Func::Empty => {
            arity(a, 1)?;
            Value::Bool(!a[0].truthy())
        }
        Func::Required => {
            arity(a, 2)?;
            if !a[1].truthy() {
                // The message is quoted only when the template spelled it out.
                return Err(if is_literal(0) {
                    text(&a[0])?.into_owned()
                } else {
                    "value is empty".to_owned()
                });
            }
            a[1].clone()
        }
        Func::Indent | Func::Nindent => {
            arity(a, 2)?;
            let n = usize::try_from(int(&a[0])?).map_err(|_| "negative indent".to_owned())?;
            if n > MAX_PAD {
                return Err(format!("indent {n} is larger than {MAX_PAD}"));
            }
            let s = text(&a[1])?;
            let lines = s.split('\n').count();
            if s.len().saturating_add(lines.saturating_mul(n)) > MAX_VALUE {
                return Err(format!("result exceeds {MAX_VALUE} bytes"));
            }
            let pad = " ".repeat(n);
            let body = s
                .split('\n')
                .map(|l| format!("{pad}{l}"))
                .collect::<Vec<_>>()
                .join("\n");
            str_value(if f == Func::Nindent {
                format!("\n{body}")
            } else {
                body
            })
        }
        Func::Contains => {
            arity(a, 2)?;
            Value::Bool(text(&a[1])?.contains(&*text(&a[0])?))
        }
        Func::HasPrefix => {
            arity(a, 2)?;
            Value::Bool(text(&a[1])?.starts_with(&*text(&a[0])?))
        }
        Func::HasSuffix => {
            arity(a, 2)?;
            Value::Bool(text(&a[1])?.ends_with(&*text(&a[0])?))
        }
        Func::Join => {
            arity(a, 2)?;
            let sep = text(&a[0])?;
            let Value::List(items) = &a[1] else {
                return Err(format!("expected a list, got {}", a[1].type_name()));
            };
            let parts = items
                .iter()
                .map(|v| text(v).map(Cow::into_owned))
                .collect::<Result<Vec<_>, _>>()?;
            let total = parts
                .iter()
                .map(String::len)
                .sum::<usize>()
                .saturating_add(sep.len().saturating_mul(parts.len()));
            if total > MAX_VALUE {
                return Err(format!("result exceeds {MAX_VALUE} bytes"));
            }
            str_value(parts.join(&sep))
        }
        Func::Split => {
            arity(a, 2)?;
            let (sep, s) = (text(&a[0])?, text(&a[1])?);
            if sep.is_empty() {
                return Err("empty separator".to_owned());
            }
            Value::List(std::sync::Arc::new(
                s.split(&*sep).map(|p| Value::Str(p.to_owned())).collect(),
            ))
        }
        Func::List => Value::List(std::sync::Arc::new(args.clone())),
        Func::Dict => {
            if !a.len().is_multiple_of(2) {
                return Err("expected key/value pairs".to_owned());
            }
            let mut m = BTreeMap::new();
            for pair in a.chunks(2) {
                m.insert(text(&pair[0])?.into_owned(), pair[1].clone());
            }
            Value::Map(std::sync::Arc::new(m))
        }
        Func::Sha256sum => {
            arity(a, 1)?;
            str_value(hex::encode(Sha256::digest(&bytes(&a[0])?)))
        }
        Func::Coalesce => a.iter().find(|v| v.truthy()).cloned().unwrap_or(Value::Nil),
        Func::Ternary => {
            arity(a, 3)?;
            if a[2].truthy() { a[0].clone() } else { a[1].clone() }
        }
        Func::Pkcs12Key | Func::Pkcs12KeyPass | Func::Pkcs12Cert | Func::Pkcs12CertPass => {
            // ESO's order: `pkcs12keyPass pass input`, so the piped archive comes last.
            let (pass, input) = if matches!(f, Func::Pkcs12Key | Func::Pkcs12Cert) {
                arity(a, 1)?;
                (Cow::Borrowed(""), &a[0])
            } else {
                arity(a, 2)?;
                (text(&a[0])?, &a[1])
            };
            let input = bytes(input)?;
            if matches!(f, Func::Pkcs12Key | Func::Pkcs12KeyPass) {
                Value::from_bytes(crypto::pkcs12_key(&pass, &input).map_err(err)?.to_vec())
            } else {
                Value::from_bytes(crypto::pkcs12_cert(&pass, &input).map_err(err)?)
            }
        }
        Func::PemToPkcs12 | Func::PemToPkcs12Pass | Func::FullPemToPkcs12 | Func::FullPemToPkcs12Pass => {
            let with_pass = matches!(f, Func::PemToPkcs12Pass | Func::FullPemToPkcs12Pass);
            arity(a, if with_pass { 3 } else { 2 })?;
            let pass = if with_pass {
                text(&a[2])?
            } else {
                Cow::Borrowed("")
            };
            let full = matches!(f, Func::FullPemToPkcs12 | Func::FullPemToPkcs12Pass);
            str_value(crypto::pem_to_pkcs12(&bytes(&a[0])?, &bytes(&a[1])?, &pass, full).map_err(err)?)
        }
        Func::FilterPem => {
            arity(a, 2)?;
            Value::from_bytes(
                crypto::filter_pem(&text(&a[0])?, &bytes(&a[1])?)
                    .map_err(err)?
                    .to_vec(),
            )
        }
        Func::FilterCertChain => {
            arity(a, 2)?;
            Value::from_bytes(crypto::filter_cert_chain(&text(&a[0])?, &bytes(&a[1])?).map_err(err)?)
        }
        Func::JwkPublicKeyPem => {
            arity(a, 1)?;
            Value::from_bytes(crypto::jwk_public_key_pem(&bytes(&a[0])?).map_err(err)?)
        }
        Func::JwkPrivateKeyPem => {
            arity(a, 1)?;
            Value::from_bytes(crypto::jwk_private_key_pem(&bytes(&a[0])?).map_err(err)?.to_vec())
        }
    };
    checked(v)
}

fn index(cur: Value, key: &Value, literal: bool) -> R {
    match cur {
        Value::Map(m) => {
            let k = text(key)?;
            m.get(&*k).cloned().ok_or_else(|| {
                if literal {
                    format!("map has no entry for key {k:?}")
                } else {
                    format!("map has no entry for the key given ({} bytes)", k.len())
                }
            })
        }
        Value::List(l) => {
            let i = int(key)?;
            let len = l.len();
            usize::try_from(i)
                .ok()
                .filter(|&i| i < len)
                .map(|i| l[i].clone())
                .ok_or_else(|| format!("index out of range: {i} (list of {len})"))
        }
        Value::Nil => Err("index of nil".to_owned()),
        other => Err(format!("can't index item of type {}", other.type_name())),
    }
}

fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, String> {
    use Value::*;
    let incomparable = || {
        format!(
            "incompatible types for comparison: {} and {}",
            a.type_name(),
            b.type_name()
        )
    };
    Ok(match (a, b) {
        (Int(x), Int(y)) => x.cmp(y),
        (Int(_) | Float(_), Int(_) | Float(_)) => {
            let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).ok_or_else(incomparable)?
        }
        (Str(_) | Bytes(_), Str(_) | Bytes(_)) => bytes(a)?.cmp(&bytes(b)?),
        (Bool(x), Bool(y)) => x.cmp(y),
        (Nil, Nil) => std::cmp::Ordering::Equal,
        (Nil, _) | (_, Nil) => std::cmp::Ordering::Less,
        _ => return Err(incomparable()),
    })
}

/// Go's `fmt.Sprint`: a space between operands when neither side is a string.
fn go_sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in args.iter().enumerate() {
        let is_str = |v: &Value| matches!(v, Value::Str(_) | Value::Bytes(_));
        if i > 0 && !is_str(v) && !is_str(&args[i - 1]) {
            out.push(' ');
        }
        out.push_str(&v.to_text());
    }
    out
}

/// Go's `%q` for strings: double quotes, with backslash escapes for quotes, backslashes and
/// non-printable characters.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
