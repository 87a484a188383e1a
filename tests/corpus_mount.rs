//! Every OVA and every loose disk image of the shared corpus, through real mounts.
//!
//! The corpus (other projects' files, read in place, never copied into the repo) comes from
//! `OVAFS_CORPUS`; CI sets it to `../shared/corpus`. Outside CI the test says it is skipped
//! when the variable is unset; under CI (`CI=true`) that is a failure.
//!
//! Every OVA either mounts or is refused with one line. Loose disks are packed into a
//! temporary OVA with a generated descriptor (GNU tar reads them in place). Every flat image
//! shown must hash to the "raw SHA-256" that SOURCES.md records for it (qemu-img's
//! `convert -O raw`), and the disks ovafs decodes must be shown.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn corpus() -> Option<PathBuf> {
    corpus_dir("corpus mount test")
}

/// "raw SHA-256" oracles from SOURCES.md, keyed `folder/file` for loose files and
/// `folder/archive/member` for members of archives.
fn oracles(corpus: &Path) -> HashMap<String, String> {
    let text = fs::read_to_string(corpus.join("SOURCES.md")).expect("SOURCES.md");
    let mut map = HashMap::new();
    let (mut folder, mut file) = (String::new(), String::new());
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("### ") {
            folder = rest.trim().trim_end_matches('/').to_string();
        }
        if let Some(rest) = t.strip_prefix("- **")
            && let Some(end) = rest.find("**")
        {
            file = rest[..end].to_string();
        }
        let Some(pos) = t.find("raw SHA-256 `") else {
            continue;
        };
        let hash: String = t[pos + 13..].chars().take_while(|c| *c != '`').collect();
        let key = match t.strip_prefix("- member `") {
            Some(rest) => format!("{folder}/{file}/{}", &rest[..rest.find('`').unwrap()]),
            None => format!("{folder}/{file}"),
        };
        map.insert(key, hash);
    }
    map
}

/// `folder/file` of a corpus path.
fn corpus_key(corpus: &Path, path: &Path) -> String {
    path.strip_prefix(corpus)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

/// The flat images of a mount, as (stem, path) pairs.
fn flat_images(m: &Mount) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for e in fs::read_dir(m.path("disks")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        // Beside each flat image is its guest view, the folder disks/<stem>/.
        if let Some(stem) = name.strip_suffix(".raw") {
            out.push((stem.to_string(), e.path()));
        }
    }
    out
}

/// The oracle for a flat image of archive `archive_key` whose stem is `stem`: the member
/// whose name without its extension (and `.gz`) is `stem`.
fn oracle_for<'a>(
    oracles: &'a HashMap<String, String>,
    archive_key: &str,
    stem: &str,
) -> Option<&'a String> {
    let prefix = format!("{archive_key}/");
    oracles
        .iter()
        .find(|(k, _)| {
            let Some(member) = k.strip_prefix(&prefix) else {
                return false;
            };
            let member = member.strip_suffix(".gz").unwrap_or(member);
            member.rsplit_once('.').map_or(member, |(base, _)| base) == stem
        })
        .map(|(_, v)| v)
}

/// OVAs that must mount and show these flat images (their hashes are checked against
/// SOURCES.md like every other): the gzip-compressed disk members of VirtualBox's test OVAs
/// (`ovf:compression="gzip"`), and Ganeti's gzip-compressed tar.
const MUST_SHOW: &[(&str, &[&str])] = &[
    (
        "virtualbox/tdAppliance1-t3-ovftool-4.1.0.ova",
        &["tdAppliance1-t3-ovftool-4.1.0-disk1"],
    ),
    (
        "virtualbox/tdAppliance1-t4.ova",
        &["tdAppliance1-t4-disk1", "tdAppliance1-t4-disk2"],
    ),
    ("virtualbox/tdAppliance1-t5.ova", &["tdAppliance1-t5-disk1"]),
    (
        "virtualbox/tdAppliance1-t6-ovftool-4.1.0.ova",
        &["tdAppliance1-t6-ovftool-4.1.0-disk1"],
    ),
    ("ganeti/ova.ova", &["new_disk"]),
];

