//! Validation of ProductSection property values: the `ovf:type` and the `ovf:qualifiers`
//! (docs/formats.md §2.6).
//!
//! Types: the CIM intrinsic integers (`uint8` ... `sint64`) by their ranges, `real32` and
//! `real64` (finite decimal numbers), `boolean` (`true`/`false`; `1`/`0` and any case are
//! accepted and written as `true`/`false`), `string`, VMware's `ip` and `ip:<network>`
//! (an IPv4 or IPv6 address), and the `string[a,b]` enumeration some producers write.
//! `int` (Open-OVF) is read as a signed 64-bit integer. Other types are not checked.
//!
//! Qualifiers: `MinLen(n)`, `MaxLen(n)` (characters), `MinValue(n)`, `MaxValue(n)`, and
//! `ValueMap{"a","b",...}` (the value must be one of them; `"1..5"`, `"..5"`, `"1.."` are
//! integer ranges and `".."` allows anything, as in CIM). Unknown qualifiers (VMware's
//! `Ip('net')`, `Dns(...)`) are ignored.
//!
//! The empty value means "no default" and is accepted by string properties (within their
//! qualifiers), `ip` properties and unchecked types; numbers and booleans need a value.

use std::net::IpAddr;

/// A property type as far as validation goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PropertyType {
    /// An integer within the range.
    Int { min: i128, max: i128 },
    /// A finite number within ±max.
    Real { max: f64 },
    /// `true` or `false`.
    Bool,
    /// Any text.
    Str,
    /// An IP address.
    Ip,
    /// One of these strings (`string[a,b]`).
    Enum(Vec<String>),
    /// Not checked.
    Other,
}

impl PropertyType {
    /// Reads `ovf:type`.
    pub fn parse(type_name: Option<&str>) -> PropertyType {
        let t = type_name.map(str::trim).unwrap_or("");
        let int = |min: i128, max: i128| PropertyType::Int { min, max };
        match t {
            "uint8" => int(0, u8::MAX.into()),
            "uint16" => int(0, u16::MAX.into()),
            "uint32" => int(0, u32::MAX.into()),
            "uint64" => int(0, u64::MAX.into()),
            "sint8" => int(i8::MIN.into(), i8::MAX.into()),
            "sint16" => int(i16::MIN.into(), i16::MAX.into()),
            "sint32" => int(i32::MIN.into(), i32::MAX.into()),
            "sint64" | "int" => int(i64::MIN.into(), i64::MAX.into()),
            "real32" => PropertyType::Real {
                max: f64::from(f32::MAX),
            },
            "real64" => PropertyType::Real { max: f64::MAX },
            "boolean" => PropertyType::Bool,
            "string" | "" => PropertyType::Str,
            _ if t == "ip" || t.starts_with("ip:") => PropertyType::Ip,
            _ => match t.strip_prefix("string[").and_then(|r| r.strip_suffix(']')) {
                Some(list) => {
                    PropertyType::Enum(list.split(',').map(|s| s.trim().to_string()).collect())
                }
                None => PropertyType::Other,
            },
        }
    }
}

/// The qualifiers this module enforces.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Qualifiers {
    pub min_len: Option<u64>,
    pub max_len: Option<u64>,
    pub min_value: Option<f64>,
    pub max_value: Option<f64>,
    pub value_map: Option<Vec<String>>,
}

impl Qualifiers {
    /// Parses `ovf:qualifiers` (comma- or space-separated `Name(args)` / `Name{args}`).
    pub fn parse(text: Option<&str>) -> Qualifiers {
        let mut q = Qualifiers::default();
        let Some(text) = text else {
            return q;
        };
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                i += 1;
            }
            let ns = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[ns..i].iter().collect();
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            let Some(&open) = chars.get(i) else { break };
            let close = match open {
                '(' => ')',
                '{' => '}',
                _ => {
                    // Not a qualifier we can read: skip one character and go on.
                    i += 1;
                    continue;
                }
            };
            i += 1;
            let mut args = String::new();
            let mut quote: Option<char> = None;
            while i < chars.len() {
                let c = chars[i];
                i += 1;
                match quote {
                    Some(qc) if c == qc => quote = None,
                    Some(_) => {}
                    None if c == '"' || c == '\'' => quote = Some(c),
                    None if c == close => break,
                    None => {}
                }
                args.push(c);
            }
            if args.ends_with(close) {
                args.pop();
            }
            let num = |s: &str| {
                s.trim()
                    .trim_matches(['"', '\''])
                    .trim()
                    .parse::<f64>()
                    .ok()
            };
            match name.as_str() {
                "MinLen" => q.min_len = num(&args).map(|v| v.max(0.0) as u64),
                "MaxLen" => q.max_len = num(&args).map(|v| v.max(0.0) as u64),
                "MinValue" => q.min_value = num(&args),
                "MaxValue" => q.max_value = num(&args),
                "ValueMap" => q.value_map = Some(quoted_list(&args)),
                _ => {}
            }
        }
        q
    }
}

