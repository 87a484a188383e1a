//! FAT12, FAT16 and FAT32 read by `ovafs::guest` (src/guest/fat), judged by mtools.
//!
//! Contents:
//! - fat12_matches_mtools, fat16_matches_mtools, fat32_matches_mtools: `mkfs.vfat -F N`
//!   and `mcopy -s -m` of a tree with long, mixed-case, lower-case 8.3 and non-ASCII names,
//!   nested folders, an empty file, a multi-cluster file, a folder of 300 long names (a
//!   multi-cluster directory), a read-only file (`mattrib +r`) and a fragmented file (three
//!   files copied, the middle one deleted, a larger one copied into the hole: `mshowfat`
//!   must show it in more than one run). The paths listed are exactly `mdir -/ -b`'s, each
//!   file's bytes are `mtype`'s and the tree's, and sizes, times (set on the tree, kept by
//!   `mcopy -m`), modes (0755, 0555 read-only) and refusals are as the Linux driver shows.
//! - fat_chain_loops_fail_without_hanging: a FAT16 image whose FAT is edited with `dd`
//!   (both copies) so that a file's chain loops back to its start, a multi-cluster
//!   directory's chain loops, and a file's chain points to cluster 1; `fsck.fat -n` must
//!   call it corrupt. Each damaged file or folder fails with an error in bounded time,
//!   and the undamaged ones still read (nothing panicked).
//! - probe_claims_fat_only: zeros, an NTFS image (`mkntfs`), an ISO 9660 image
//!   (`xorriso`), an exFAT boot sector and FAT boot sectors with impossible fields are
//!   not opened as FAT.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::guest_fs::{components, image_source, open_image, read_all, walk};
use common::*;
use ovafs::error::Refusal;
use ovafs::guest::{self, EntryKind};

/// Files of the tree: path, bytes (the fragmented file and the many-entry folder are
/// added apart).
fn tree_files() -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng::new(12);
    let mut big = vec![0u8; 100_000];
    rng.fill(&mut big);
    vec![
        (
            "A long file name with spaces.txt".into(),
            b"long name\n".to_vec(),
        ),
        ("MixedCase.Txt".into(), b"mixed\n".to_vec()),
        ("short.txt".into(), b"lower-case 8.3\n".to_vec()),
        ("UPPER.TXT".into(), b"upper-case 8.3\n".to_vec()),
        ("empty".into(), Vec::new()),
        ("big.bin".into(), big),
        ("ünïcödé näme.txt".into(), "non-ASCII\n".as_bytes().to_vec()),
        ("readonly.txt".into(), b"read-only\n".to_vec()),
        (
            "dir1/nested dir/deeper/file in deep.bin".into(),
            b"deep\n".to_vec(),
        ),
        ("dir1/second.dat".into(), vec![7u8; 3000]),
    ]
}

/// The time given to every file of the tree (even seconds: FAT keeps two-second steps).
fn mtime_of(i: usize) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000 + 86_400 * 37 * i as u64)
}

/// An mtools command on `image`, with the checks mtools makes of a partition off and
/// times in UTC.
fn mtools(name: &str, image: &Path) -> Command {
    let mut c = Command::new(tool(name));
    c.env("MTOOLS_SKIP_CHECK", "1")
        .env("TZ", "UTC")
        .arg("-i")
        .arg(image);
    c
}