#[test]
fn ganeti_gzip_compressed_disk_is_shown() {
    let Some(corpus) = corpus() else { return };
    let oracles = oracles(&corpus);
    let tmp = tempdir();
    // compr_disk.vmdk.gz (gzip of a monolithicSparse VMDK) referenced with
    // ovf:compression="gzip", as ganeti/gzip_disk.ovf does; that descriptor itself is refused
    // (an Item's Parent names no Item), so the package gets a generated one.
    let disk = corpus.join("ganeti/compr_disk.vmdk.gz");
    let pkg = tmp.path().join("pkg");
    fs::create_dir(&pkg).unwrap();
    let spec = ovafs::sample::ApplianceSpec {
        name: "ganeti".into(),
        cpus: 1,
        memory_mib: 64,
        network: "net".into(),
        disks: vec![ovafs::sample::DiskSpec {
            href: "compr_disk.vmdk.gz".into(),
            file_bytes: fs::metadata(&disk).unwrap().len(),
            capacity_bytes: 51200,
            format_uri: "http://www.vmware.com/specifications/vmdk.html#sparse".into(),
            compression: Some("gzip".into()),
        }],
    };
    fs::write(pkg.join("ganeti.ovf"), ovafs::sample::descriptor_xml(&spec)).unwrap();
    let ova = pkg.join("ganeti.ova");
    run_ok(
        tar_create(&ova, &pkg)
            .arg("ganeti.ovf")
            .arg("-C")
            .arg(disk.parent().unwrap())
            .arg("compr_disk.vmdk.gz"),
    );
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let images = flat_images(&m);
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].0, "compr_disk");
    assert_eq!(
        sha256_sparse(&images[0].1),
        oracles["ganeti/compr_disk.vmdk.gz"]
    );
    assert_eq!(
        sha256_file(&m.path("compr_disk.vmdk.gz")),
        sha256_file(&disk)
    );
    m.umount();
}

#[test]
fn every_corpus_ova_mounts_or_is_refused_cleanly() {
    let Some(corpus) = corpus() else { return };
    let oracles = oracles(&corpus);
    assert!(
        oracles.len() >= 20,
        "SOURCES.md oracles not found ({})",
        oracles.len()
    );
    let tmp = tempdir();
    let mut ovas: Vec<PathBuf> = walk(&corpus)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ova"))
        .collect();
    ovas.sort();
    assert!(
        ovas.len() >= 15,
        "expected the corpus's 15 OVAs, found {}",
        ovas.len()
    );
    // Mount every OVA first, then hash every flat image at once on all cores.
    let mut mounts = Vec::new();
    let mut flats: Vec<(String, String, PathBuf)> = Vec::new(); // (ova key, stem, path)
    for (i, ova) in ovas.iter().enumerate() {
        let mnt = tmp.path().join(format!("m{i}"));
        let key = corpus_key(&corpus, ova);
        let must_show = MUST_SHOW
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(&[][..], |(_, stems)| *stems);
        match Mount::new(ova, &mnt, &[]) {
            Ok(m) => {
                let images = flat_images(&m);
                for stem in must_show {
                    assert!(
                        images.iter().any(|(s, _)| s == stem),
                        "{key}: disks/{stem}.raw is not shown; shown: {images:?}"
                    );
                }
                flats.extend(images.into_iter().map(|(stem, p)| (key.clone(), stem, p)));
                mounts.push(m);
            }
            Err(e) => {
                assert!(must_show.is_empty(), "{key} must mount: {e}");
                assert_eq!(
                    e.lines().count(),
                    1,
                    "{}: refusal must be one line: {e:?}",
                    ova.display()
                );
                eprintln!("refused (as expected of a broken package): {}", e.trim());
            }
        }
    }
    let paths: Vec<PathBuf> = flats.iter().map(|(_, _, p)| p.clone()).collect();
    let hashes = hash_in_parallel(&paths);
    for ((key, stem, _), hash) in flats.iter().zip(&hashes) {
        let want = oracle_for(&oracles, key, stem)
            .unwrap_or_else(|| panic!("{key}: no oracle for flat image {stem}"));
        assert_eq!(hash, want, "{key}: disks/{stem}.raw differs from qemu-img");
    }
    let (mounted, checked_disks) = (mounts.len(), hashes.len());
    for m in mounts {
        m.umount();
    }
    // The ovftool OVAs t1, t2, t7 and glance's testserver.ova at least are valid.
    assert!(mounted >= 6, "only {mounted} corpus OVAs mounted");
    assert!(
        checked_disks >= 2,
        "only {checked_disks} flat images were checked"
    );
}