/// The quoted strings of a `ValueMap{"a", "b"}` argument list (unquoted items are taken
/// trimmed).
fn quoted_list(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut quoted = false;
    for c in args.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                if !quoted && cur.trim().is_empty() {
                    cur.clear();
                }
                quote = Some(c);
                quoted = true;
            }
            None if c == ',' => {
                out.push(if quoted {
                    cur.clone()
                } else {
                    cur.trim().to_string()
                });
                cur.clear();
                quoted = false;
            }
            None => {
                if !c.is_whitespace() || !quoted {
                    cur.push(c);
                }
            }
        }
    }
    if quoted || !cur.trim().is_empty() {
        out.push(if quoted { cur } else { cur.trim().to_string() });
    }
    out
}

/// Checks `value` against the type and qualifiers and returns the value to write (booleans
/// are written `true`/`false`), or the reason it is refused.
pub(crate) fn validate(value: &str, ty: &PropertyType, q: &Qualifiers) -> Result<String, String> {
    let value = match ty {
        PropertyType::Bool => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => "true".to_string(),
            "false" | "0" => "false".to_string(),
            _ => return Err("a boolean property takes true or false".into()),
        },
        PropertyType::Int { min, max } => {
            let t = value.trim();
            let n: i128 = parse_int(t).ok_or_else(|| "not a whole number".to_string())?;
            if n < *min || n > *max {
                return Err(format!("outside the range {min}..{max} of its type"));
            }
            check_range(n as f64, q)?;
            t.to_string()
        }
        PropertyType::Real { max } => {
            let t = value.trim();
            let ok_chars = !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
            let x: f64 = t
                .parse()
                .ok()
                .filter(|x: &f64| ok_chars && x.is_finite())
                .ok_or_else(|| "not a number".to_string())?;
            if x.abs() > *max {
                return Err("outside the range of its type".into());
            }
            check_range(x, q)?;
            t.to_string()
        }
        PropertyType::Ip => {
            if !value.is_empty() && value.parse::<IpAddr>().is_err() {
                return Err("not an IPv4 or IPv6 address".into());
            }
            value.to_string()
        }
        PropertyType::Enum(list) => {
            if !list.iter().any(|v| v == value) {
                return Err(format!("not one of {}", list.join(", ")));
            }
            value.to_string()
        }
        PropertyType::Str | PropertyType::Other => value.to_string(),
    };
    let len = value.chars().count() as u64;
    if matches!(
        ty,
        PropertyType::Str | PropertyType::Enum(_) | PropertyType::Other
    ) {
        if let Some(m) = q.min_len
            && len < m
        {
            return Err(format!("shorter than its minimum length {m}"));
        }
        if let Some(m) = q.max_len
            && len > m
        {
            return Err(format!("longer than its maximum length {m}"));
        }
    }
    if let Some(map) = &q.value_map
        && !value_map_allows(map, &value, ty)
    {
        let shown: Vec<&str> = map.iter().take(10).map(String::as_str).collect();
        let more = if map.len() > 10 { ", ..." } else { "" };
        return Err(format!(
            "not one of its allowed values ({}{more})",
            shown.join(", ")
        ));
    }
    Ok(value)
}

