//! ext2, ext3 and ext4 read by ovafs (`ovafs::guest::ext4`), judged by e2fsprogs: images
//! made by `mkfs.ext4 -d` / `mkfs.ext3 -d` / `mkfs.ext2 -d` from one staged tree (and
//! `e2fsck -fyD`, which indexes the large directory as an htree), then every directory
//! listing, every inode's kind, size, mode, owner, link count and mtime, every file's bytes
//! and every link's target compared with what `debugfs` says (`ls -p`, `stat`, `rdump`).
//!
//! Contents:
//! - ext4_4k_metadata_csum / ext4_1k_without_metadata_csum / ext3_block_maps /
//!   ext2_block_maps_1k: the whole tree of each kind of image (extents or block maps up
//!   to triple indirect and holes over indirect blocks, htree, 64-bit, checksums or none,
//!   journal or none).
//! - ext2_without_filetype: directory entries without a type byte (kinds from the inodes).
//! - ext4_meta_bg_many_groups: `meta_bg` with 96 groups (descriptors in three places).
//! - inline_data_files_and_directories: `-O inline_data`: files and directories stored in
//!   their inodes (`i_block` and the `system.data` attribute) read as debugfs reads them.
//! - unwritten_extents_read_as_zeros: preallocated blocks (debugfs `fallocate`) that hold
//!   other bytes on the disk read as zeros, and the file's later blocks stay in place.
//! - a_corrupt_inode_fails_its_file_only / a_corrupt_directory_block_fails_its_directory:
//!   bytes flipped in one inode or one directory block: errors there, the rest still read.
//! - random_corruption_never_panics: bytes flipped at random in the metadata; every call
//!   returns (an error or not), nothing panics.
//! - two_readers_read_in_parallel: two threads reading two files at once get their bytes.
//! - read_speed (ignored; `--ignored --nocapture`): MB/s reading a 200 MB file.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::ext4::{Debugfs, debugfs_batch, debugfs_r, host_path, join, rdump, sbin};
use common::{Rng, run_ok, tempdir};
use ovafs::guest::{self, EntryKind, GuestFs};
use ovafs::io::FileSource;

/// What a file-system copy reads at a time (FUSE's largest read).
const CHUNK: usize = 128 * 1024;
/// Entries of the directory that e2fsck turns into an htree.
const HTREE_ENTRIES: usize = 2100;

