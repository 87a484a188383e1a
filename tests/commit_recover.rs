//! `commit::recover` on journals and temporary files found beside a package.
//!
//! Contents:
//! - `valid_journal_is_replayed_*`: a journal for this very file is completed (also twice).
//! - `torn_journal_is_discarded_*`: every truncation of a journal is deleted, the OVA untouched.
//! - `journal_for_another_file_is_discarded`: the OVA was replaced since: not patched.
//! - `hostile_folder_journal_is_refused`: renames that leave the package's own files are
//!   neither replayed nor deleted.
//! - `journal_symlink_is_refused`: a symlink at the journal's name is neither followed nor
//!   deleted.
//! - `journal_aimed_at_other_bytes_is_refused`: a sealed journal whose old-bytes digests do
//!   not match the archive is left alone, the archive untouched.
//! - `torn_patch_is_completed`: half the sectors already new, half still old: replayed.
//! - `stale_temporary_files_are_removed_and_others_kept`.

#[path = "commit_support.rs"]
mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ovafs::commit::journal::{Identity, Journal, Kind, Op, sector_digests};
use ovafs::commit::{self, JournalOutcome};
use support::{Fixture, tar_list};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ovafs-recover-")
        .tempdir()
        .unwrap()
}

fn identity(p: &Path) -> Identity {
    let m = fs::metadata(p).unwrap();
    Identity {
        size: m.len(),
        dev: m.dev(),
        ino: m.ino(),
    }
}

/// A journal that overwrites bytes 100..104 of the descriptor's data with "XXXX" (harmless
/// to GNU tar: data, not headers), as a write of the whole first data sector, bound to the
/// sector as it is. Returns the journal and the offset of "XXXX".
fn patch_journal(ova: &Path) -> (Journal, u64) {
    let listing = tar_list(ova);
    let sector = support::data_offset(ova, listing[0].block);
    let bytes = fs::read(ova).unwrap();
    let old = bytes[sector as usize..sector as usize + 512].to_vec();
    let mut data = old.clone();
    data[100..104].copy_from_slice(b"XXXX");
    (
        Journal {
            kind: Kind::Archive,
            target: identity(ova),
            ops: vec![Op::Write {
                offset: sector,
                data,
                old: sector_digests(&old),
            }],
        },
        sector + 100,
    )
}

fn journal_path(source: &Path) -> std::path::PathBuf {
    let name = source.file_name().unwrap().to_str().unwrap();
    source.with_file_name(format!("{name}.ovafs-journal"))
}

#[test]
fn valid_journal_is_replayed_and_replaying_again_is_harmless() {
    let t = tempdir();
    let fx = Fixture::new(t.path(), "j");
    let ova = fx.build();
    let (j, offset) = patch_journal(&ova);
    let bytes = j.encode();
    for round in 0..2 {
        fs::write(journal_path(&ova), &bytes).unwrap();
        let r = commit::recover(&ova).unwrap();
        assert_eq!(r.journal, JournalOutcome::Completed, "round {round}");
        assert!(!journal_path(&ova).exists());
        let data = fs::read(&ova).unwrap();
        assert_eq!(&data[offset as usize..offset as usize + 4], b"XXXX");
    }
    assert!(commit::recover(&ova).unwrap().is_clean());
}

#[test]
fn torn_journal_is_discarded_and_the_ova_untouched() {
    let t = tempdir();
    let fx = Fixture::new(t.path(), "torn");
    let ova = fx.build();
    let before = fs::read(&ova).unwrap();
    let bytes = patch_journal(&ova).0.encode();
    for n in [0, 1, 8, 40, bytes.len() / 2, bytes.len() - 1] {
        fs::write(journal_path(&ova), &bytes[..n]).unwrap();
        let r = commit::recover(&ova).unwrap();
        assert!(
            matches!(r.journal, JournalOutcome::Discarded { .. }),
            "cut at {n}: {r:?}"
        );
        assert!(!journal_path(&ova).exists());
        assert_eq!(fs::read(&ova).unwrap(), before);
    }
}

#[test]
fn journal_for_another_file_is_discarded() {
    let t = tempdir();
    let fx = Fixture::new(t.path(), "moved");
    let ova = fx.build();
    let bytes = patch_journal(&ova).0.encode();
    // The OVA is replaced by a copy (new inode) before recovery.
    let copy = t.path().join("copy");
    fs::copy(&ova, &copy).unwrap();
    fs::rename(&copy, &ova).unwrap();
    let before = fs::read(&ova).unwrap();
    fs::write(journal_path(&ova), &bytes).unwrap();
    let r = commit::recover(&ova).unwrap();
    assert!(
        matches!(r.journal, JournalOutcome::Discarded { .. }),
        "{r:?}"
    );
    assert_eq!(fs::read(&ova).unwrap(), before);
}

#[test]
fn journal_aimed_at_other_bytes_is_refused() {
    let t = tempdir();
    let fx = Fixture::new(t.path(), "aimed");
    let ova = fx.build();
    let before = fs::read(&ova).unwrap();
    let (mut j, _) = patch_journal(&ova);
    // Well sealed, right identity, but bound to bytes this archive never held.
    if let Op::Write { old, .. } = &mut j.ops[0] {
        *old = sector_digests(&[0x55; 512]);
    }
    fs::write(journal_path(&ova), j.encode()).unwrap();
    let r = commit::recover(&ova).unwrap();
    assert!(
        matches!(&r.journal, JournalOutcome::Refused { reason, .. } if reason.contains("neither")),
        "{r:?}"
    );
    assert!(r.read_only_reason().is_some());
    assert_eq!(fs::read(&ova).unwrap(), before);
    assert!(journal_path(&ova).exists());
}