/// Builds a FAT image of type `bits` holding the tree; returns the tree's files (path →
/// bytes, the fragmented one included) and the folder of many names.
fn build(
    dir: &Path,
    bits: u32,
    kib: u32,
    sectors_per_cluster: u32,
) -> (std::path::PathBuf, BTreeMap<String, Vec<u8>>) {
    let image = dir.join(format!("fat{bits}.img"));
    run_ok(
        Command::new(tool("mkfs.vfat"))
            .args([
                "-C",
                "-F",
                &bits.to_string(),
                "-s",
                &sectors_per_cluster.to_string(),
                "-S",
                "512",
            ])
            .arg(&image)
            .arg(kib.to_string()),
    );
    let tree = dir.join(format!("tree{bits}"));
    let mut files = BTreeMap::new();
    for (i, (path, bytes)) in tree_files().into_iter().enumerate() {
        let p = tree.join(&path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &bytes).unwrap();
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(mtime_of(i))
            .unwrap();
        files.insert(format!("/{path}"), bytes);
    }
    for i in 0..300 {
        let path = format!("many/a rather long file name number {i:03}.txt");
        let p = tree.join(&path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, format!("{i}\n")).unwrap();
        files.insert(format!("/{path}"), format!("{i}\n").into_bytes());
    }
    let names: Vec<_> = fs::read_dir(&tree)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    run_ok(
        mtools("mcopy", &image)
            .args(["-s", "-m"])
            .args(&names)
            .arg("::/"),
    );
    run_ok(mtools("mattrib", &image).args(["+r", "::/readonly.txt"]));
    // Fragmentation: a hole left between two files, then a file larger than the hole.
    let cluster = 512 * sectors_per_cluster as usize;
    for (name, len) in [
        ("pad1", 3 * cluster),
        ("hole", 2 * cluster),
        ("pad2", cluster),
    ] {
        let p = dir.join(name);
        fs::write(&p, vec![name.len() as u8; len]).unwrap();
        run_ok(mtools("mcopy", &image).arg(&p).arg(format!("::/{name}")));
        files.insert(format!("/{name}"), vec![name.len() as u8; len]);
    }
    run_ok(mtools("mdel", &image).arg("::/hole"));
    files.remove("/hole");
    if bits == 32 {
        // mtools allocates from FSInfo's next-free hint, past the hole: make it unknown.
        let boot = fs::read(&image).unwrap();
        let fs_info = u64::from(u16::from_le_bytes([boot[48], boot[49]]));
        dd(&image, fs_info * 512 + 492, &[0xFF; 4]);
    }
    let mut frag = vec![0u8; 5 * cluster + 123];
    Rng::new(u64::from(bits)).fill(&mut frag);
    fs::write(dir.join("frag.bin"), &frag).unwrap();
    run_ok(
        mtools("mcopy", &image)
            .arg(dir.join("frag.bin"))
            .arg("::/frag.bin"),
    );
    files.insert("/frag.bin".into(), frag);
    let runs = clusters_of(&image, "::/frag.bin");
    assert!(runs.len() > 1, "frag.bin is not fragmented: {runs:?}");
    (image, files)
}

