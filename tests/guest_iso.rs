//! ISO 9660 images made by xorriso (Rock Ridge + Joliet, Joliet alone, plain ISO 9660) of a
//! tree with long and non-ASCII names, deep folders, symbolic links, modes and owners and a
//! multi-megabyte file, read through `ovafs::guest::open`, and judged by xorriso itself: its
//! `-find / -exec lsdl` listing (kinds, modes, links, owners, sizes, link targets) and the
//! bytes its `-osirrox on -extract` writes. Corrupt images fail with errors, never panic or
//! hang. A file over 4 GiB (three file sections) is read across its section boundaries.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{path_str, run_ok, tool};
use ovafs::guest::{self, EntryKind, GuestFs, GuestStat};
use ovafs::io::{FileSource, ReadAt};

/// A tree of everything the reader must get right.
fn make_tree(root: &Path) {
    let deep = root.join("d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11");
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("deep.txt"), "twelve levels down\n").unwrap();
    let long = format!("{}.txt", "long-name-".repeat(20));
    fs::write(root.join(long), "a name of 204 bytes\n").unwrap();
    fs::write(root.join("héllo wörld.txt"), "non-ASCII\n").unwrap();
    fs::set_permissions(
        root.join("héllo wörld.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::create_dir(root.join("secret")).unwrap();
    fs::write(root.join("secret/setuid"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(
        root.join("secret/setuid"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(root.join("owned"), "by 1234:5678\n").unwrap();
    std::os::unix::fs::chown(root.join("owned"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::symlink("d1/d2", root.join("rel")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("abs")).unwrap();
    std::os::unix::fs::symlink("../nowhere/./x", root.join("d1/dangling")).unwrap();
    fs::write(root.join("empty"), "").unwrap();
    let mut big = vec![0u8; (5 << 20) + 123];
    common::Rng::new(7).fill(&mut big);
    fs::write(root.join("big.bin"), big).unwrap();
    // Many entries: the directory spans several blocks.
    fs::create_dir(root.join("many")).unwrap();
    for i in 0..300 {
        fs::write(root.join(format!("many/file-{i:03}")), format!("{i}\n")).unwrap();
    }
}

/// `xorriso ARGS` under a time limit; its output.
fn xorriso(args: &[&str]) -> String {
    let out = run_ok(
        Command::new("timeout")
            .arg("300")
            .arg(tool("xorriso"))
            .args(args),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `tree` into `iso` with the xorriso naming options `how`.
fn make_iso(tree: &Path, iso: &Path, how: &[&str]) {
    let mut args: Vec<&str> = how.to_vec();
    args.extend(["-outdev", path_str(iso), "-map", path_str(tree), "/"]);
    xorriso(&args);
}

/// What xorriso's `lsdl` says of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    perms: String,
    nlink: u32,
    uid: u32,
    gid: u32,
    /// For files only (xorriso shows 0 for folders and links).
    size: Option<u64>,
    target: Option<String>,
}

/// xorriso's `-find / -exec lsdl` of `iso`, by path.
fn xorriso_listing(iso: &Path) -> BTreeMap<String, Listed> {
    let out = xorriso(&["-indev", path_str(iso), "-find", "/", "-exec", "lsdl"]);
    let mut map = BTreeMap::new();
    for line in out.lines().filter(|l| l.ends_with('\'')) {
        // "drwxr-xr-x    1 0        0               0 Dec  3 14:13 '/d1' -> 'target'"
        let quote = line.find('\'').unwrap();
        let fields: Vec<&str> = line[..quote].split_whitespace().collect();
        let quoted: Vec<&str> = line[quote..].split(" -> ").collect();
        let unquote = |s: &str| s.trim_matches('\'').to_string();
        let perms = fields[0].to_string();
        let is_file = perms.starts_with('-');
        map.insert(
            unquote(quoted[0]),
            Listed {
                nlink: fields[1].parse().unwrap(),
                uid: fields[2].parse().unwrap(),
                gid: fields[3].parse().unwrap(),
                size: is_file.then(|| fields[4].parse().unwrap()),
                target: quoted.get(1).map(|t| unquote(t)),
                perms,
            },
        );
    }
    assert!(map.contains_key("/"), "xorriso listed nothing: {out}");
    map
}

/// `ls -l` permissions of a kind and mode.
fn perms(kind: EntryKind, mode: u32) -> String {
    let mut s = String::from(match kind {
        EntryKind::Dir => 'd',
        EntryKind::File => '-',
        EntryKind::Symlink => 'l',
        EntryKind::Other => '?',
    });
    for (shift, special, lower, upper) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => lower,
            (false, true) => upper,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// Every path of `fs` with its stat (and link target), walked with `read_dir` from the root.
fn walk(fs: &dyn GuestFs) -> BTreeMap<String, (GuestStat, Option<String>)> {
    let mut out = BTreeMap::new();
    let mut todo: Vec<Vec<Vec<u8>>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        let stat = fs.stat(&path).unwrap();
        let shown = format!(
            "/{}",
            path.iter()
                .map(|c| String::from_utf8(c.clone()).unwrap())
                .collect::<Vec<_>>()
                .join("/")
        );
        let target = (stat.kind == EntryKind::Symlink)
            .then(|| String::from_utf8(fs.read_link(&path).unwrap()).unwrap());
        if stat.kind == EntryKind::Dir {
            for e in fs.read_dir(&path).unwrap() {
                let mut child = path.clone();
                child.push(e.name);
                let kind = fs.stat(&child).unwrap().kind;
                assert_eq!(kind, e.kind, "{shown}: read_dir and stat disagree");
                todo.push(child);
            }
        }
        out.insert(shown, (stat, target));
    }
    out
}

/// The whole of regular file `path` of `fs`, read in pieces of `piece` bytes.
fn read_all(fs: &dyn GuestFs, path: &[Vec<u8>], piece: usize) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = vec![0u8; piece];
    loop {
        let n = fs.read(path, data.len() as u64, &mut buf).unwrap();
        if n == 0 {
            return data;
        }
        assert!(
            n == piece || fs.read(path, (data.len() + n) as u64, &mut buf).unwrap() == 0,
            "short read before the end"
        );
        data.extend_from_slice(&buf[..n]);
    }
}

fn components(path: &str) -> Vec<Vec<u8>> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(|c| c.as_bytes().to_vec())
        .collect()
}

fn open_iso(iso: &Path) -> Arc<dyn GuestFs> {
    let source: Arc<dyn ReadAt> = Arc::new(FileSource::open(iso).unwrap());
    assert_eq!(guest::probe(&*source), Some("iso9660"));
    let fs = guest::open(source).unwrap().expect("recognised");
    assert_eq!(fs.type_name(), "iso9660");
    fs
}

/// Reads `iso` with ovafs and checks it against xorriso's listing and extraction, and (with
/// `tree`) the modification times against the tree it was made of.
fn check_against_xorriso(
    iso: &Path,
    tree: &Path,
    work: &Path,
) -> BTreeMap<String, (GuestStat, Option<String>)> {
    let fs = open_iso(iso);
    let ours = walk(&*fs);
    let theirs = xorriso_listing(iso);
    let our_paths: Vec<&String> = ours.keys().collect();
    let their_paths: Vec<&String> = theirs.keys().collect();
    assert_eq!(
        our_paths,
        their_paths,
        "{}: the paths differ",
        iso.display()
    );
    for (path, (stat, target)) in &ours {
        let listed = Listed {
            perms: perms(stat.kind, stat.mode),
            nlink: stat.nlink,
            uid: stat.uid,
            gid: stat.gid,
            size: (stat.kind == EntryKind::File).then_some(stat.size),
            target: target.clone(),
        };
        assert_eq!(&listed, &theirs[path], "{}: {path}", iso.display());
        if let Some(t) = target {
            assert_eq!(
                stat.size,
                t.len() as u64,
                "{path}: a link's size is its target's length"
            );
        }
    }
    // The bytes, against xorriso's extraction.
    let out = work.join(format!(
        "{}.extracted",
        iso.file_name().unwrap().to_str().unwrap()
    ));
    xorriso(&[
        "-osirrox",
        "on",
        "-indev",
        path_str(iso),
        "-extract",
        "/",
        path_str(&out),
    ]);
    let mut files = 0;
    for (path, (stat, _)) in &ours {
        if stat.kind != EntryKind::File {
            continue;
        }
        let want = fs::read(out.join(path.trim_start_matches('/'))).unwrap();
        for piece in [4096, 100_000] {
            assert!(
                read_all(&*fs, &components(path), piece) == want,
                "{path}: bytes differ"
            );
        }
        files += 1;
    }
    assert!(files > 300, "only {files} files compared");
    // Modification times, to the second, against the tree (the root's is the image's).
    let mut timed = 0;
    for (path, (stat, _)) in ours.iter().filter(|(p, _)| p.as_str() != "/") {
        if let Ok(meta) = fs::symlink_metadata(tree.join(path.trim_start_matches('/'))) {
            let want = SystemTime::UNIX_EPOCH + Duration::from_secs(meta.mtime() as u64);
            let got = stat
                .mtime
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert_eq!(
                got,
                want.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs(),
                "{path}: mtime"
            );
            timed += 1;
        }
    }
    assert!(
        timed > 0 || !ours.contains_key("/d1"),
        "no modification time compared"
    );
    ours
}

/// A directory with a long name, made once.
struct Images {
    _dir: tempfile::TempDir,
    tree: std::path::PathBuf,
    work: std::path::PathBuf,
}

fn images() -> Images {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    make_tree(&tree);
    let work = dir.path().join("work");
    fs::create_dir(&work).unwrap();
    Images {
        tree,
        work,
        _dir: dir,
    }
}

#[test]
fn rock_ridge_and_joliet_read_as_rock_ridge() {
    let im = images();
    let iso = im.work.join("rr.iso");
    // What the brief names: mkisofs's -R -J (Rock Ridge with owners and modes kept).
    run_ok(
        Command::new(tool("xorriso"))
            .args(["-as", "mkisofs", "-R", "-J", "-joliet-long", "-quiet", "-o"])
            .arg(&iso)
            .arg(&im.tree),
    );
    let ours = check_against_xorriso(&iso, &im.tree, &im.work);
    let long = format!("/{}.txt", "long-name-".repeat(20));
    let (s, _) = &ours[&long];
    assert_eq!(s.size, 20);
    assert_eq!(ours["/héllo wörld.txt"].0.mode, 0o600);
    assert_eq!(ours["/secret"].0.mode, 0o750);
    assert_eq!(ours["/secret/setuid"].0.mode, 0o4755);
    assert_eq!((ours["/owned"].0.uid, ours["/owned"].0.gid), (1234, 5678));
    assert_eq!(ours["/rel"].1.as_deref(), Some("d1/d2"));
    assert_eq!(ours["/d1/dangling"].1.as_deref(), Some("../nowhere/./x"));
    assert_eq!(ours["/big.bin"].0.size, (5 << 20) + 123);
    assert!(ours.contains_key("/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/deep.txt"));
    // Links are not followed: a path through one is not a folder.
    let fs = open_iso(&iso);
    let err = fs.stat(&components("/rel/d3")).unwrap_err();
    assert_eq!(err.refusal(), Some(ovafs::error::Refusal::NotAFolder));
    let err = fs.stat(&components("/nothing")).unwrap_err();
    assert_eq!(err.refusal(), Some(ovafs::error::Refusal::NotFound));
    // A read past the end is empty; one across it is short.
    let mut buf = [0u8; 64];
    assert_eq!(
        fs.read(&components("/big.bin"), 6 << 20, &mut buf).unwrap(),
        0
    );
    assert_eq!(
        fs.read(&components("/big.bin"), (5 << 20) + 100, &mut buf)
            .unwrap(),
        23
    );
}

#[test]
fn joliet_alone_and_plain_iso9660() {
    let im = images();
    let joliet = im.work.join("joliet.iso");
    make_iso(&im.tree, &joliet, &["-rockridge", "off", "-joliet", "on"]);
    let ours = check_against_xorriso(&joliet, &im.tree, &im.work);
    assert!(ours.contains_key("/héllo wörld.txt"), "{:?}", ours.keys());
    assert_eq!(ours["/secret"].0.mode, 0o555);
    assert!(
        ours.values()
            .all(|(s, _)| s.uid == 0 && s.kind != EntryKind::Symlink)
    );

    let plain = im.work.join("plain.iso");
    make_iso(&im.tree, &plain, &["-rockridge", "off", "-joliet", "off"]);
    let fs = open_iso(&plain);
    let ours = walk(&*fs);
    let theirs = xorriso_listing(&plain);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    assert!(ours.contains_key("/D1/D2"), "{:?}", ours.keys());
    for (path, (stat, _)) in &ours {
        assert_eq!(perms(stat.kind, stat.mode), theirs[path].perms, "{path}");
    }
}

/// The byte offset of the record of directory `name` (ISO identifier) in `image`.
fn dir_record(image: &[u8], name: &[u8]) -> usize {
    let mut pattern = vec![1, 0, 0, 1, name.len() as u8];
    pattern.extend_from_slice(name);
    let at = image
        .windows(pattern.len())
        .position(|w| w == pattern.as_slice())
        .expect("record found");
    at + 5 - 33
}

#[test]
fn corrupt_images_fail_without_panic_or_hang() {
    let im = images();
    let iso = im.work.join("rr.iso");
    make_iso(&im.tree, &iso, &["-joliet", "on"]);
    let image = fs::read(&iso).unwrap();

    // A folder whose extent is the root's: walking into it is refused, not a loop.
    let mut cyclic = image.clone();
    let root_lba = &image[32768 + 156 + 2..32768 + 156 + 10].to_vec();
    let d2 = dir_record(&image, b"D2");
    cyclic[d2 + 2..d2 + 10].copy_from_slice(root_lba);
    let fs = guest::open(Arc::new(cyclic) as Arc<dyn ReadAt>)
        .unwrap()
        .unwrap();
    assert!(fs.read_dir(&components("/d1")).is_ok());
    let err = fs.read_dir(&components("/d1/d2")).unwrap_err();
    assert!(err.to_string().contains("contains itself"), "{err}");

    // Truncated: the descriptors survive, the folders past the cut do not.
    let cut = image[..image.len() / 2].to_vec();
    if let Ok(Some(fs)) = guest::open(Arc::new(cut) as Arc<dyn ReadAt>) {
        let _ = bounded_walk(&*fs);
    }

    // Bytes flipped at random in the descriptors and folders: errors, never a panic.
    let seed = common::seed_from_env("OVAFS_ISO_SEED");
    eprintln!("corrupted images from seed {seed} (OVAFS_ISO_SEED={seed} repeats them)");
    let mut rng = common::Rng::new(seed);
    let started = Instant::now();
    let (mut opened, mut failed_somewhere) = (0, 0);
    for _ in 0..300 {
        let mut bad = image.clone();
        for _ in 0..8 {
            let at = 32768 + (rng.next() % 200_000) as usize;
            if let Some(b) = bad.get_mut(at) {
                *b ^= 1 << (rng.next() % 8);
            }
        }
        if let Ok(Some(fs)) = guest::open(Arc::new(bad) as Arc<dyn ReadAt>) {
            opened += 1;
            if bounded_walk(&*fs).is_err() {
                failed_somewhere += 1;
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "corrupt images took {:?}",
        started.elapsed()
    );
    assert!(
        opened > 0 && failed_somewhere > 0,
        "opened {opened}, failed {failed_somewhere}"
    );
}

/// Walks `fs` (at most 10 000 nodes, links read, files read in part); the first error.
fn bounded_walk(fs: &dyn GuestFs) -> ovafs::error::Result<usize> {
    let mut todo: Vec<Vec<Vec<u8>>> = vec![vec![]];
    let mut seen = 0;
    let mut buf = vec![0u8; 8192];
    while let Some(path) = todo.pop() {
        seen += 1;
        if seen > 10_000 {
            break;
        }
        let stat = fs.stat(&path)?;
        match stat.kind {
            EntryKind::Dir => {
                for e in fs.read_dir(&path)? {
                    let mut child = path.clone();
                    child.push(e.name);
                    todo.push(child);
                }
            }
            EntryKind::File => {
                fs.read(&path, 0, &mut buf)?;
                fs.read(&path, stat.size.saturating_sub(100), &mut buf)?;
            }
            EntryKind::Symlink => {
                fs.read_link(&path)?;
            }
            EntryKind::Other => {}
        }
    }
    Ok(seen)
}

/// Heavy (about 90 s and 4.3 GB of temporary disk: xorriso writes every zero of the file), so
/// not in the default suite; `cargo test --test guest_iso -- --ignored` runs it. The joining
/// of sections is also covered by the unit tests of `guest::iso9660`.
#[test]
#[ignore = "heavy: 4.3 GB written by xorriso; run with --ignored"]
fn a_file_over_4_gib_reads_across_its_sections() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    // Sparse, with marks at the start, around each 4 GiB - 2 KiB section end, and the end.
    let size: u64 = (4 << 30) + (300 << 20);
    let file = fs::File::create(tree.join("huge")).unwrap();
    file.set_len(size).unwrap();
    let section = (4u64 << 30) - 2048;
    let marks = [0, section - 5000, section - 3, size - 4096];
    {
        use std::os::unix::fs::FileExt;
        let mut rng = common::Rng::new(11);
        for &at in &marks {
            let mut b = vec![0u8; 10_000.min((size - at) as usize)];
            rng.fill(&mut b);
            file.write_all_at(&b, at).unwrap();
        }
    }
    let iso = dir.path().join("huge.iso");
    run_ok(
        Command::new(tool("xorriso"))
            .args(["-as", "mkisofs", "-R", "-iso-level", "3", "-quiet", "-o"])
            .arg(&iso)
            .arg(&tree),
    );
    drop(file);
    let fs = open_iso(&iso);
    let huge = components("/huge");
    assert_eq!(fs.stat(&huge).unwrap().size, size);
    let listed = xorriso_listing(&iso);
    assert_eq!(listed["/huge"].size, Some(size));
    let source = fs::File::open(tree.join("huge")).unwrap();
    for &at in &marks {
        use std::os::unix::fs::FileExt;
        let len = 10_000.min((size - at) as usize);
        let mut want = vec![0u8; len];
        source.read_exact_at(&mut want, at).unwrap();
        let mut got = vec![0u8; len];
        assert_eq!(fs.read(&huge, at, &mut got).unwrap(), len, "at {at}");
        assert!(got == want, "bytes at {at} differ");
    }
}

#[test]
fn relocated_deep_folders_are_where_rock_ridge_puts_them() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let deep = tree.join("a/b/c/d/e/f/g/h/i/j");
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("f.txt"), "relocated\n").unwrap();
    let iso = dir.path().join("reloc.iso");
    // ISO 9660 folders deeper than 8 levels moved to rr_moved, with CL/PL/RE entries.
    make_iso(
        &tree,
        &iso,
        &["-compliance", "deep_paths_off", "-rr_reloc_dir", "rr_moved"],
    );
    let image = fs::read(&iso).unwrap();
    assert!(
        image.windows(4).any(|w| w == b"CL\x0c\x01") && image.windows(8).any(|w| w == b"RR_MOVED"),
        "xorriso relocated nothing"
    );
    let fs = open_iso(&iso);
    let ours = walk(&*fs);
    // libisofs marks the relocation folder itself RE too: hidden, as Linux and xorriso
    // hide it.
    assert!(!ours.contains_key("/rr_moved"), "{:?}", ours.keys());
    let theirs = xorriso_listing(&iso);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    let f = components("/a/b/c/d/e/f/g/h/i/j/f.txt");
    assert_eq!(read_all(&*fs, &f, 4096), b"relocated\n");
}