#[test]
fn torn_patch_is_completed() {
    let t = tempdir();
    let fx = Fixture::new(t.path(), "tornpatch");
    let ova = fx.build();
    let listing = tar_list(&ova);
    let at = support::data_offset(&ova, listing[0].block) as usize;
    let bytes = fs::read(&ova).unwrap();
    let old = bytes[at..at + 1024].to_vec();
    let mut new = old.clone();
    new[10] ^= 1;
    new[600] ^= 1;
    let j = Journal {
        kind: Kind::Archive,
        target: identity(&ova),
        ops: vec![Op::Write {
            offset: at as u64,
            data: new.clone(),
            old: sector_digests(&old),
        }],
    };
    // The crash tore the patch: the first sector is new, the second still old.
    let mut torn = bytes.clone();
    torn[at..at + 512].copy_from_slice(&new[..512]);
    fs::write(&ova, &torn).unwrap();
    fs::write(journal_path(&ova), j.encode()).unwrap();
    let r = commit::recover(&ova).unwrap();
    assert_eq!(r.journal, JournalOutcome::Completed, "{r:?}");
    assert_eq!(&fs::read(&ova).unwrap()[at..at + 1024], &new[..]);
}

#[test]
fn hostile_folder_journal_is_refused() {
    let t = tempdir();
    let fx = Fixture::new(t.path(), "pkg");
    fx.write_files();
    let dir = t.path().join("pkg");
    let ovf = dir.join(fx.ovf());
    let before = support::sha256(&fs::read(&ovf).unwrap());
    for ops in [
        vec![Op::Rename {
            from: fx.disk_name.clone(),
            to: fx.ovf(),
            sha256: [0; 32],
        }],
        vec![Op::Remove {
            name: fx.disk_name.clone(),
        }],
        vec![Op::Rename {
            from: format!(".{}.ovafs-tmp-x", fx.ovf()),
            to: fx.disk_name.clone(),
            sha256: [0; 32],
        }],
    ] {
        let j = Journal {
            kind: Kind::Folder,
            target: Identity::default(),
            ops,
        };
        fs::write(journal_path(&ovf), j.encode()).unwrap();
        let r = commit::recover(&ovf).unwrap();
        assert!(matches!(r.journal, JournalOutcome::Refused { .. }), "{r:?}");
        assert!(
            journal_path(&ovf).exists(),
            "a refused journal is left alone"
        );
        assert!(dir.join(&fx.disk_name).exists());
        assert_eq!(support::sha256(&fs::read(&ovf).unwrap()), before);
    }
}

#[test]
fn journal_symlink_is_refused() {
    let t = tempdir();
    let fx = Fixture::new(t.path(), "link");
    let ova = fx.build();
    let victim = t.path().join("victim");
    fs::write(&victim, b"keep me").unwrap();
    std::os::unix::fs::symlink(&victim, journal_path(&ova)).unwrap();
    let r = commit::recover(&ova).unwrap();
    assert!(
        matches!(&r.journal, JournalOutcome::Refused { reason, .. } if reason.contains("symbolic link")),
        "{r:?}"
    );
    assert_eq!(fs::read(&victim).unwrap(), b"keep me");
    assert!(fs::symlink_metadata(journal_path(&ova)).is_ok());
}

#[test]
fn stale_temporary_files_are_removed_and_others_kept() {
    let t = tempdir();
    let fx = Fixture::new(t.path(), "tmp");
    let ova = fx.build();
    let stale = t.path().join(".tmp.ova.ovafs-tmp-abc123");
    let other = t.path().join(".other.ova.ovafs-tmp-abc123");
    let dot = t.path().join(".tmp.ova.swp");
    for p in [&stale, &other, &dot] {
        fs::write(p, b"x").unwrap();
    }
    let r = commit::recover(&ova).unwrap();
    assert_eq!(r.journal, JournalOutcome::None);
    assert_eq!(r.removed_temp_files, vec![stale.clone()]);
    assert!(!stale.exists() && other.exists() && dot.exists());
}

#[test]
fn many_planted_temporary_names_are_kept_and_counted_not_listed() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempdir();
    let fx = Fixture::new(t.path(), "many");
    let ova = fx.build();
    // Names with our prefix that are not ours (writable by others): a neighbour can make
    // any number of them.
    let planted = 100;
    for i in 0..planted {
        let p = t.path().join(format!(".many.ova.ovafs-tmp-{i:03}"));
        fs::write(&p, b"x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
    }
    let r = commit::recover(&ova).unwrap();
    assert!(r.removed_temp_files.is_empty());
    assert_eq!(r.kept_temp_files.len(), commit::MAX_LISTED_TEMPS);
    assert_eq!(
        r.kept_temp_unlisted,
        (planted - commit::MAX_LISTED_TEMPS) as u64
    );
    let notices = r.notices();
    assert_eq!(notices.len(), commit::MAX_LISTED_TEMPS + 1, "{notices:?}");
    assert!(
        notices
            .last()
            .unwrap()
            .contains(&format!("{} more", planted - commit::MAX_LISTED_TEMPS)),
        "{notices:?}"
    );
    for i in 0..planted {
        assert!(
            t.path()
                .join(format!(".many.ova.ovafs-tmp-{i:03}"))
                .exists()
        );
    }
}