/// The runs of clusters `mshowfat` gives for `path` (`<3-5> <9-12>`).
fn clusters_of(image: &Path, path: &str) -> Vec<(u32, u32)> {
    let out = run_ok(mtools("mshowfat", image).arg(path));
    let text = String::from_utf8(out.stdout).unwrap();
    let list = text.split_once(' ').map(|(_, r)| r).unwrap_or("");
    list.split_whitespace()
        .map(|r| {
            let r = r.trim_matches(|c| c == '<' || c == '>');
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// Every path of the image as `mdir -/ -b` lists it, folders ending in `/`.
fn mdir_paths(image: &Path) -> Vec<String> {
    let out = run_ok(mtools("mdir", image).args(["-/", "-b", "::/"]));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.strip_prefix("::").unwrap().to_string())
        .collect()
}

/// The whole check of one image against mtools and the tree.
fn matches_mtools(bits: u32, kib: u32, sectors_per_cluster: u32) {
    let dir = tempdir();
    let (image, files) = build(dir.path(), bits, kib, sectors_per_cluster);
    let fs = open_image(&image, "vfat");
    assert_eq!(fs.type_name(), "vfat");
    let listed = walk(&*fs);

    let mut ours: Vec<String> = listed
        .iter()
        .map(|(p, s)| {
            if s.kind == EntryKind::Dir {
                format!("{p}/")
            } else {
                p.clone()
            }
        })
        .collect();
    let mut theirs = mdir_paths(&image);
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);

    for (path, stat) in &listed {
        if stat.kind != EntryKind::File {
            assert_eq!(stat.mode, 0o755, "{path}");
            continue;
        }
        let data = read_all(&*fs, path);
        let typed = run_ok(mtools("mtype", &image).arg(format!("::{path}"))).stdout;
        assert!(data == typed, "{path}: bytes differ from mtype's");
        assert!(
            Some(&data) == files.get(path),
            "{path}: bytes differ from the tree's"
        );
        let mode = if path == "/readonly.txt" {
            0o555
        } else {
            0o755
        };
        assert_eq!(
            (stat.mode, stat.uid, stat.gid, stat.nlink),
            (mode, 0, 0, 1),
            "{path}"
        );
    }
    assert_eq!(
        listed.len(),
        files.len() + 4,
        "the files and the folders dir1, nested dir, deeper, many"
    );

    for (i, (path, _)) in tree_files().iter().enumerate() {
        let stat = fs.stat(&components(path)).unwrap();
        assert_eq!(stat.mtime, mtime_of(i), "{path}");
    }
    let root = fs.stat(&[]).unwrap();
    assert_eq!((root.kind, root.mode), (EntryKind::Dir, 0o755));
    let many = fs.stat(&components("/many")).unwrap();
    assert!(
        many.size > 512 * u64::from(sectors_per_cluster),
        "/many fits one cluster: {}",
        many.size
    );

    let refusal = |r: ovafs::error::Result<_>| r.err().and_then(|e| e.refusal());
    assert_eq!(
        refusal(fs.stat(&components("/missing")).map(|_| ())),
        Some(Refusal::NotFound)
    );
    assert_eq!(
        refusal(fs.stat(&components("/big.bin/x")).map(|_| ())),
        Some(Refusal::NotAFolder)
    );
    assert_eq!(
        refusal(fs.stat(&components("/BIG.BIN")).map(|_| ())),
        Some(Refusal::NotFound),
        "names match exactly"
    );
    assert_eq!(
        refusal(fs.read_dir(&components("/big.bin")).map(|_| ())),
        Some(Refusal::NotAFolder)
    );
    assert_eq!(
        refusal(fs.read(&components("/dir1"), 0, &mut [0; 4]).map(|_| ())),
        Some(Refusal::IsAFolder)
    );
    assert_eq!(
        refusal(fs.read_link(&components("/big.bin")).map(|_| ())),
        Some(Refusal::InvalidArgument)
    );
}

#[test]
fn fat12_matches_mtools() {
    matches_mtools(12, 2000, 1);
}

#[test]
fn fat16_matches_mtools() {
    matches_mtools(16, 16 * 1024, 4);
}

#[test]
fn fat32_matches_mtools() {
    matches_mtools(32, 40 * 1024, 1);
}

/// Writes `bytes` at `offset` of `image` with `dd` (the image is not truncated).
fn dd(image: &Path, offset: u64, bytes: &[u8]) {
    let patch = image.with_extension("patch");
    fs::write(&patch, bytes).unwrap();
    run_ok(
        Command::new(tool("dd"))
            .arg(format!("if={}", patch.display()))
            .arg(format!("of={}", image.display()))
            .args([
                "bs=1",
                &format!("seek={offset}"),
                "conv=notrunc",
                "status=none",
            ]),
    );
}

/// Sets the FAT16 entry of `cluster` to `value` in both FATs of `image`.
fn set_fat16(image: &Path, cluster: u32, value: u16) {
    let boot = fs::read(image).unwrap();
    let le16 = |at: usize| u64::from(u16::from_le_bytes([boot[at], boot[at + 1]]));
    let (sector, reserved, fats, per_fat) = (le16(11), le16(14), u64::from(boot[16]), le16(22));
    for copy in 0..fats {
        let at = (reserved + copy * per_fat) * sector + 2 * u64::from(cluster);
        dd(image, at, &value.to_le_bytes());
    }
}

/// `f` fails, and does so within seconds.
fn fails_quickly<T: std::fmt::Debug>(what: &str, f: impl FnOnce() -> ovafs::error::Result<T>) {
    let start = Instant::now();
    let r = f();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{what}: took {:?}",
        start.elapsed()
    );
    let e = r.expect_err(what);
    assert!(
        e.refusal().is_none(),
        "{what}: a corrupt chain is not a refusal: {e}"
    );
    eprintln!("{what}: {e}");
}

