//! A subset of Go's `fmt.Sprintf` for the `printf` template function.
//!
//! Verbs: `%s %v %q %d %x %X %o %b %c %f %F %e %E %g %t %%`, flags `- + 0 space #`, width and
//! precision (width and precision at most the caller's limit). A verb that does not fit its argument,
//! a missing argument or an unused one is an error (Go writes `%!d(string=…)` into the output instead,
//! which would quote a value).

use super::eval::Value;
use super::funcs::go_quote;

#[derive(Default)]
struct Spec {
    minus: bool,
    plus: bool,
    zero: bool,
    space: bool,
    sharp: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// Formats `args` per `format`.
pub(crate) fn sprintf(format: &str, args: &[Value], max_pad: usize) -> Result<String, String> {
    let mut out = String::with_capacity(format.len());
    let mut chars = format.chars().peekable();
    let mut next_arg = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                '#' => spec.sharp = true,
                _ => break,
            }
            chars.next();
        }
        spec.width = number(&mut chars, max_pad)?;
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(number(&mut chars, max_pad)?.unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            return Err("format ends with %".to_owned());
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let arg = args
            .get(next_arg)
            .ok_or_else(|| format!("missing argument for %{verb}"))?;
        next_arg += 1;
        let (body, numeric) = verb_text(verb, arg, &spec)?;
        pad(&mut out, &body, &spec, numeric);
    }
    if next_arg < args.len() {
        return Err(format!("{} unused argument(s)", args.len() - next_arg));
    }
    Ok(out)
}

fn number(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, max: usize) -> Result<Option<usize>, String> {
    let mut n: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        chars.next();
        let v = n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize);
        if v > max {
            return Err(format!("width or precision larger than {max}"));
        }
        n = Some(v);
    }
    Ok(n)
}

fn mismatch(verb: char, arg: &Value) -> String {
    format!("%{verb} does not apply to {}", arg.type_name())
}

fn verb_text(verb: char, arg: &Value, spec: &Spec) -> Result<(String, bool), String> {
    let signed = |i: i64, s: String| {
        if i >= 0 && spec.plus {
            format!("+{s}")
        } else if i >= 0 && spec.space {
            format!(" {s}")
        } else {
            s
        }
    };
    Ok(match (verb, arg) {
        ('s' | 'v', Value::Str(_) | Value::Bytes(_)) => {
            let t = arg.to_text();
            (truncate(t, spec.precision), false)
        }
        ('v', Value::Int(i)) | ('d', Value::Int(i)) => (signed(*i, i.to_string()), true),
        ('s' | 'v', other) => (other.to_text(), false),
        ('q', Value::Str(_) | Value::Bytes(_)) => (go_quote(&arg.to_text()), false),
        ('q' | 'c', Value::Int(i)) => {
            let c = u32::try_from(*i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{fffd}');
            (
                if verb == 'q' {
                    format!("'{c}'")
                } else {
                    c.to_string()
                },
                false,
            )
        }
        ('x' | 'X', Value::Int(i)) => {
            let s = if *i < 0 {
                format!("-{:x}", i.unsigned_abs())
            } else {
                format!("{i:x}")
            };
            let s = if spec.sharp { format!("0x{s}") } else { s };
            (if verb == 'X' { s.to_uppercase() } else { s }, true)
        }
        ('x' | 'X', Value::Str(_) | Value::Bytes(_)) => {
            let h = hex::encode(arg.to_text().as_bytes());
            (if verb == 'X' { h.to_uppercase() } else { h }, false)
        }
        ('o', Value::Int(i)) => (signed(*i, format!("{i:o}")), true),
        ('b', Value::Int(i)) => (signed(*i, format!("{i:b}")), true),
        ('t', Value::Bool(b)) => (b.to_string(), false),
        ('f' | 'F' | 'e' | 'E' | 'g', Value::Int(_) | Value::Float(_)) => {
            let f = arg.as_f64().unwrap_or(0.0);
            let p = spec.precision;
            let s = match verb {
                'f' | 'F' => format!("{:.*}", p.unwrap_or(6), f),
                'e' => format!("{:.*e}", p.unwrap_or(6), f),
                'E' => format!("{:.*E}", p.unwrap_or(6), f),
                _ => match p {
                    Some(p) => format!("{:.*}", p, f),
                    None => format!("{f}"),
                },
            };
            (if f >= 0.0 && spec.plus { format!("+{s}") } else { s }, true)
        }
        (v, arg) if "sdqxXobtfFeEgvc".contains(v) => return Err(mismatch(v, arg)),
        (v, _) => return Err(format!("unknown verb %{v}")),
    })
}

fn truncate(s: String, precision: Option<usize>) -> String {
    match precision {
        Some(p) => s.chars().take(p).collect(),
        None => s,
    }
}

fn pad(out: &mut String, body: &str, spec: &Spec, numeric: bool) {
    let len = body.chars().count();
    let width = spec.width.unwrap_or(0);
    if len >= width {
        out.push_str(body);
        return;
    }
    let fill = width - len;
    if spec.minus {
        out.push_str(body);
        out.extend(std::iter::repeat_n(' ', fill));
    } else if spec.zero && numeric {
        // Zeros go after the sign.
        let (sign, digits) = match body.strip_prefix(['-', '+']) {
            Some(d) => (&body[..1], d),
            None => ("", body),
        };
        out.push_str(sign);
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(digits);
    } else {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(fmt: &str, args: &[Value]) -> Result<String, String> {
        sprintf(fmt, args, 1024)
    }

    #[test]
    fn verbs() {
        let s = |x: &str| Value::Str(x.to_owned());
        assert_eq!(
            f(
                "%s:%d %5d|%-4s|%05d %x %q %.2f %v %t %%",
                &[
                    s("a"),
                    Value::Int(3),
                    Value::Int(42),
                    s("b"),
                    Value::Int(-7),
                    Value::Int(255),
                    s("q\""),
                    Value::Float(1.234),
                    Value::Float(2.5),
                    Value::Bool(true)
                ]
            )
            .unwrap(),
            "a:3    42|b   |-0007 ff \"q\\\"\" 1.23 2.5 true %"
        );
        assert_eq!(f("%s", &[]).unwrap_err(), "missing argument for %s");
        assert_eq!(
            f("%d", &[s("secret")]).unwrap_err(),
            "%d does not apply to string"
        );
        assert_eq!(f("x", &[s("a")]).unwrap_err(), "1 unused argument(s)");
        assert_eq!(
            f("%99999d", &[Value::Int(1)]).unwrap_err(),
            "width or precision larger than 1024"
        );
    }
}
