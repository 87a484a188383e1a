//! The mount's own names: the top-level folders ovafs generates, and where a package file
//! whose name collides with one of them is shown instead.
//!
//! The mount's own names come first: the top-level names ovafs generates
//! ([`RESERVED_NAMES`]: the status folder, the disks folder and the settings tree) belong to
//! ovafs whatever the package holds. A package file whose path starts with one of them is
//! shown under [`ESCAPE_DIR`] instead (`.ovafs/members/<its path>`, see [`shown_path`]), so
//! a member named `.ovafs/status` or `disks/x.raw` can neither replace the integrity report
//! nor pass for a flat image, and is still readable, byte for byte, under its escaped name.

use std::borrow::Cow;

/// The top-level folders of the settings tree (`vm/` for a single virtual system, `vms/`
/// for a collection's, `networks/`); `settings` builds its tree under these names.
pub const SETTINGS_DIRS: [&str; 3] = ["vm", "vms", "networks"];

/// Folder of the status files (`.ovafs/status`, `.ovafs/status.json`).
pub const STATUS_DIR: &str = ".ovafs";

/// Folder of the flat images (`disks/NAME.raw`).
pub const DISKS_DIR: &str = "disks";

/// Folder of the file trees of the package's ISO 9660 members (`media/NAME/`).
pub const MEDIA_DIR: &str = "media";

/// Where a package file whose name collides with the mount's own names is shown:
/// `.ovafs/members/<its path in the package>`.
pub const ESCAPE_DIR: &str = ".ovafs/members";

/// Every top-level name the mount generates. A package file whose first path component is
/// one of these is shown under [`ESCAPE_DIR`] (the one place this rule is applied is
/// [`shown_path`]).
pub const RESERVED_NAMES: [&str; 6] = [
    STATUS_DIR,
    DISKS_DIR,
    MEDIA_DIR,
    SETTINGS_DIRS[0],
    SETTINGS_DIRS[1],
    SETTINGS_DIRS[2],
];

/// Whether `path` (a package-relative name) lies in the mount's own namespace.
pub fn is_reserved(path: &str) -> bool {
    let first = path.split('/').find(|p| !p.is_empty()).unwrap_or("");
    RESERVED_NAMES.contains(&first)
}

/// The path in the mount of the package file `name`: its own name, or
/// `.ovafs/members/<name>` when that name lies in the mount's own namespace.
pub fn shown_path(name: &str) -> Cow<'_, str> {
    if is_reserved(name) {
        Cow::Owned(format!("{ESCAPE_DIR}/{}", name.trim_start_matches('/')))
    } else {
        Cow::Borrowed(name)
    }
}

/// A package file shown under an escaped name because its own is the mount's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escaped {
    /// Its name in the package.
    pub name: String,
    /// Where the mount shows it (`.ovafs/members/<name>`).
    pub shown: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_are_escaped_and_others_kept() {
        for (name, shown) in [
            (".ovafs/status", ".ovafs/members/.ovafs/status"),
            (".ovafs", ".ovafs/members/.ovafs"),
            ("disks/x.raw", ".ovafs/members/disks/x.raw"),
            ("vm", ".ovafs/members/vm"),
            ("vms/foo", ".ovafs/members/vms/foo"),
            (
                "networks/n/description",
                ".ovafs/members/networks/n/description",
            ),
            (".ovafs/members/x", ".ovafs/members/.ovafs/members/x"),
        ] {
            assert_eq!(shown_path(name), shown, "{name}");
        }
        for name in [
            "vm.ovf",
            "disk1.vmdk",
            "sub/disks/x",
            "Disks/x",
            "vmsx",
            ".ovafsx",
        ] {
            assert_eq!(shown_path(name), name, "{name}");
        }
    }
}
