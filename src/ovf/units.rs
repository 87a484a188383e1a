//! Byte units of `ovf:capacityAllocationUnits` and `rasd:AllocationUnits` (docs/formats.md §2.3,
//! §2.5, §6 rule 11).
//!
//! DSP0004 programmatic units with base unit byte: `byte`, `byte * 2^N`, `byte * 10^N`
//! (spaces optional). Legacy names seen in the wild (`KiloBytes`, `MegaBytes`, `GigaBytes`,
//! `TeraBytes`, and `KB`/`MB`/`GB`/`TB`) are strictly SI by name, but every producer that
//! writes them (VirtualBox for memory) means binary units, as COT and Xen Orchestra read
//! them, so they are 2^10, 2^20, 2^30, 2^40 here.

/// Why a units string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitsProblem {
    /// Not a byte unit we know.
    Unknown,
    /// The factor does not fit `u64` (`byte * 2^64`, `byte * 10^20`).
    Overflow,
}

/// The number of bytes one unit stands for.
pub fn byte_factor(units: &str) -> Result<u64, UnitsProblem> {
    let compact: String = units
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    match compact.as_str() {
        "byte" | "bytes" => return Ok(1),
        "kilobytes" | "kb" | "kib" => return Ok(1 << 10),
        "megabytes" | "mb" | "mib" => return Ok(1 << 20),
        "gigabytes" | "gb" | "gib" => return Ok(1 << 30),
        "terabytes" | "tb" | "tib" => return Ok(1 << 40),
        _ => {}
    }
    let Some(rest) = compact.strip_prefix("byte*") else {
        return Err(UnitsProblem::Unknown);
    };
    let (base, exp) = rest.split_once('^').ok_or(UnitsProblem::Unknown)?;
    if exp.is_empty() || !exp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UnitsProblem::Unknown);
    }
    let exp: u32 = exp.parse().map_err(|_| UnitsProblem::Overflow)?;
    let base: u64 = match base {
        "2" => 2,
        "10" => 10,
        _ => return Err(UnitsProblem::Unknown),
    };
    base.checked_pow(exp).ok_or(UnitsProblem::Overflow)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dsp0004_forms_with_and_without_spaces() {
        assert_eq!(byte_factor("byte"), Ok(1));
        assert_eq!(byte_factor("byte * 2^20"), Ok(1 << 20));
        assert_eq!(byte_factor("byte*2^30"), Ok(1 << 30));
        assert_eq!(byte_factor(" byte * 2^40 "), Ok(1 << 40));
        assert_eq!(byte_factor("byte * 10^9"), Ok(1_000_000_000));
        assert_eq!(byte_factor("byte * 2^63"), Ok(1 << 63));
    }

    #[test]
    fn legacy_names_are_binary() {
        assert_eq!(byte_factor("MegaBytes"), Ok(1 << 20));
        assert_eq!(byte_factor("GigaBytes"), Ok(1 << 30));
        assert_eq!(byte_factor("KiloBytes"), Ok(1 << 10));
        assert_eq!(byte_factor("MB"), Ok(1 << 20));
    }

    #[test]
    fn overflow_and_unknown_units_are_refused() {
        assert_eq!(byte_factor("byte * 2^64"), Err(UnitsProblem::Overflow));
        assert_eq!(byte_factor("byte * 10^20"), Err(UnitsProblem::Overflow));
        assert_eq!(
            byte_factor("byte * 2^99999999999"),
            Err(UnitsProblem::Overflow)
        );
        assert_eq!(byte_factor("hertz * 10^6"), Err(UnitsProblem::Unknown));
        assert_eq!(byte_factor("byte * 3^2"), Err(UnitsProblem::Unknown));
        assert_eq!(byte_factor("byte * 2^"), Err(UnitsProblem::Unknown));
        assert_eq!(byte_factor("byte * 2^-1"), Err(UnitsProblem::Unknown));
        assert_eq!(byte_factor(""), Err(UnitsProblem::Unknown));
    }
}