/// Packs the loose disk `disk` (read in place by GNU tar) into `pkg/corpus.ova` under the
/// name `name`, with a generated descriptor.
fn pack_loose(disk: &Path, name: &str, pkg: &Path) -> PathBuf {
    fs::create_dir_all(pkg).unwrap();
    let size = fs::metadata(disk).unwrap().len();
    let spec = ovafs::sample::ApplianceSpec {
        name: "corpus".into(),
        cpus: 1,
        memory_mib: 64,
        network: "net".into(),
        disks: vec![ovafs::sample::DiskSpec {
            href: name.into(),
            file_bytes: size,
            capacity_bytes: size,
            format_uri: String::new(),
            compression: None,
        }],
    };
    fs::write(pkg.join("corpus.ovf"), ovafs::sample::descriptor_xml(&spec)).unwrap();
    let ova = pkg.join("corpus.ova");
    run_ok(
        tar_create(&ova, pkg)
            .arg("corpus.ovf")
            .arg("-C")
            .arg(disk.parent().unwrap())
            .arg(name),
    );
    ova
}

/// SHA-256 of `len` zero bytes for every `len` in `lens`, in one pass over the largest
/// (SHA-256 streams: the shorter lengths are prefixes of the longest).
fn sha256_of_zeros(lens: &[u64]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let zeros = vec![0u8; 8 << 20];
    let mut h = Sha256::new();
    let mut done = 0u64;
    let mut out = vec![String::new(); lens.len()];
    for i in order {
        while done < lens[i] {
            let n = (lens[i] - done).min(zeros.len() as u64) as usize;
            h.update(&zeros[..n]);
            done += n as u64;
        }
        out[i] = h
            .clone()
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    }
    out
}

/// SHA-256 of each file, on as many threads as there are cores. Data regions are read
/// through the mount; holes (found with `SEEK_HOLE`, which ovafs answers from the disk's
/// tables) are hashed as zeros from memory, so the empty 100+ GiB of these disks are not
/// copied through FUSE. Files with no data at all share one pass over zeros.
fn hash_in_parallel(files: &[PathBuf]) -> Vec<String> {
    use nix::unistd::{Whence, lseek};
    let empty: Vec<bool> = files
        .iter()
        .map(|f| {
            let file = fs::File::open(f).unwrap();
            lseek(&file, 0, Whence::SeekData).is_err()
        })
        .collect();
    let lens: Vec<u64> = files
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .collect();
    let empty_lens: Vec<u64> = (0..files.len())
        .filter(|&i| empty[i])
        .map(|i| lens[i])
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out = vec![String::new(); files.len()];
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    std::thread::scope(|s| {
        let zeros = s.spawn(|| sha256_of_zeros(&empty_lens));
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= files.len() {
                            return done;
                        }
                        if !empty[i] {
                            done.push((i, sha256_sparse(&files[i])));
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            for (i, h) in w.join().unwrap() {
                out[i] = h;
            }
        }
        let mut zero_hashes = zeros.join().unwrap().into_iter();
        for i in 0..files.len() {
            if empty[i] {
                out[i] = zero_hashes.next().unwrap();
            }
        }
    });
    out
}

