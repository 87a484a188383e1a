//! Settings files on every descriptor of the shared corpus (`$OVAFS_CORPUS`, read in place):
//! the `.ovf` files, and the descriptors inside the `.ova` files that open.
//!
//! Contents:
//! - `corpus_settings_round_trip`: every parseable descriptor lists its tree, reads every file
//!   (`read` and `read_all` agree), and writing back each file's own content makes no edit.
//! - `corpus_settings_edits`: each file is written a plausible new value; an accepted edit
//!   re-parses, reads back, changes no other file (except the same setting seen through
//!   `configs/DEFAULT/` or, for a property default, through the configurations without a
//!   Value of their own), and writing the result back is again no edit. `mkdir` and `rmdir`
//!   of a network round-trip to the original bytes.
//! - `corpus_disk_images_updated`: the File size, populated size, capacity and format of every
//!   disk follow a rewritten image (`settings::update_disk_image`).
//!
//! Without `OVAFS_CORPUS` the tests print a skip line and pass, except in CI (`CI=true`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ovafs::ovf::{self, Descriptor};
use ovafs::settings::{self, EntryKind};

/// Every parseable descriptor of the corpus, by relative path.
fn descriptors(root: &Path) -> Vec<(String, Descriptor)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("corpus folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("corpus sub-folder")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        for p in files {
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            if rel.ends_with(".ovf") {
                let bytes = std::fs::read(&p).expect("read");
                match ovf::parse_descriptor(&bytes) {
                    Ok(d) => out.push((rel, d)),
                    Err(e) => println!("{rel}: not parseable ({e}), skipped"),
                }
            } else if rel.ends_with(".ova") {
                match ovafs::package::open(&p) {
                    Ok(pkg) => out.push((rel, pkg.descriptor)),
                    Err(e) => println!("{rel}: does not open ({e}), skipped"),
                }
            }
        }
    }
    out
}

fn snapshot(d: &Descriptor) -> BTreeMap<String, String> {
    settings::read_all(d).into_iter().collect()
}

#[test]
fn corpus_settings_round_trip() {
    let Some(root) = common::corpus_dir("settings corpus test") else {
        return;
    };
    let all = descriptors(&root);
    assert!(all.len() >= 20, "only {} descriptors parsed", all.len());
    for (name, d) in &all {
        let tree = settings::tree(d);
        let files: Vec<&str> = tree
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| e.path.as_str())
            .collect();
        assert!(
            files.iter().any(|f| f.starts_with("vms/")),
            "{name}: no settings files"
        );
        let snap = snapshot(d);
        assert_eq!(snap.len(), files.len(), "{name}");
        for f in &files {
            let v = settings::read(d, f).unwrap_or_else(|e| panic!("{name} {f}: {e}"));
            assert_eq!(snap.get(*f), Some(&v), "{name} {f}");
            let edits =
                settings::write(d, f, v.as_bytes()).unwrap_or_else(|e| panic!("{name} {f}: {e}"));
            assert!(edits.is_empty(), "{name} {f}: {edits:?}");
        }
        println!("{name}: {} files", files.len());
    }
}