#[test]
fn fat_chain_loops_fail_without_hanging() {
    let dir = tempdir();
    let (image, files) = build(dir.path(), 16, 8 * 1024, 1);
    let big = clusters_of(&image, "::/big.bin");
    let many = clusters_of(&image, "::/many");
    let second = clusters_of(&image, "::/dir1/second.dat");
    assert!(big.len() == 1 && big[0].1 > big[0].0, "{big:?}");
    let many_last = many.last().unwrap().1;
    assert!(many_last > many[0].0, "/many spans one cluster: {many:?}");
    // The file's last cluster leads back to its first; the folder's likewise; the other
    // file's first cluster leads to cluster 1.
    set_fat16(&image, big[0].1, big[0].0 as u16);
    set_fat16(&image, many_last, many[0].0 as u16);
    set_fat16(&image, second[0].0, 1);
    let fsck = Command::new(tool("fsck.fat"))
        .arg("-n")
        .arg(&image)
        .output()
        .unwrap();
    assert!(!fsck.status.success(), "fsck.fat finds nothing wrong");

    let fs = open_image(&image, "vfat");
    let mut buf = vec![0u8; 4096];
    fails_quickly("read of a looping file", || {
        fs.read(&components("/big.bin"), 0, &mut buf)
    });
    fails_quickly("listing of a looping folder", || {
        fs.read_dir(&components("/many"))
    });
    fails_quickly("stat in a looping folder", || {
        fs.stat(&components("/many/a rather long file name number 000.txt"))
    });
    fails_quickly("stat of a looping folder", || fs.stat(&components("/many")));
    fails_quickly("read of a chain to cluster 1", || {
        fs.read(&components("/dir1/second.dat"), 0, &mut buf)
    });
    // The rest still reads: nothing panicked.
    for path in [
        "/short.txt",
        "/frag.bin",
        "/dir1/nested dir/deeper/file in deep.bin",
    ] {
        assert!(read_all(&*fs, path) == files[path], "{path}");
    }
}

/// A FAT16 boot sector made by mkfs.vfat, for forging.
fn fat16_boot(dir: &Path) -> Vec<u8> {
    let image = dir.join("forge.img");
    run_ok(
        Command::new(tool("mkfs.vfat"))
            .args(["-C", "-F", "16", "-s", "1"])
            .arg(&image)
            .arg("8192"),
    );
    fs::read(&image).unwrap()
}

#[test]
fn probe_claims_fat_only() {
    let dir = tempdir();
    let zeros: Vec<u8> = vec![0; 1 << 20];
    assert_eq!(guest::probe(&zeros), None);

    let ntfs = dir.path().join("ntfs.img");
    fs::write(&ntfs, vec![0u8; 16 << 20]).unwrap();
    run_ok(
        Command::new(tool("mkntfs"))
            .args(["-F", "-f", "-q"])
            .arg(&ntfs),
    );
    assert_ne!(guest::probe(&*image_source(&ntfs)), Some("vfat"));

    let iso_dir = dir.path().join("iso");
    fs::create_dir(&iso_dir).unwrap();
    fs::write(iso_dir.join("a.txt"), b"a").unwrap();
    let iso = dir.path().join("a.iso");
    run_ok(
        Command::new(tool("xorriso"))
            .args(["-as", "mkisofs", "-quiet", "-o"])
            .arg(&iso)
            .arg(&iso_dir),
    );
    assert_ne!(guest::probe(&*image_source(&iso)), Some("vfat"));

    let good = fat16_boot(dir.path());
    assert_eq!(guest::probe(&good), Some("vfat"));
    let mut exfat = good.clone();
    exfat[3..11].copy_from_slice(b"EXFAT   ");
    exfat[11..64].fill(0);
    assert_eq!(guest::probe(&exfat), None);
    // Impossible fields: sector size 0, no FAT, a FAT too small for the clusters, the
    // count of FATs times their size past the volume, no type label.
    let forged: [(usize, &[u8]); 5] = [
        (11, &[0, 0]),
        (16, &[0]),
        (22, &[1, 0]),
        (22, &[0xFF, 0xFF]),
        (54, b"XYZ"),
    ];
    for (at, bytes) in forged {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        assert_eq!(guest::probe(&b), None, "field at {at}");
        let source: std::sync::Arc<dyn ovafs::io::ReadAt> = std::sync::Arc::new(b);
        assert!(ovafs::guest::fat::open(source).is_err(), "field at {at}");
    }
    // Cut short: the FAT lies past the end.
    let short: std::sync::Arc<dyn ovafs::io::ReadAt> = std::sync::Arc::new(good[..2048].to_vec());
    assert!(ovafs::guest::fat::open(short).is_err());
}
