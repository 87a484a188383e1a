//! Human sizes: parsing `512M`, `1 GiB`, `64k` and printing `1.5 GiB`.
//!
//! One parser for every size a user types (the `cache_size` mount option, memory settings):
//! a decimal number, optional spaces, and an optional binary unit (`K`, `KB`, `KiB`, `M`,
//! ..., case-insensitive; all units are powers of 1024, as `du`, `qemu-img` and hypervisors
//! use them for memory and disks).

/// Parses a size in bytes with an optional unit. `default_unit` is the multiplier for a bare
/// number (1 for bytes, 1 << 20 for "MiB unless said otherwise").
pub fn parse_size(text: &str, default_unit: u64) -> Option<u64> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return None;
    }
    let number: u64 = t[..digits_end].parse().ok()?;
    let unit = t[digits_end..].trim().to_ascii_lowercase();
    let multiplier = match unit.as_str() {
        "" => default_unit,
        "b" | "byte" | "bytes" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// Formats a byte count for people: `512 B`, `64 KiB`, `1.5 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        assert_eq!(parse_size("512", 1 << 20), Some(512 << 20));
        assert_eq!(parse_size("512M", 1), Some(512 << 20));
        assert_eq!(parse_size("512 MiB", 1), Some(512 << 20));
        assert_eq!(parse_size("1G", 1), Some(1 << 30));
        assert_eq!(parse_size(" 1 gib ", 1), Some(1 << 30));
        assert_eq!(parse_size("64k", 1), Some(64 << 10));
        assert_eq!(parse_size("100", 1), Some(100));
    }

    #[test]
    fn refuses_nonsense_and_overflow() {
        for bad in [
            "",
            "M",
            "banana",
            "-1",
            "1.5G",
            "12X",
            "99999999999999999999",
        ] {
            assert_eq!(parse_size(bad, 1), None, "{bad}");
        }
        assert_eq!(parse_size("17179869184T", 1), None);
    }

    #[test]
    fn prints_for_people() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(64 << 10), "64 KiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
    }
}