/// A new value to try for a settings file with current value `cur`.
fn candidate(d: &Descriptor, path: &str, cur: &str) -> Option<String> {
    let leaf = path.rsplit('/').next()?;
    let parent = path.rsplit('/').nth(1).unwrap_or("");
    let n: Option<u64> = cur.parse().ok();
    Some(match (parent, leaf) {
        ("product", "product_url" | "vendor_url" | "app_url") => "https://example.com/x".into(),
        ("product", _) => format!("{cur} edited"),
        (_, "cpus") => {
            if n == Some(2) {
                "4".into()
            } else {
                "2".into()
            }
        }
        (_, "cores_per_socket") => "1".into(),
        (_, "memory") => {
            if n == Some(2048) {
                "1 GiB".into()
            } else {
                "2G".into()
            }
        }
        (_, "name") => format!("{cur} <edited>"),
        (_, "annotation") => format!("{cur}\nedited & more"),
        (_, "description" | "os_description") => format!("{cur} edited"),
        (_, "os") => {
            if cur.starts_with("36 ") {
                "94".into()
            } else {
                "LINUX".into()
            }
        }
        (_, "os_type") => "otherLinux64Guest".into(),
        (_, "system_type") => "vmx-13".into(),
        (_, "transport") => "iso com.vmware.guestInfo".into(),
        (_, "network") => d
            .networks
            .iter()
            .map(|x| x.name.value.clone())
            .find(|x| x != cur)?,
        (_, "type") => {
            if cur == "E1000" {
                "VmxNet3".into()
            } else {
                "E1000".into()
            }
        }
        (_, "mac") => "00:50:56:01:02:03".into(),
        (_, "connected") => {
            if cur == "true" {
                "false".into()
            } else {
                "true".into()
            }
        }
        ("properties", _) => match cur {
            "true" => "false".into(),
            "false" => "true".into(),
            _ if n.is_some() => "1".into(),
            _ => "x".into(),
        },
        _ => return None,
    })
}

/// Whether `other` may change when `path` is edited: the same setting through another
/// folder of the same system.
fn alias(d: &Descriptor, path: &str, other: &str) -> bool {
    let default = d
        .default_configuration()
        .map(|c| c.id.value.clone())
        .unwrap_or_default();
    let parts: Vec<&str> = path.split('/').collect();
    let oparts: Vec<&str> = other.split('/').collect();
    if parts.len() < 3 || oparts.len() < 3 || parts[1] != oparts[1] {
        return false;
    }
    let strip = |p: &[&str]| -> (Option<String>, String) {
        if p.get(2) == Some(&"configs") && p.len() > 4 {
            (Some(p[3].to_string()), p[4..].join("/"))
        } else {
            (None, p[2..].join("/"))
        }
    };
    let (c1, r1) = strip(&parts);
    let (c2, r2) = strip(&oparts);
    if r1 != r2 {
        return false;
    }
    if r1.starts_with("properties/") {
        // A default value shows through every configuration without its own Value.
        return c1.is_none() || c2.is_none();
    }
    let is_default = |c: &Option<String>| c.as_deref().is_none_or(|c| c == default);
    is_default(&c1) && is_default(&c2)
}

#[test]
fn corpus_settings_edits() {
    let Some(root) = common::corpus_dir("settings corpus test") else {
        return;
    };
    let mut accepted = 0usize;
    let mut refused = 0usize;
    for (name, d) in descriptors(&root) {
        let before = snapshot(&d);
        for (path, cur) in &before {
            let cur = cur.trim_end_matches('\n');
            let Some(new) = candidate(&d, path, cur) else {
                continue;
            };
            let edits = match settings::write(&d, path, format!("{new}\n").as_bytes()) {
                Ok(e) => e,
                Err(e) => {
                    assert!(
                        !matches!(e, settings::SettingError::Internal(_)),
                        "{name} {path} {new:?}: {e}"
                    );
                    println!("refused: {name} {path} {new:?}: {e}");
                    refused += 1;
                    continue;
                }
            };
            if edits.is_empty() {
                continue;
            }
            accepted += 1;
            let bytes = ovf::splice(&d.bytes, &edits).expect("splice");
            let d2 = ovf::parse_descriptor(&bytes)
                .unwrap_or_else(|e| panic!("{name} {path}: edited descriptor: {e}"));
            let after = snapshot(&d2);
            for (k, v) in &before {
                if k == path || alias(&d, path, k) {
                    continue;
                }
                assert_eq!(after.get(k), Some(v), "{name}: editing {path} changed {k}");
            }
            let v2 = after.get(path).expect("still there");
            let again = settings::write(&d2, path, v2.as_bytes()).expect("write back");
            assert!(again.is_empty(), "{name} {path}");
        }
        // A network round trip.
        let edits = settings::mkdir(&d, "networks/ovafs-test").expect("mkdir");
        let d2 = ovf::parse_descriptor(&ovf::splice(&d.bytes, &edits).expect("splice"))
            .unwrap_or_else(|e| panic!("{name}: mkdir: {e}"));
        let edits = settings::rmdir(&d2, "networks/ovafs-test").expect("rmdir");
        let back = ovf::splice(&d2.bytes, &edits).expect("splice");
        if d.networks.is_empty() {
            // mkdir created the NetworkSection too; rmdir leaves it, empty.
            let d3 = ovf::parse_descriptor(&back).expect("parse");
            assert!(d3.networks.is_empty(), "{name}");
        } else {
            assert_eq!(back, d.bytes.to_vec(), "{name}: mkdir + rmdir");
        }
    }
    println!("{accepted} edits accepted and checked, {refused} refused");
    assert!(accepted > 200, "only {accepted} edits accepted");
}