#[test]
fn every_corpus_disk_reads_like_qemu_or_is_refused_cleanly() {
    let Some(corpus) = corpus() else { return };
    let oracles = oracles(&corpus);
    let tmp = tempdir();
    let mut disks: Vec<(PathBuf, String)> = walk(&corpus)
        .into_iter()
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("vmdk" | "vhd" | "vhdx" | "qcow2")
            )
        })
        .map(|p| {
            let key = corpus_key(&corpus, &p);
            (p, key)
        })
        .collect();
    assert!(disks.len() >= 10, "found only {} corpus disks", disks.len());
    // The Disk2VHD sample is kept bzip2-compressed: unpack it first (251 MiB).
    let d2v = corpus.join("qemu/d2v-zerofilled.vhd.bz2");
    let unpacked = tmp.path().join("d2v-zerofilled.vhd");
    let out = run_ok(Command::new(tool("bunzip2")).arg("-c").arg(&d2v));
    fs::write(&unpacked, &out.stdout).unwrap();
    disks.push((unpacked, "qemu/d2v-zerofilled.vhd.bz2".to_string()));
    disks.sort();

    // Mount every disk, then hash every flat image at once.
    let mut mounts = Vec::new();
    let mut refused: Vec<(String, String)> = Vec::new();
    for (i, (disk, key)) in disks.iter().enumerate() {
        let name = disk.file_name().unwrap().to_str().unwrap();
        let pkg = tmp.path().join(format!("p{i}"));
        let ova = pack_loose(disk, name, &pkg);
        match Mount::new(&ova, &pkg.join("mnt"), &[]) {
            Ok(m) => mounts.push((name.to_string(), key.clone(), m)),
            Err(e) => {
                assert_eq!(
                    e.lines().count(),
                    1,
                    "{name}: refusal must be one line: {e:?}"
                );
                eprintln!("{name} refused: {}", e.trim());
                refused.push((name.to_string(), e));
            }
        }
    }
    let mut files = Vec::new();
    let mut owners = Vec::new();
    for (name, key, m) in &mounts {
        for e in fs::read_dir(m.path("disks")).unwrap() {
            let path = e.unwrap().path();
            // The flat images only, not the guest views beside them.
            if path.extension().is_some_and(|x| x == "raw") {
                files.push(path);
                owners.push((name.clone(), key.clone()));
            }
        }
    }
    let started = std::time::Instant::now();
    let hashes = hash_in_parallel(&files);
    eprintln!(
        "hashed {} flat images in {:?}",
        files.len(),
        started.elapsed()
    );
    let mut shown = Vec::new();
    for ((name, key), hash) in owners.iter().zip(&hashes) {
        let want = oracles
            .get(key)
            .unwrap_or_else(|| panic!("no oracle for {key}"));
        assert_eq!(hash, want, "{name}: flat image differs from qemu-img");
        shown.push(name.clone());
    }
    for (_, _, m) in mounts {
        m.umount();
    }
    // The disks ovafs decodes must actually be shown (afl9 is fuzzed garbage).
    for must in [
        "ext2.vmdk",
        "iotest-version3.vmdk",
        "input.vmdk",
        "ubuntu.2.0-disk1.vmdk",
        "new_disk.vmdk",
        "ext2.vhd",
        "ext2.qcow2",
        "hyperv2012r2-dynamic.vhd",
        "virtualpc-dynamic.vhd",
        "d2v-zerofilled.vhd",
    ] {
        assert!(
            shown.iter().any(|s| s == must),
            "{must} was not shown; shown: {shown:?}"
        );
    }
    // Refused, for the right reason: a bad footer checksum (qemu refuses it too), and a
    // differencing disk whose parent is not in the package (qemu reads it as if the parent
    // were zeros; ovafs will not show a delta without its parent).
    let reason = |n: &str| -> &str {
        refused
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, e)| e.as_str())
            .unwrap_or_else(|| panic!("{n} was not refused"))
    };
    assert!(
        reason("image.vhd").contains("checksum"),
        "{}",
        reason("image.vhd")
    );
    let fat = reason("fat-differential.vhd");
    assert!(
        fat.contains("fat-parent.vhd") && fat.contains("not in the package"),
        "{fat}"
    );
    assert!(reason("afl9.vmdk").contains("afl9.vmdk"));
}

/// qemu reads fat-differential.vhd without its parent, unallocated sectors as zeros. Read
/// the same way (no parent: zeros), the sector bitmaps must give qemu's bytes: a check of
/// the bitmaps' bit order on a file Windows wrote (the parent itself is not in the corpus).
#[test]
fn differencing_vhd_bitmaps_agree_with_qemu_when_the_parent_reads_as_zeros() {
    let Some(corpus) = corpus() else { return };
    use ovafs::io::ReadAt;
    let oracles = oracles(&corpus);
    let path = corpus.join("dfvfs/fat-differential.vhd");
    let src = std::sync::Arc::new(ovafs::io::FileSource::open(&path).unwrap());
    let image = ovafs::disk::open(src).unwrap();
    assert_eq!(image.format(), ovafs::disk::DiskFormat::VhdDifferencing);
    let parent = image.parent().unwrap();
    assert!(
        parent.candidates().iter().any(|c| c == "fat-parent.vhd"),
        "{parent:?}"
    );
    let flat = ovafs::disk::engine::FlatDisk::new(
        image,
        std::sync::Arc::new(ovafs::cache::UnitCache::new(0)),
        None,
    );
    let mut buf = vec![0u8; flat.len() as usize];
    flat.read_exact_at(0, &mut buf).unwrap();
    use sha2::{Digest, Sha256};
    let hash: String = Sha256::digest(&buf)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(&hash, &oracles["dfvfs/fat-differential.vhd"]);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
