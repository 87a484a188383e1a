//! Short names of partition types: MBR type bytes and GPT type GUIDs. Unknown types keep
//! their raw form (`0x42`, the GUID text) so nothing is hidden from the user.

/// The name of an MBR partition type byte (`0x83` → `Linux`); unknown bytes as `0xNN`.
pub fn mbr_type_name(byte: u8) -> String {
    let name = match byte {
        0x01 => "FAT12",
        0x04 | 0x06 | 0x0e => "FAT16",
        0x05 | 0x0f | 0x85 => "extended",
        0x07 => "NTFS/exFAT",
        0x0b | 0x0c => "FAT32",
        0x11 | 0x14 | 0x16 | 0x1e => "hidden FAT",
        0x17 => "hidden NTFS",
        0x1b | 0x1c => "hidden FAT32",
        0x27 => "Windows recovery",
        0x42 => "Windows dynamic",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x8e => "LVM",
        0xa5 => "FreeBSD",
        0xa6 => "OpenBSD",
        0xa8 => "Darwin UFS",
        0xa9 => "NetBSD",
        0xaf => "HFS+",
        0xee => "GPT protective",
        0xef => "EFI",
        0xfd => "Linux RAID",
        _ => return format!("0x{byte:02x}"),
    };
    name.to_string()
}

/// Whether an MBR type byte is an extended partition (a container of logical ones).
pub fn mbr_is_extended(byte: u8) -> bool {
    matches!(byte, 0x05 | 0x0f | 0x85)
}

/// Known GPT type GUIDs, as text (upper case, the way `sfdisk` and `sgdisk` print them).
const GPT_TYPES: &[(&str, &str)] = &[
    ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem"),
    ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap"),
    ("E6D6D379-F507-44C2-A23C-238F2A3DF928", "LVM"),
    ("A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID"),
    ("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "Linux home"),
    ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "Linux root (x86-64)"),
    ("44479540-F297-41B2-9AF7-D131D5F0458A", "Linux root (x86)"),
    ("B921B045-1DF0-41C3-AF44-4C6F280D3FAE", "Linux root (ARM64)"),
    ("BC13C2FF-59E6-4262-A352-B275FD6F7172", "Linux extended boot"),
    ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI System"),
    ("21686148-6449-6E6F-744E-656564454649", "BIOS boot"),
    ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "Microsoft basic data"),
    ("E3C9E316-0B5C-4DB8-817D-F92DF00215AE", "Microsoft reserved"),
    ("DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", "Windows recovery"),
    ("48465300-0000-11AA-AA11-00306543ECAC", "Apple HFS/HFS+"),
    ("7C3457EF-0000-11AA-AA11-00306543ECAC", "Apple APFS"),
    ("516E7CB4-6ECF-11D6-8FF8-00022D09712B", "FreeBSD UFS"),
    ("6A898CC3-1DD2-11B2-99A6-080020736631", "ZFS"),
];

/// The name of a GPT type GUID given as text; unknown GUIDs as the text itself.
pub fn gpt_type_name(guid_text: &str) -> String {
    GPT_TYPES
        .iter()
        .find(|(g, _)| g.eq_ignore_ascii_case(guid_text))
        .map_or_else(|| guid_text.to_ascii_uppercase(), |(_, n)| (*n).to_string())
}

/// The text form of a GUID stored on disk (the first three fields little-endian).
pub fn guid_text(b: &[u8; 16]) -> String {
    format!(
        "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15]
    )
}
