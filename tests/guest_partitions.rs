//! Partition tables made by real tools, read by ovafs's `guest::partition` and judged by the
//! tools: an MBR with primaries and an extended partition of logical ones (`sfdisk`, judged
//! by `sfdisk --json`), a GPT of named partitions (`sgdisk`, judged by `sgdisk -i N` and
//! `sfdisk --json`), a GPT whose primary header or entry array `dd` damaged (the backup
//! copy, judged by `sgdisk -i N` on the damaged disk), both copies damaged (an error), disks
//! without a table (`mkfs.vfat`, `mkfs.ext4`, `mkntfs` on the whole disk, judged by
//! `blkid -p`), and the same tables read through an OVA's stream-optimized VMDK decoded by
//! ovafs (`qemu-img`, GNU tar).

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{OvaBuilder, Rng, path_str, run_ok, tempdir, to_stream_vmdk};
use ovafs::appliance::{Appliance, flat_chain};
use ovafs::cache::UnitCache;
use ovafs::guest::partition::{self, PartitionError, Table, TableKind};
use ovafs::io::{FileSource, ReadAt};

const MIB: u64 = 1 << 20;

/// Like `common::tool`, but also in `/usr/sbin` and `/sbin` (a non-root `PATH` may lack
/// them); a missing tool fails the test naming it.
fn sbin(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    for dir in dirs {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("required tool '{name}' is not installed (scripts/test installs it)");
}

/// A sparse file of `bytes` bytes.
fn blank(path: &Path, bytes: u64) {
    File::create(path).unwrap().set_len(bytes).unwrap();
}

/// Writes 64 KiB of deterministic data at byte `at` of `image` (so that partitions have
/// contents a decoded disk must reproduce).
fn scribble(image: &Path, at: u64, seed: u64) {
    let mut buf = vec![0u8; 64 << 10];
    Rng::new(seed).fill(&mut buf);
    File::options()
        .write(true)
        .open(image)
        .unwrap()
        .write_all_at(&buf, at)
        .unwrap();
}

/// `sfdisk IMAGE` with `script` on its standard input.
fn sfdisk(image: &Path, script: &str) {
    use std::io::Write;
    let mut child = Command::new(sbin("sfdisk"))
        .arg("--no-reread")
        .arg("--no-tell-kernel")
        .arg(image)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sfdisk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A partition as a tool reports it, in 512-byte sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ToolPart {
    number: u32,
    start: u64,
    sectors: u64,
    /// The MBR type byte in hex (`83`) or the GPT type GUID, as the tool prints it.
    kind: String,
    name: Option<String>,
}

/// The partitions `sfdisk --json` lists for `image` (with its label), extended ones too.
fn sfdisk_json(image: &Path) -> (String, Vec<ToolPart>) {
    let out = run_ok(Command::new(sbin("sfdisk")).arg("--json").arg(image));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let table = &v["partitiontable"];
    assert_eq!(table["sectorsize"], 512, "{v}");
    let prefix = path_str(image);
    let parts = table["partitions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| ToolPart {
            number: p["node"]
                .as_str()
                .unwrap()
                .strip_prefix(prefix)
                .unwrap()
                .parse()
                .unwrap(),
            start: p["start"].as_u64().unwrap(),
            sectors: p["size"].as_u64().unwrap(),
            kind: p["type"].as_str().unwrap().to_string(),
            name: p["name"].as_str().map(str::to_string),
        })
        .collect();
    (table["label"].as_str().unwrap().to_string(), parts)
}

/// What `sgdisk -i N IMAGE` says of partition `n`.
fn sgdisk_info(image: &Path, n: u32) -> ToolPart {
    let out = run_ok(
        Command::new(sbin("sgdisk"))
            .arg("-i")
            .arg(n.to_string())
            .arg(image),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |key: &str| -> &str {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("sgdisk -i {n}: no '{key}' in\n{text}"))
    };
    let first_word = |key: &str| -> String { field(key).split(' ').next().unwrap().to_string() };
    let first: u64 = first_word("First sector: ").parse().unwrap();
    let last: u64 = first_word("Last sector: ").parse().unwrap();
    let name = field("Partition name: ")
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .unwrap()
        .to_string();
    ToolPart {
        number: n,
        start: first,
        sectors: last - first + 1,
        kind: first_word("Partition GUID code: "),
        name: (!name.is_empty()).then_some(name),
    }
}

/// The table of a raw image file, read through a `FileSource`.
fn read_file(image: &Path) -> Table {
    let disk = FileSource::open(image).unwrap();
    partition::read_table(&disk).unwrap_or_else(|e| panic!("{}: {e}", image.display()))
}

/// Our partitions in the tools' terms; `kind` is filled by `kind_of` (ours carry names).
fn ours(t: &Table, kind_of: impl Fn(&str) -> String) -> Vec<ToolPart> {
    t.partitions
        .iter()
        .map(|p| {
            assert!(
                p.start.is_multiple_of(512) && p.len.is_multiple_of(512),
                "{p:?} is not whole sectors"
            );
            ToolPart {
                number: p.number,
                start: p.start / 512,
                sectors: p.len / 512,
                kind: kind_of(&p.type_name),
                name: p.name.clone(),
            }
        })
        .collect()
}

/// The MBR type names ovafs shows for the bytes used here, as `sfdisk` prints the bytes.
fn mbr_byte_of(name: &str) -> String {
    match name {
        "Linux" => "83",
        "Linux swap" => "82",
        "NTFS/exFAT" => "7",
        "FAT32" => "c",
        "EFI" => "ef",
        other => panic!("unexpected MBR type name {other:?}"),
    }
    .to_string()
}

/// The GPT type names ovafs shows for the types used here, as GUIDs.
fn gpt_guid_of(name: &str) -> String {
    match name {
        "EFI System" => "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "Linux filesystem" => "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        "Linux swap" => "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
        "Microsoft basic data" => "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        "LVM" => "E6D6D379-F507-44C2-A23C-238F2A3DF928",
        other => panic!("unexpected GPT type name {other:?}"),
    }
    .to_string()
}

/// A 64 MiB MBR disk: primaries 1, 2 and 4, extended primary 3 holding logical 5, 6, 7.
fn mbr_disk(dir: &Path) -> PathBuf {
    let image = dir.join("mbr.img");
    blank(&image, 64 * MIB);
    sfdisk(
        &image,
        "label: dos\nunit: sectors\n\n\
         start=2048, size=8192, type=83\n\
         start=10240, size=4096, type=82\n\
         start=16384, size=100000, type=5\n\
         start=18432, size=8192, type=83\n\
         start=28672, size=4096, type=7\n\
         start=34816, size=20000, type=c\n\
         start=118784, size=8192, type=ef\n",
    );
    image
}

/// A 64 MiB GPT disk: named partitions 1, 2, 3, 5 and an unnamed 6 (4 unused).
fn gpt_disk(dir: &Path) -> PathBuf {
    let image = dir.join("gpt.img");
    blank(&image, 64 * MIB);
    run_ok(
        Command::new(sbin("sgdisk"))
            .args(["-n", "1:2048:+1M", "-t", "1:ef00", "-c", "1:EFI system"])
            .args(["-n", "2:0:+8M", "-t", "2:8300", "-c", "2:root"])
            .args(["-n", "3:0:+2M", "-t", "3:8200", "-c", "3:swap"])
            .args(["-n", "5:0:+20M", "-t", "5:0700", "-c", "5:data ü"])
            .args(["-n", "6:0:0", "-t", "6:8e00"])
            .arg(&image),
    );
    image
}

/// `dd if=/dev/zero of=IMAGE bs=512 seek=LBA count=1 conv=notrunc`.
fn dd_zero_sector(image: &Path, lba: u64) {
    run_ok(
        Command::new(common::tool("dd"))
            .arg("if=/dev/zero")
            .arg(format!("of={}", path_str(image)))
            .args(["bs=512", "count=1", "conv=notrunc", "status=none"])
            .arg(format!("seek={lba}")),
    );
}

fn has_note(t: &Table, needle: &str) -> bool {
    t.notes.iter().any(|n| n.contains(needle))
}

#[test]
fn mbr_with_logical_partitions_matches_sfdisk() {
    let dir = tempdir();
    let image = mbr_disk(dir.path());
    let t = read_file(&image);
    assert_eq!(t.kind, TableKind::Mbr);
    assert!(t.notes.is_empty(), "{:?}", t.notes);

    let (label, mut want) = sfdisk_json(&image);
    assert_eq!(label, "dos");
    // ovafs does not list the extended container itself, only what it holds.
    want.retain(|p| !matches!(p.kind.as_str(), "5" | "f" | "85"));
    want.sort_by_key(|p| p.number);
    assert_eq!(
        want.iter().map(|p| p.number).collect::<Vec<_>>(),
        vec![1, 2, 4, 5, 6, 7],
        "sfdisk made the table this test means"
    );
    assert_eq!(ours(&t, mbr_byte_of), want);
    let names: Vec<&str> = t.partitions.iter().map(|p| p.type_name.as_str()).collect();
    assert_eq!(
        names,
        ["Linux", "Linux swap", "EFI", "Linux", "NTFS/exFAT", "FAT32"]
    );
}

#[test]
fn gpt_with_named_partitions_matches_sgdisk_and_sfdisk() {
    let dir = tempdir();
    let image = gpt_disk(dir.path());
    let t = read_file(&image);
    assert_eq!(t.kind, TableKind::Gpt);
    assert!(t.notes.is_empty(), "{:?}", t.notes);

    let got = ours(&t, gpt_guid_of);
    let numbers: Vec<u32> = got.iter().map(|p| p.number).collect();
    assert_eq!(numbers, vec![1, 2, 3, 5, 6]);
    for p in &got {
        assert_eq!(p, &sgdisk_info(&image, p.number), "partition {}", p.number);
    }
    let (label, mut want) = sfdisk_json(&image);
    assert_eq!(label, "gpt");
    want.sort_by_key(|p| p.number);
    assert_eq!(got, want);
    let names: Vec<Option<&str>> = t.partitions.iter().map(|p| p.name.as_deref()).collect();
    assert_eq!(
        names,
        [
            Some("EFI system"),
            Some("root"),
            Some("swap"),
            Some("data ü"),
            None
        ]
    );
}

#[test]
fn gpt_with_damaged_primary_header_uses_the_backup() {
    let dir = tempdir();
    let image = gpt_disk(dir.path());
    let intact = read_file(&image);
    dd_zero_sector(&image, 1);
    let t = read_file(&image);
    assert_eq!(t.kind, TableKind::Gpt);
    assert_eq!(t.partitions, intact.partitions);
    assert!(
        has_note(
            &t,
            "primary header is unusable (no GPT signature at LBA 1): the backup"
        ),
        "{:?}",
        t.notes
    );
    // sgdisk, reading the damaged disk, falls back to the same backup.
    for p in ours(&t, gpt_guid_of) {
        assert_eq!(p, sgdisk_info(&image, p.number));
    }
}

#[test]
fn gpt_with_damaged_primary_entry_array_uses_the_backup() {
    let dir = tempdir();
    let image = gpt_disk(dir.path());
    let intact = read_file(&image);
    dd_zero_sector(&image, 2); // entries 1 to 4
    let t = read_file(&image);
    assert_eq!(t.partitions, intact.partitions);
    assert!(
        has_note(&t, "entry array's CRC does not match"),
        "{:?}",
        t.notes
    );
    for p in ours(&t, gpt_guid_of) {
        assert_eq!(p, sgdisk_info(&image, p.number));
    }
}

#[test]
fn gpt_with_both_headers_damaged_is_an_error() {
    let dir = tempdir();
    let image = gpt_disk(dir.path());
    dd_zero_sector(&image, 1);
    dd_zero_sector(&image, 64 * MIB / 512 - 1);
    let disk = FileSource::open(&image).unwrap();
    let e = partition::read_table(&disk).unwrap_err();
    assert!(
        matches!(
            e.layer_error::<PartitionError>(),
            Some(PartitionError::GptCorrupt { .. })
        ),
        "{e}"
    );
}

#[test]
fn disks_without_a_table_have_none() {
    let dir = tempdir();
    let cases: [(&str, &str, Vec<&str>); 3] = [
        ("fat.img", "vfat", vec!["mkfs.vfat", "-F", "32"]),
        ("ext4.img", "ext4", vec!["mkfs.ext4", "-q", "-F"]),
        ("ntfs.img", "ntfs", vec!["mkntfs", "-q", "-F", "-Q"]),
    ];
    for (file, fs, mkfs) in cases {
        let image = dir.path().join(file);
        blank(&image, 40 * MIB);
        run_ok(Command::new(sbin(mkfs[0])).args(&mkfs[1..]).arg(&image));
        // blkid judges: a file system on the whole disk, no partition table.
        let out = run_ok(
            Command::new(sbin("blkid"))
                .args(["-p", "-o", "export"])
                .arg(&image),
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.lines().any(|l| l == format!("TYPE={fs}")), "{said}");
        assert!(!said.contains("PTTYPE="), "{said}");

        let t = read_file(&image);
        assert_eq!(t.kind, TableKind::None, "{file}: {t:?}");
        assert!(t.partitions.is_empty(), "{file}");
    }
}

#[test]
fn tables_read_through_an_ova_stream_optimized_disk() {
    let dir = tempdir();
    let mbr = mbr_disk(dir.path());
    let gpt = gpt_disk(dir.path());
    for (image, seed) in [(&mbr, 1u64), (&gpt, 2)] {
        for p in &read_file(image).partitions {
            scribble(image, p.start + 4096, seed * 100 + u64::from(p.number));
        }
    }
    let pkg = dir.path().join("pkg");
    let mut ova = OvaBuilder::new(&pkg, "parts");
    let mut raws = Vec::new();
    for image in [&mbr, &gpt] {
        let vmdk = image.with_extension("vmdk");
        to_stream_vmdk(image, &vmdk);
        ova = ova.disk(&vmdk, 64 * MIB, ovafs::sample::VMDK_STREAM_URI);
        raws.push(image.clone());
    }
    let ova = ova.build();

    let app = Appliance::open(&ova).unwrap();
    assert_eq!(app.disks.len(), 2);
    let cache = Arc::new(UnitCache::new(16 * MIB));
    for (d, raw) in app.disks.iter().zip(&raws) {
        let flat: Arc<dyn ReadAt> = Arc::new(flat_chain(d, &cache));
        let t = partition::read_table(&*flat).unwrap();
        let want = read_file(raw);
        assert_eq!(t, want, "{}", raw.display());
        assert!(!t.partitions.is_empty());
        // Each partition's bytes through ovafs are the raw image's bytes of its range.
        let file = File::open(raw).unwrap();
        for p in &t.partitions {
            let src = partition::partition_source(flat.clone(), p).unwrap();
            assert_eq!(src.len(), p.len);
            let n = p.len.min(256 << 10) as usize;
            let (mut got, mut wanted) = (vec![0u8; n], vec![0u8; n]);
            src.read_exact_at(0, &mut got).unwrap();
            file.read_exact_at(&mut wanted, p.start).unwrap();
            assert!(
                got == wanted,
                "{} partition {}: bytes differ",
                raw.display(),
                p.number
            );
            assert!(got.iter().any(|&b| b != 0), "the test scribbled there");
        }
    }
}