/// Writes the staged tree into `dir`: files of awkward sizes, sparse files (one reaching
/// past 64 MiB: triple indirect with 1 KiB blocks), hard links, fast and slow links, odd
/// modes, owners above 65535, set mtimes, odd names, a FIFO and a large directory.
fn stage(dir: &Path) {
    let mut rng = Rng::new(12);
    let mut data = |n: usize| {
        let mut v = vec![0u8; n];
        rng.fill(&mut v);
        v
    };
    let w = |p: &str, bytes: &[u8]| {
        let p = dir.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    };
    for (name, len) in [
        ("empty", 0),
        ("one", 1),
        ("sixty", 60),
        ("block", 4096),
        ("block_plus", 4097),
        ("k1_minus", 1023),
        ("medium", 300 * 1024 + 7),
        ("big", 5 * 1024 * 1024 + 123),
    ] {
        w(name, &data(len));
    }
    // Sparse: a hole first, data in the middle, data at the end (mke2fs -d keeps holes).
    let sparse = dir.join("sparse");
    let f = fs::File::create(&sparse).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&data(5000), 3 << 20).unwrap();
    f.write_all_at(b"end", (8 << 20) - 3).unwrap();
    // One byte every 8 KiB: 400 extents, an extent tree of depth 1 or 2 (its blocks checksummed
    // with metadata_csum).
    let f = fs::File::create(dir.join("fragmented")).unwrap();
    for i in 0..400u64 {
        f.write_all_at(&[i as u8 | 1], i * 8192).unwrap();
    }
    let f = fs::File::create(dir.join("sparse_far")).unwrap();
    f.write_all_at(b"far away", 70 << 20).unwrap();
    drop(f);

    w("links/a", b"linked three times\n");
    fs::create_dir_all(dir.join("other")).unwrap();
    fs::hard_link(dir.join("links/a"), dir.join("links/b")).unwrap();
    fs::hard_link(dir.join("links/a"), dir.join("other/c")).unwrap();

    std::os::unix::fs::symlink("sixty", dir.join("fast")).unwrap();
    std::os::unix::fs::symlink("../links/a", dir.join("other/up")).unwrap();
    let long: String = (0..200).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    std::os::unix::fs::symlink(&long, dir.join("slow")).unwrap();
    // Below 1 KiB: a link target must fit in one block.
    let longest = "d/".repeat(500);
    std::os::unix::fs::symlink(&longest, dir.join("slowest")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", dir.join("dangling")).unwrap();

    for (name, mode) in [
        ("setuid", 0o4755),
        ("setgid", 0o2711),
        ("private", 0o600),
        ("nothing", 0o000),
    ] {
        w(name, name.as_bytes());
        fs::set_permissions(dir.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::create_dir(dir.join("sticky")).unwrap();
    fs::set_permissions(dir.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();

    // Owners (mke2fs -d copies them): ids above 65535 use the inode's high 16 bits.
    w("owned/high", b"uid 70000\n");
    w("owned/low", b"uid 1000\n");
    chown(&dir.join("owned/high"), 70000, 80001);
    chown(&dir.join("owned/low"), 1000, 1001);
    chown(&dir.join("owned"), 65536, 131072);

    w("names/with space", b"s");
    w(&"n".repeat(255), b"longest name");
    fs::write(
        dir.join(std::ffi::OsStr::from_bytes(b"names/caf\xe9")),
        b"latin-1",
    )
    .unwrap();

    run_ok(Command::new("mkfifo").arg(dir.join("fifo")));

    fs::create_dir(dir.join("htree")).unwrap();
    for i in 0..HTREE_ENTRIES {
        fs::write(dir.join(format!("htree/entry-{i:05}")), format!("{i}\n")).unwrap();
    }

    // Distinct mtimes (mke2fs -d keeps whole seconds).
    for (k, name) in ["one", "big", "links/a", "setuid", "htree", "owned"]
        .iter()
        .enumerate()
    {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000 + 86_400 * k as u64);
        fs::File::open(dir.join(name))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}

/// `chown` (the tests run as root, like CI; anything else fails here, loudly).
fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} (the tests run as root): {e}", p.display()));
}

/// Makes `image` with `mkfs` (`mkfs.ext4`, `mkfs.ext3` or `mkfs.ext2`) and `args` from the
/// staged tree, then indexes its large directories (`e2fsck -fyD`).
fn make_image(mkfs: &str, args: &[&str], image: &Path) {
    let staged = tempdir();
    stage(staged.path());
    run_ok(
        Command::new(sbin(mkfs))
            .args(["-q", "-F", "-N", "4096"])
            .args(args)
            .arg("-d")
            .arg(staged.path())
            .arg(image)
            .arg("96M"),
    );
    let status = Command::new(sbin("e2fsck"))
        .args(["-f", "-y", "-D"])
        .arg(image)
        .output()
        .unwrap();
    // 0: clean; 1: directories were optimised (what -D is for).
    assert!(
        matches!(status.status.code(), Some(0 | 1)),
        "e2fsck: {}",
        String::from_utf8_lossy(&status.stdout)
    );
}

/// Opens the file system in `image` through a file `ReadAt`.
fn open(image: &Path) -> Arc<dyn GuestFs> {
    let source = Arc::new(FileSource::open(image).unwrap());
    guest::open(source)
        .unwrap()
        .expect("an ext2/3/4 file system")
}

/// The interface's path of absolute `abs`.
fn components(abs: &[u8]) -> Vec<Vec<u8>> {
    abs.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The kind debugfs's `st_mode` says.
fn kind_of(mode: u32) -> EntryKind {
    match mode & 0o170000 {
        0o100000 => EntryKind::File,
        0o040000 => EntryKind::Dir,
        0o120000 => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

/// Reads all of `path` in [`CHUNK`] pieces, as a copy does.
fn read_all(fs: &dyn GuestFs, path: &[Vec<u8>], size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size as usize);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = fs.read(path, out.len() as u64, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Compares everything `fs` says of `image` with what debugfs says; returns how many entries
/// were compared.
fn compare(fs: &dyn GuestFs, image: &Path) -> usize {
    let judge = Debugfs::tree(image);
    let out = tempdir();
    rdump(image, out.path());
    let root = fs.stat(&[]).unwrap();
    assert_eq!(root.kind, EntryKind::Dir);
    assert_eq!(root.mode, judge.inodes[&2].mode);
    assert_eq!(u64::from(root.nlink), u64::from(judge.inodes[&2].links));
    let mut compared = 0;
    for (dir, entries) in &judge.dirs {
        let dir_path = components(dir);
        let listed = fs.read_dir(&dir_path).unwrap();
        let ours: BTreeSet<(Vec<u8>, String)> = listed
            .into_iter()
            .map(|e| (e.name, format!("{:?}", e.kind)))
            .collect();
        let theirs: BTreeSet<(Vec<u8>, String)> = entries
            .iter()
            .map(|(n, e)| (n.clone(), format!("{:?}", kind_of(e.mode))))
            .collect();
        assert_eq!(ours, theirs, "listing of {}", String::from_utf8_lossy(dir));
        for (name, listed) in entries {
            let abs = join(dir, name);
            let shown = String::from_utf8_lossy(&abs).into_owned();
            let path = components(&abs);
            let info = &judge.inodes[&listed.ino];
            let st = fs
                .stat(&path)
                .unwrap_or_else(|e| panic!("stat {shown}: {e}"));
            assert_eq!(st.kind, kind_of(listed.mode), "{shown}");
            assert_eq!(st.mode, info.mode, "mode of {shown}");
            assert_eq!((st.uid, st.gid), (info.uid, info.gid), "owner of {shown}");
            assert_eq!(st.size, info.size, "size of {shown}");
            assert_eq!(st.nlink, info.links, "links of {shown}");
            let mtime = st.mtime.duration_since(SystemTime::UNIX_EPOCH).unwrap();
            assert_eq!(
                (mtime.as_secs() as i64, mtime.subsec_nanos()),
                (info.mtime, info.mtime_nsec),
                "mtime of {shown}"
            );
            match st.kind {
                EntryKind::File => {
                    let mut want = fs::read(host_path(out.path(), &abs)).unwrap();
                    // debugfs 1.47 dumps an inline-data file as at least i_block's 60 bytes
                    // (zeros past its size): cut its padding, nothing else.
                    if info.flags & 0x1000_0000 != 0 && want.len() as u64 > info.size {
                        assert_eq!(want.len(), 60, "debugfs dump of inline {shown}");
                        assert!(want[info.size as usize..].iter().all(|&b| b == 0));
                        want.truncate(info.size as usize);
                    }
                    let got = read_all(fs, &path, st.size);
                    assert!(got == want, "bytes of {shown} differ from debugfs rdump");
                    spot_reads(fs, &path, &want);
                }
                EntryKind::Symlink => {
                    let want = match judge.fast_links.get(&listed.ino) {
                        Some(t) => t.clone(),
                        None => fs::read_link(host_path(out.path(), &abs))
                            .unwrap()
                            .as_os_str()
                            .as_bytes()
                            .to_vec(),
                    };
                    assert_eq!(fs.read_link(&path).unwrap(), want, "target of {shown}");
                    assert!(
                        fs.read(&path, 0, &mut [0u8; 8]).is_err(),
                        "read of link {shown}"
                    );
                }
                EntryKind::Dir => {
                    assert!(
                        fs.read(&path, 0, &mut [0u8; 8]).is_err(),
                        "read of dir {shown}"
                    );
                }
                EntryKind::Other => {}
            }
            compared += 1;
        }
    }
    compared
}

/// Reads a few pieces of a file out of order (each a seek, or another open file of the same
/// path continuing) and checks them against `want`.
fn spot_reads(fs: &dyn GuestFs, path: &[Vec<u8>], want: &[u8]) {
    if want.len() < 3 {
        return;
    }
    let len = want.len() as u64;
    for (offset, n) in [
        (len / 2, 5000),
        (1, 3),
        (len - 1, 10),
        (len / 3, 70000),
        (len, 4),
    ] {
        let mut buf = vec![0u8; n];
        let got = fs.read(path, offset, &mut buf).unwrap();
        let end = (offset as usize + n).min(want.len());
        assert_eq!(&buf[..got], &want[offset as usize..end], "read at {offset}");
    }
}

/// Checks what each image must hold for the comparison to have tested anything: the large
/// directory is an htree, the triple-linked file has three links, owners above 65535 came
/// through, the far sparse file is there.
fn sanity(fs: &dyn GuestFs, image: &Path, compared: usize) {
    assert!(
        compared > HTREE_ENTRIES + 30,
        "compared only {compared} entries"
    );
    let judge = Debugfs::tree(image);
    let htree = judge.dirs[&b"/".to_vec()][&b"htree".to_vec()].ino;
    assert_ne!(
        judge.inodes[&htree].flags & 0x1000,
        0,
        "/htree is not an htree"
    );
    let p = |s: &str| components(s.as_bytes());
    assert_eq!(fs.stat(&p("links/a")).unwrap().nlink, 3);
    assert_eq!(fs.stat(&p("owned/high")).unwrap().uid, 70000);
    assert_eq!(fs.stat(&p("owned/high")).unwrap().gid, 80001);
    assert_eq!(fs.stat(&p("setuid")).unwrap().mode, 0o4755);
    assert_eq!(fs.stat(&p("sparse_far")).unwrap().size, (70 << 20) + 8);
    if judge.inodes[&judge.dirs[&b"/".to_vec()][&b"fragmented".to_vec()].ino].flags & 0x8_0000 != 0
    {
        let ex = String::from_utf8_lossy(&debugfs_r(image, "ex /fragmented")).into_owned();
        // "Level Entries ...", then " 0/ D ..." with D the tree's depth.
        let depth: u32 = ex
            .lines()
            .nth(1)
            .and_then(|l| l.split('/').nth(1))
            .map_or(0, |d| d.split_whitespace().next().unwrap().parse().unwrap());
        assert!(depth >= 1, "no extent tree below the inode: {ex}");
    }
    // Through a link in the middle of a path: refused, never followed.
    assert!(
        fs.stat(&[b"other".to_vec(), b"up".to_vec(), b"x".to_vec()])
            .is_err()
    );
    let missing = fs.stat(&p("nope")).unwrap_err().to_string();
    assert!(missing.contains("no such"), "{missing}");
}

/// Makes, opens and judges one kind of image; `features` must all be on (as `debugfs
/// stats` lists them) and `absent` off.
fn check(mkfs: &str, args: &[&str], features: &[&str], absent: &[&str]) {
    let dir = tempdir();
    let image = dir.path().join("fs.img");
    make_image(mkfs, args, &image);
    let stats = String::from_utf8_lossy(&debugfs_r(&image, "stats")).into_owned();
    let line = stats
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap();
    let have: BTreeSet<&str> = line.split_whitespace().skip(2).collect();
    for f in features {
        assert!(have.contains(f), "{mkfs} {args:?} lacks {f}: {line}");
    }
    for f in absent {
        assert!(!have.contains(f), "{mkfs} {args:?} has {f}: {line}");
    }
    let fs = open(&image);
    assert_eq!(fs.type_name(), "ext4");
    let compared = compare(&*fs, &image);
    sanity(&*fs, &image, compared);
}

#[test]
fn ext4_4k_metadata_csum() {
    check(
        "mkfs.ext4",
        &["-b", "4096"],
        &[
            "extent",
            "64bit",
            "metadata_csum",
            "dir_index",
            "has_journal",
            "flex_bg",
        ],
        &["inline_data"],
    );
}

#[test]
fn ext4_1k_without_metadata_csum() {
    check(
        "mkfs.ext4",
        &["-b", "1024", "-O", "^metadata_csum,^64bit"],
        &["extent", "dir_index"],
        &["metadata_csum", "64bit"],
    );
}

#[test]
fn ext4_meta_bg_many_groups() {
    // 1 KiB blocks, 1024 a group: 96 groups, 32 descriptors a block, so three meta groups
    // whose descriptor blocks lie in groups 0, 32 and 64.
    check(
        "mkfs.ext4",
        &[
            "-b",
            "1024",
            "-g",
            "1024",
            "-O",
            "meta_bg,^resize_inode,^64bit",
        ],
        &["meta_bg", "extent"],
        &["resize_inode"],
    );
}

#[test]
fn ext2_without_filetype() {
    // Directory entries without types: each listed kind comes from the entry's inode.
    check(
        "mkfs.ext2",
        &["-b", "4096", "-O", "^filetype"],
        &["dir_index"],
        &["filetype"],
    );
}

#[test]
fn ext3_block_maps() {
    check(
        "mkfs.ext3",
        &["-b", "4096"],
        &["has_journal", "dir_index"],
        &["extent"],
    );
}

#[test]
fn ext2_block_maps_1k() {
    check(
        "mkfs.ext2",
        &["-b", "1024"],
        &["dir_index"],
        &["extent", "has_journal"],
    );
}

#[test]
fn inline_data_files_and_directories() {
    let dir = tempdir();
    let image = dir.path().join("inline.img");
    let staged = dir.path().join("stage");
    fs::create_dir_all(staged.join("small_dir")).unwrap();
    fs::create_dir_all(staged.join("empty_dir")).unwrap();
    let mut rng = Rng::new(21);
    for (name, len) in [
        ("tiny", 23),
        ("sixty", 60),
        ("past_i_block", 100),
        ("xattr_full", 150),
        ("blocks", 9000),
    ] {
        let mut v = vec![0u8; len];
        rng.fill(&mut v);
        fs::write(staged.join(name), v).unwrap();
    }
    fs::write(staged.join("empty"), b"").unwrap();
    for i in 0..3 {
        fs::write(staged.join(format!("small_dir/f{i}")), format!("{i}")).unwrap();
    }
    // More entries than i_block holds: inline in system.data or in a block (mke2fs decides;
    // either must read).
    fs::create_dir(staged.join("mid_dir")).unwrap();
    for i in 0..4 {
        fs::write(staged.join(format!("mid_dir/entry{i}")), b"x").unwrap();
    }
    std::os::unix::fs::symlink("t".repeat(80), staged.join("link80")).unwrap();
    run_ok(
        Command::new(sbin("mkfs.ext4"))
            .args(["-q", "-F", "-I", "256", "-O", "inline_data", "-d"])
            .arg(&staged)
            .arg(&image)
            .arg("8M"),
    );
    let judge = Debugfs::tree(&image);
    let root = &judge.dirs[&b"/".to_vec()];
    let inline = |name: &str| judge.inodes[&root[name.as_bytes()].ino].flags & 0x1000_0000 != 0;
    // past_i_block: 60 bytes in i_block, the rest in the system.data attribute.
    for name in ["tiny", "past_i_block", "small_dir"] {
        assert!(inline(name), "{name} is not inline: the test tests nothing");
    }
    assert!(!inline("blocks"));
    println!("mid_dir inline: {}", inline("mid_dir"));
    let fs = open(&image);
    let compared = compare(&*fs, &image);
    assert!(compared >= 17, "compared only {compared}");
    // A second judge for the inline files (debugfs pads them): the staged bytes.
    for name in [
        "tiny",
        "sixty",
        "past_i_block",
        "xattr_full",
        "blocks",
        "empty",
    ] {
        let want = fs::read(staged.join(name)).unwrap();
        let got = read_all(&*fs, &[name.as_bytes().to_vec()], want.len() as u64);
        assert!(got == want, "bytes of {name}");
    }
}

/// Writes `bytes` at `offset` of the file `image`.
fn poke(image: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Where the inode `ino` of `image` is (byte offset), from `debugfs imap`.
fn inode_offset(image: &Path, ino: u32, block_size: u64) -> u64 {
    let out = debugfs_r(image, &format!("imap <{ino}>"));
    let text = String::from_utf8_lossy(&out);
    // "Inode 12 is part of block group 0\n\tlocated at block 1234, offset 0x0b00"
    let at = text.find("located at block ").unwrap() + 17;
    let rest = &text[at..];
    let block: u64 = rest[..rest.find(',').unwrap()].parse().unwrap();
    let off = rest.find("offset 0x").unwrap() + 9;
    let hex: String = rest[off..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    block * block_size + u64::from_str_radix(&hex, 16).unwrap()
}

/// The first data block of `path` in `image` (`debugfs bmap`).
fn first_block(image: &Path, path: &str) -> u64 {
    let out = debugfs_r(image, &format!("bmap {path} 0"));
    let text = String::from_utf8_lossy(&out);
    text.lines().last().unwrap().trim().parse().unwrap()
}

#[test]
fn unwritten_extents_read_as_zeros() {
    let dir = tempdir();
    let image = dir.path().join("prealloc.img");
    run_ok(
        Command::new(sbin("mkfs.ext4"))
            .args(["-q", "-F", "-b", "4096"])
            .arg(&image)
            .arg("16M"),
    );
    let local = dir.path().join("head");
    fs::write(&local, b"written head").unwrap();
    let local_s = local.to_str().unwrap();
    debugfs_batch(
        &image,
        &[
            format!("write {local_s} f"),
            // Blocks 1..=9 allocated unwritten, then the size covers them.
            "fallocate /f 1 9".into(),
            "sif /f size 40960".into(),
        ],
        true,
    );
    let ex = String::from_utf8_lossy(&debugfs_r(&image, "ex /f")).into_owned();
    assert!(ex.contains("Uninit"), "no unwritten extent: {ex}");
    // Put other bytes where the unwritten blocks lie: they must still read as zeros.
    let first = first_block(&image, "/f");
    poke(&image, (first + 1) * 4096, &vec![0xAA; 9 * 4096]);
    let want = debugfs_r(&image, "cat /f");
    assert_eq!(want.len(), 40960);
    assert!(
        want[12..].iter().all(|&b| b == 0),
        "debugfs reads the unwritten blocks as zeros"
    );
    let fs = open(&image);
    let got = read_all(&*fs, &[b"f".to_vec()], 40960);
    assert!(got == want, "unwritten blocks must read as zeros");
}

/// A small 1 KiB-block image without checksums (so that corruption reaches the parsers).
fn small_image(dir: &Path, extra: &[&str]) -> std::path::PathBuf {
    let dir = &dir.join(extra.join("_"));
    let staged = dir.join("stage");
    fs::create_dir_all(staged.join("d")).unwrap();
    fs::create_dir_all(staged.join("keep")).unwrap();
    fs::write(staged.join("victim"), b"to be corrupted").unwrap();
    fs::write(staged.join("keep/file"), vec![7u8; 50_000]).unwrap();
    for i in 0..40 {
        fs::write(staged.join(format!("d/f{i}")), format!("{i}")).unwrap();
    }
    std::os::unix::fs::symlink("x/".repeat(150), staged.join("keep/slow")).unwrap();
    let image = dir.join("small.img");
    run_ok(
        Command::new(sbin("mkfs.ext4"))
            .args(["-q", "-F", "-b", "1024"])
            .args(extra)
            .arg("-d")
            .arg(&staged)
            .arg(&image)
            .arg("4M"),
    );
    image
}

/// The inode number of `path` (`debugfs stat`).
fn ino_of(image: &Path, path: &str) -> u32 {
    let out = debugfs_r(image, &format!("stat {path}"));
    let text = String::from_utf8_lossy(&out);
    let at = text.find("Inode: ").unwrap() + 7;
    text[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// What must still work after a corruption elsewhere.
fn the_rest_reads(fs: &dyn GuestFs) {
    let mut buf = vec![0u8; 60_000];
    assert_eq!(
        fs.read(&[b"keep".to_vec(), b"file".to_vec()], 0, &mut buf)
            .unwrap(),
        50_000
    );
    assert!(buf[..50_000].iter().all(|&b| b == 7));
    assert_eq!(
        fs.read_link(&[b"keep".to_vec(), b"slow".to_vec()]).unwrap(),
        "x/".repeat(150).into_bytes()
    );
}

#[test]
fn a_corrupt_inode_fails_its_file_only() {
    for extra in [&["-O", "^metadata_csum"][..], &[][..]] {
        let dir = tempdir();
        let image = small_image(dir.path(), extra);
        let ino = ino_of(&image, "/victim");
        // The mode's type bits become 0xF000 (no such type) and the size absurd.
        poke(
            &image,
            inode_offset(&image, ino, 1024),
            &[0xFF, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF],
        );
        let fs = open(&image);
        let victim = [b"victim".to_vec()];
        assert!(fs.stat(&victim).is_err(), "{extra:?}");
        assert!(fs.read(&victim, 0, &mut [0u8; 16]).is_err(), "{extra:?}");
        // Still listed (the directory entry is intact), and the rest reads.
        let names: Vec<_> = fs
            .read_dir(&[])
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(names.contains(&b"victim".to_vec()));
        the_rest_reads(&*fs);
    }
}

#[test]
fn a_corrupt_directory_block_fails_its_directory() {
    for extra in [&["-O", "^metadata_csum"][..], &[][..]] {
        let dir = tempdir();
        let image = small_image(dir.path(), extra);
        let block = first_block(&image, "/d");
        // The first entry's record length becomes 3 (shorter than an entry's header).
        poke(&image, block * 1024 + 4, &[3, 0]);
        let fs = open(&image);
        let err = fs.read_dir(&[b"d".to_vec()]).unwrap_err().to_string();
        assert!(err.contains("ext4"), "{extra:?}: {err}");
        the_rest_reads(&*fs);
    }
}

/// Walks `fs` from the root, at most `budget` calls, ignoring errors (a corrupt image gives
/// many); every call must return.
fn walk_bounded(fs: &dyn GuestFs, budget: &mut usize) {
    let mut todo: Vec<Vec<Vec<u8>>> = vec![vec![]];
    let mut buf = vec![0u8; 8192];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            let mut p = dir.clone();
            p.push(e.name);
            let _ = fs.stat(&p);
            match e.kind {
                EntryKind::Dir => todo.push(p),
                EntryKind::File => {
                    let _ = fs.read(&p, 0, &mut buf);
                    let _ = fs.read(&p, 40_000, &mut buf);
                }
                EntryKind::Symlink => {
                    let _ = fs.read_link(&p);
                }
                EntryKind::Other => {}
            }
        }
    }
}

#[test]
fn random_corruption_never_panics() {
    let seed = common::seed_from_env("OVAFS_EXT4_SEED");
    println!("seed {seed} (OVAFS_EXT4_SEED)");
    let mut rng = Rng::new(seed);
    let dir = tempdir();
    for extra in [&["-O", "^metadata_csum"][..], &[][..]] {
        let pristine = fs::read(small_image(dir.path(), extra)).unwrap();
        for round in 0..40 {
            let mut bytes = pristine.clone();
            // Metadata lives in the first few hundred KiB of so small an image.
            for _ in 0..(1 + rng.next() % 64) {
                let at = (1024 + rng.next() % (400 * 1024)) as usize;
                bytes[at] ^= 1 << (rng.next() % 8);
            }
            let source: Arc<dyn ovafs::io::ReadAt> = Arc::new(bytes);
            let start = Instant::now();
            if let Ok(Some(fs)) = guest::open(source) {
                let mut budget = 500;
                walk_bounded(&*fs, &mut budget);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "round {round} took too long"
            );
        }
    }
}

#[test]
fn two_readers_read_in_parallel() {
    let dir = tempdir();
    let staged = dir.path().join("stage");
    fs::create_dir(&staged).unwrap();
    let mut rng = Rng::new(3);
    let mut a = vec![0u8; 3 << 20];
    let mut b = vec![0u8; 3 << 20];
    rng.fill(&mut a);
    rng.fill(&mut b);
    fs::write(staged.join("a"), &a).unwrap();
    fs::write(staged.join("b"), &b).unwrap();
    let image = dir.path().join("two.img");
    run_ok(
        Command::new(sbin("mkfs.ext4"))
            .args(["-q", "-F", "-d"])
            .arg(&staged)
            .arg(&image)
            .arg("32M"),
    );
    let fs = open(&image);
    std::thread::scope(|s| {
        for (name, want) in [("a", &a), ("b", &b), ("a", &a)] {
            let fs = &fs;
            s.spawn(move || {
                let got = read_all(&**fs, &[name.as_bytes().to_vec()], want.len() as u64);
                assert!(&got == want, "{name}");
            });
        }
    });
}

/// Not run by default: `cargo test --release --test guest_ext4 read_speed -- --ignored
/// --nocapture`. Reads a 200 MB file with 128 KiB reads (one reader, then two readers of two
/// files at once) and `debugfs dump` of it, and prints MB/s.
#[test]
#[ignore]
fn read_speed() {
    let dir = tempdir();
    let staged = dir.path().join("stage");
    fs::create_dir(&staged).unwrap();
    let mut rng = Rng::new(5);
    let mut data = vec![0u8; 200 << 20];
    rng.fill(&mut data);
    fs::write(staged.join("big"), &data).unwrap();
    fs::write(staged.join("big2"), &data).unwrap();
    drop(data);
    let image = dir.path().join("speed.img");
    run_ok(
        Command::new(sbin("mkfs.ext4"))
            .args(["-q", "-F", "-d"])
            .arg(&staged)
            .arg(&image)
            .arg("600M"),
    );
    let fs = open(&image);
    let mb = 200.0 * 1.048576;
    // Warm the page cache first, so every figure reads the image from memory.
    let _ = fs::read(&image).unwrap();
    let t = Instant::now();
    let n = read_all(&*fs, &[b"big".to_vec()], 200 << 20).len();
    assert_eq!(n, 200 << 20);
    println!("one reader: {:.0} MB/s", mb / t.elapsed().as_secs_f64());
    let t = Instant::now();
    std::thread::scope(|s| {
        for name in ["big", "big2"] {
            let fs = &fs;
            s.spawn(move || read_all(&**fs, &[name.as_bytes().to_vec()], 200 << 20).len());
        }
    });
    println!(
        "two readers, two files: {:.0} MB/s in all",
        2.0 * mb / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    debugfs_r(&image, "dump /big /dev/null");
    println!("debugfs dump: {:.0} MB/s", mb / t.elapsed().as_secs_f64());
}