/// A decimal integer with an optional sign.
fn parse_int(t: &str) -> Option<i128> {
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || digits.len() > 38 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

fn check_range(x: f64, q: &Qualifiers) -> Result<(), String> {
    if let Some(m) = q.min_value
        && x < m
    {
        return Err(format!("below its minimum value {m}"));
    }
    if let Some(m) = q.max_value
        && x > m
    {
        return Err(format!("above its maximum value {m}"));
    }
    Ok(())
}

fn value_map_allows(map: &[String], value: &str, ty: &PropertyType) -> bool {
    let n = match ty {
        PropertyType::Int { .. } => parse_int(value.trim()),
        _ => None,
    };
    map.iter().any(|m| {
        if m == value {
            return true;
        }
        if m == ".." {
            return true;
        }
        match (n, m.split_once("..")) {
            (Some(n), Some((lo, hi))) => {
                let lo_ok = lo.trim().is_empty() || parse_int(lo.trim()).is_some_and(|lo| n >= lo);
                let hi_ok = hi.trim().is_empty() || parse_int(hi.trim()).is_some_and(|hi| n <= hi);
                lo_ok && hi_ok
            }
            (Some(n), None) => parse_int(m.trim()) == Some(n),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(value: &str, ty: &str, q: &str) -> Result<String, String> {
        validate(
            value,
            &PropertyType::parse(Some(ty)),
            &Qualifiers::parse(Some(q)),
        )
    }

    #[test]
    fn integers_by_range() {
        assert_eq!(v("255", "uint8", ""), Ok("255".into()));
        assert!(v("256", "uint8", "").is_err());
        assert!(v("-1", "uint16", "").is_err());
        assert_eq!(v("-128", "sint8", ""), Ok("-128".into()));
        assert!(v("-129", "sint8", "").is_err());
        assert_eq!(
            v("18446744073709551615", "uint64", ""),
            Ok("18446744073709551615".into())
        );
        assert!(v("18446744073709551616", "uint64", "").is_err());
        assert!(v("1.5", "uint32", "").is_err());
        assert!(v("", "uint32", "").is_err());
        assert!(v("12", "uint8", "MinValue(20)").is_err());
        assert!(v("30", "uint8", "MinValue(20) MaxValue(25)").is_err());
        assert_eq!(
            v("22", "uint8", "MinValue(20),MaxValue(25)"),
            Ok("22".into())
        );
        assert_eq!(v("5", "int", ""), Ok("5".into()));
    }

    #[test]
    fn booleans_reals_ips() {
        assert_eq!(v("TRUE", "boolean", ""), Ok("true".into()));
        assert_eq!(v("0", "boolean", ""), Ok("false".into()));
        assert!(v("yes", "boolean", "").is_err());
        assert!(v("", "boolean", "").is_err());
        assert_eq!(v("1.5e3", "real64", ""), Ok("1.5e3".into()));
        assert!(v("nan", "real64", "").is_err());
        assert!(v("inf", "real64", "").is_err());
        assert!(v("1e39", "real32", "").is_err());
        assert_eq!(v("10.0.0.1", "ip", ""), Ok("10.0.0.1".into()));
        assert_eq!(v("fe80::1", "ip:VM Network", ""), Ok("fe80::1".into()));
        assert_eq!(v("", "ip", ""), Ok(String::new()));
        assert!(v("10.0.0.256", "ip", "").is_err());
    }

    #[test]
    fn strings_and_qualifiers() {
        assert_eq!(v("abc", "string", "MaxLen(3)"), Ok("abc".into()));
        assert!(v("abcd", "string", "MaxLen(3)").is_err());
        assert!(v("", "string", "MinLen(1)").is_err());
        assert_eq!(v("é", "string", "MaxLen(1)"), Ok("é".into()));
        let map = "ValueMap{\"Africa/Cairo\",\"Etc/UTC\"}";
        assert_eq!(v("Etc/UTC", "string", map), Ok("Etc/UTC".into()));
        assert!(v("Mars/Base", "string", map).is_err());
        assert_eq!(v("3", "uint8", "ValueMap{\"1..5\",\"9\"}"), Ok("3".into()));
        assert!(v("6", "uint8", "ValueMap{\"1..5\",\"9\"}").is_err());
        assert_eq!(v("9", "uint8", "ValueMap{\"1..5\",\"9\"}"), Ok("9".into()));
        assert_eq!(v("static", "string[dhcp,static]", ""), Ok("static".into()));
        assert!(v("manual", "string[dhcp,static]", "").is_err());
        // VMware's network qualifiers are ignored.
        assert_eq!(v("x", "string", "Ip('Network 1')"), Ok("x".into()));
    }

    #[test]
    fn qualifier_parser_is_total() {
        for q in [
            "",
            "(",
            "{",
            "MaxLen(",
            "ValueMap{\"a",
            "MinLen(x)",
            ",,, ",
            "Max Len(3)",
        ] {
            let _ = Qualifiers::parse(Some(q));
        }
        assert_eq!(
            Qualifiers::parse(Some("MinLen(2) MaxLen(4)")).max_len,
            Some(4)
        );
        assert_eq!(
            Qualifiers::parse(Some("ValueMap{\"a,b\", \"c\"}")).value_map,
            Some(vec!["a,b".to_string(), "c".to_string()])
        );
    }
}