/// The descriptor follows a disk written again (a committed writable disk), on every disk of
/// every corpus descriptor: the current values make no edit; new sizes, a grown capacity and
/// a format are spliced, parse back with exactly those values, and leave every settings file
/// as it was; what cannot be kept true (a capacity given by a property, a chunked File, a
/// Disk without a File) is refused, never mangled.
#[test]
fn corpus_disk_images_updated() {
    let Some(root) = common::corpus_dir("corpus_disk_images_updated") else {
        return;
    };
    let stream = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
    let (mut updated, mut refused) = (0, 0);
    for (name, d) in descriptors(&root) {
        let before = snapshot(&d);
        for disk in &d.disks {
            let id = &disk.disk_id.value;
            let file = disk.file_ref.as_ref().and_then(|f| d.file(&f.value));
            if let Some(f) = file
                && let Some(size) = &f.size
                && f.chunk_size.is_none()
                && f.compression.is_none()
            {
                let same = settings::DiskImageUpdate {
                    stored_bytes: size.value,
                    populated_bytes: disk.populated_size.as_ref().map(|p| p.value),
                    capacity_bytes: disk.capacity_bytes,
                    format_uri: disk.format_uri.as_ref().map(|f| f.value.clone()),
                };
                let edited = settings::update_disk_image(&d, id, &same)
                    .unwrap_or_else(|e| panic!("{name} {id}: same values: {e}"));
                assert!(
                    edited.is_empty(),
                    "{name} {id}: the same values make no edit"
                );
            }
            let new = settings::DiskImageUpdate {
                stored_bytes: 987_654_321,
                populated_bytes: Some(123_456_789),
                capacity_bytes: disk.capacity_bytes.map(|c| c.saturating_add(1 << 30)),
                format_uri: Some(stream.into()),
            };
            match settings::update_disk_image(&d, id, &new) {
                Ok(edited) => {
                    let d2 = edited.descriptor.expect("edited");
                    let disk2 = d2
                        .disks
                        .iter()
                        .find(|x| &x.disk_id.value == id)
                        .expect("disk");
                    let f2 = d2
                        .file(&disk2.file_ref.as_ref().expect("file").value)
                        .expect("file");
                    assert_eq!(
                        f2.size.as_ref().map(|s| s.value),
                        Some(987_654_321),
                        "{name} {id}"
                    );
                    assert_eq!(
                        disk2.populated_size.as_ref().map(|s| s.value),
                        Some(123_456_789)
                    );
                    assert_eq!(disk2.capacity_bytes, new.capacity_bytes, "{name} {id}");
                    assert_eq!(
                        disk2.format_uri.as_ref().map(|f| f.value.as_str()),
                        Some(stream)
                    );
                    assert_eq!(
                        snapshot(&d2).len(),
                        before.len(),
                        "{name} {id}: settings tree"
                    );
                    updated += 1;
                }
                Err(e) => {
                    let s = e.to_string();
                    assert!(
                        s.contains("property") || s.contains("chunks") || s.contains("no File"),
                        "{name} {id}: unexpected refusal: {s}"
                    );
                    refused += 1;
                }
            }
        }
    }
    println!("{updated} disks updated and checked, {refused} refused");
    assert!(updated > 20, "only {updated} disks updated");
}
