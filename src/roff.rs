//! Plain text made safe for roff (the man page sections generated from tables: the settings
//! files, the launch files' mapping).

/// `text` escaped for roff: backslashes and hyphens written as roff escapes, and a line
/// that would start with a control character (`.` or `'`) guarded with `\&`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            other => out.push(other),
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}
