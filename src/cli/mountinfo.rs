//! Reading `/proc/self/mountinfo`: is a path a FUSE mount, and which device is it.

use std::path::Path;

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted file system.
    pub device: String,
    /// Mount point, unescaped.
    pub mount_point: String,
    /// File system type (`fuse`, `fuse.ovafs`, ...).
    pub fs_type: String,
    /// Mount source: whatever `fsname=` made it (by default ovafs puts the appliance path
    /// there; never trusted for anything but display).
    pub source: String,
}

impl MountEntry {
    /// Whether this is an ovafs mount: `fuse.ovafs`, which every mount ovafs makes shows
    /// (it passes `subtype=ovafs` to the kernel and to fusermount3). Plain `fuse` and other
    /// FUSE file systems (`fuse.sshfs`, ...) are not ours to unmount or recover.
    pub fn is_ovafs(&self) -> bool {
        self.fs_type == "fuse.ovafs"
    }
}

/// Undoes the octal escapes (`\040` for a space) the kernel uses in the mount table.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one mountinfo line.
fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let mut right = right.split(' ');
    Some(MountEntry {
        device: (*left.get(2)?).to_string(),
        mount_point: unescape(left.get(4)?),
        fs_type: right.next()?.to_string(),
        source: unescape(right.next()?),
    })
}

/// The topmost mount whose mount point is `path` (compared as given, and canonicalised when
/// that is possible without touching the mount itself).
pub fn find(path: &Path) -> Option<MountEntry> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let path = canonical_mount_path(path);
    let wanted = path.to_string_lossy();
    let wanted = wanted.trim_end_matches('/');
    let wanted = if wanted.is_empty() { "/" } else { wanted };
    table
        .lines()
        .filter_map(parse_line)
        .rfind(|e| e.mount_point == wanted)
}

/// `path` with its parent folder canonicalised. The mount point itself is not resolved:
/// stat() on a mount whose daemon died fails, and on a live one it asks the daemon.
pub fn canonical_mount_path(path: &Path) -> std::path::PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map(|p| p.join(name))
            .unwrap_or(abs.clone()),
        _ => abs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fuse_lines_with_escaped_spaces() {
        let l = "36 25 0:52 / /mnt/my\\040app rw,nosuid,nodev,relatime shared:1 - fuse /tmp/a\\040b.ova ro,user_id=0";
        let e = parse_line(l).unwrap();
        assert_eq!(e.device, "0:52");
        assert_eq!(e.mount_point, "/mnt/my app");
        assert_eq!(e.source, "/tmp/a b.ova");
        assert!(!e.is_ovafs(), "plain fuse is not ovafs");
        assert!(parse_line("garbage").is_none());
        let sshfs = l.replace(" - fuse ", " - fuse.sshfs ");
        assert!(!parse_line(&sshfs).unwrap().is_ovafs());
        let ours = l.replace(" - fuse ", " - fuse.ovafs ");
        assert!(parse_line(&ours).unwrap().is_ovafs());
    }
}
