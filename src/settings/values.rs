//! Parsing what users write into settings files: trimming, text checks, numbers, booleans,
//! MAC addresses and token lists. Every function says in words why a value is refused.

/// Removes one trailing line break (`\n` or `\r\n`), as `echo` and editors add it.
pub(crate) fn strip_newline(s: &str) -> &str {
    s.strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .unwrap_or(s)
}

/// Refuses characters XML 1.0 cannot hold (control characters other than tab and line
/// breaks, U+FFFE, U+FFFF).
pub(crate) fn check_xml_chars(s: &str) -> Result<(), String> {
    match s.chars().find(|&c| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}'
    }) {
        Some(c) => Err(format!(
            "it contains the control character U+{:04X}, which a descriptor cannot hold",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

/// One line of text, surrounding white space trimmed.
pub(crate) fn line(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.contains(['\n', '\r']) {
        return Err("it must be a single line".into());
    }
    check_xml_chars(t)?;
    Ok(t.to_string())
}

/// Free text of several lines: line breaks as `\n`, surrounding white space trimmed.
pub(crate) fn block(s: &str) -> Result<String, String> {
    let t = s.replace("\r\n", "\n").replace('\r', "\n");
    check_xml_chars(&t)?;
    Ok(t.trim().to_string())
}

/// A whole number in `min..=max`.
pub(crate) fn uint(s: &str, min: u64, max: u64) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("a number is needed".into());
    }
    if !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a whole number".into());
    }
    let n: u64 = t.parse().map_err(|_| "too large".to_string())?;
    if n < min {
        return Err(format!("the smallest value is {min}"));
    }
    if n > max {
        return Err(format!("the largest value is {max}"));
    }
    Ok(n)
}

/// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case).
pub(crate) fn boolean(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("write true or false".into()),
    }
}

/// A unicast MAC address: six hexadecimal octets separated by `:` or `-`, written back
/// lower case with colons.
pub(crate) fn mac(s: &str) -> Result<String, String> {
    let t = s.trim();
    let parts: Vec<&str> = t.split([':', '-']).collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err("not a MAC address like 00:50:56:12:34:56".into());
    }
    let first = u8::from_str_radix(parts[0], 16).map_err(|_| "not a MAC address".to_string())?;
    if first & 1 == 1 {
        return Err("a multicast address cannot be an adapter's address".into());
    }
    Ok(parts.join(":").to_ascii_lowercase())
}

/// A token of letters, digits, `.`, `_` and `-` (an adapter type, a guest id).
pub(crate) fn token(s: &str, what: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("{what} is needed"));
    }
    if t.len() > 128 {
        return Err(format!("{what} is too long"));
    }
    if !t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "{what} is made of letters, digits, '.', '_' and '-' only"
        ));
    }
    Ok(t.to_string())
}

/// A list of tokens separated by spaces (or commas), written back with single spaces.
pub(crate) fn token_list(s: &str, what: &str, check: fn(&str) -> bool) -> Result<String, String> {
    let items: Vec<&str> = s
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .collect();
    for i in &items {
        if !check(i) {
            return Err(format!("{i:?} is not a valid {what}"));
        }
    }
    Ok(items.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(strip_newline("4\n"), "4");
        assert_eq!(strip_newline("4\r\n"), "4");
        assert_eq!(strip_newline("4\n\n"), "4\n");
        assert_eq!(uint(" 4 ", 1, 8), Ok(4));
        assert!(uint("banana", 1, 8).is_err());
        assert!(uint("0", 1, 8).is_err());
        assert!(uint("9", 1, 8).is_err());
        assert!(uint("-1", 1, 8).is_err());
        assert!(uint("99999999999999999999999", 1, u64::MAX).is_err());
        assert_eq!(boolean("TRUE"), Ok(true));
        assert_eq!(boolean("off"), Ok(false));
        assert!(boolean("maybe").is_err());
        assert_eq!(mac("00-50-56-AB-cd-EF"), Ok("00:50:56:ab:cd:ef".into()));
        assert!(mac("01:00:5e:00:00:01").is_err());
        assert!(mac("00:50:56:ab:cd").is_err());
        assert!(mac("00:50:56:ab:cd:eg").is_err());
        assert_eq!(line("  a b  "), Ok("a b".into()));
        assert!(line("a\nb").is_err());
        assert!(line("a\u{7}").is_err());
        assert_eq!(block("a\r\nb\n"), Ok("a\nb".into()));
        assert_eq!(token("VmxNet3", "type"), Ok("VmxNet3".into()));
        assert!(token("a b", "type").is_err());
        assert_eq!(
            token_list("vmx-07,  vmx-08", "type", |t| !t.is_empty()),
            Ok("vmx-07 vmx-08".into())
        );
    }
}
