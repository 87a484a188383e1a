//! The ISO transport of the OVF environment (DSP0243 2.1 §11.2, `ovf:transport="iso"`): an
//! ISO 9660 image (ECMA-119 4th edition) holding `ovf-env.xml` at its root, made in memory.
//!
//! Conventions followed (sources in /work/notes/i13/env.md):
//! - Volume identifier `OVF ENV`, as VMware labels the environment CD and as udev rules and
//!   appliance scripts match it (`blkid -t LABEL="OVF ENV"`); cloud-init ignores the label.
//! - The file's ISO 9660 name is `OVF_ENV.XML;1` (level 1: `-` is not a d-character), and a
//!   Rock Ridge (RRIP 1.10) `NM` entry names it `ovf-env.xml`, so Linux (which prefers Rock
//!   Ridge) shows `ovf-env.xml`; a reader without Rock Ridge shows `OVF_ENV.XML` or, Linux
//!   with `norock`, `ovf_env.xml`. cloud-init looks for all of `ovf-env.xml`, `ovf_env.xml`,
//!   `OVF_ENV.XML`. No Joliet: the readers that would use it (Windows) match names without
//!   regard to case.
//!
//! Layout, 2048-byte sectors: 0-15 system area (zeros); 16 primary volume descriptor; 17
//! terminator; 18 type-L path table; 19 type-M path table; 20 root directory (`.` with the
//! SUSP `SP` marker, a `PX` and a `CE` pointing at sector 21; `..`; the file with `PX` and
//! `NM`); 21 the continuation area with the `ER` entry (too long for the `.` record itself);
//! 22.. the file's bytes; then [`PAD_SECTORS`] zero sectors, as `mkisofs -pad` adds, so a
//! drive's read-ahead past the file stays inside the medium. The volume space covers all.
//!
//! Byte-stable: every date is the fixed [`EPOCH`] (2000-01-01 00:00:00 UTC), owners are 0,
//! modes 0555 (directory) and 0444 (file); the image is a function of the XML alone.

use super::DeployError;

/// Bytes per logical sector and block.
const SECTOR: usize = 2048;
/// First sector after the system area.
const PVD_SECTOR: u32 = 16;
const TERMINATOR_SECTOR: u32 = 17;
const L_PATH_SECTOR: u32 = 18;
const M_PATH_SECTOR: u32 = 19;
const ROOT_SECTOR: u32 = 20;
const CONTINUATION_SECTOR: u32 = 21;
const DATA_SECTOR: u32 = 22;
/// Zero sectors after the data (300 KiB, mkisofs's `-pad`).
const PAD_SECTORS: u32 = 150;
/// Largest XML accepted: far above any real environment, far below the 4 GiB a
/// single-extent file can hold.
const MAX_XML: usize = 64 << 20;

/// The volume identifier (label).
pub const VOLUME_ID: &str = "OVF ENV";
/// The file's ISO 9660 identifier.
pub const ISO_NAME: &str = "OVF_ENV.XML;1";
/// The file's Rock Ridge name.
pub const RR_NAME: &str = "ovf-env.xml";
/// Every date in the image: 2000-01-01 00:00:00 UTC (year, month, day, hour, minute,
/// second), chosen once and documented so the image never depends on the clock.
const EPOCH: [u8; 6] = [100, 1, 1, 0, 0, 0];
/// The same date in the volume descriptor's 17-byte form (digits, then offset 0 = UTC).
const EPOCH_LONG: &[u8; 16] = b"2000010100000000";

/// POSIX modes for Rock Ridge `PX`.
const MODE_DIR: u32 = 0o040_555;
const MODE_FILE: u32 = 0o100_444;

/// RRIP 1.10's extension identifier, descriptor and source for the `ER` entry (RRIP §4.3).
const ER_ID: &str = "RRIP_1991A";
const ER_DESCRIPTOR: &str =
    "THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SOURCE: &str = "PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

/// An ISO 9660 image holding `ovf-env.xml` (`xml`) at its root.
pub fn environment_image(xml: &str) -> Result<Vec<u8>, DeployError> {
    let data = xml.as_bytes();
    let too_big = || DeployError::Unusable {
        file: "ovf-env.iso",
        reason: format!(
            "the environment is {} bytes, more than {MAX_XML}",
            data.len()
        ),
    };
    if data.len() > MAX_XML {
        return Err(too_big());
    }
    let data_len = u32::try_from(data.len()).map_err(|_| too_big())?;
    let data_sectors = u32::try_from(data.len().div_ceil(SECTOR)).map_err(|_| too_big())?;
    let total = DATA_SECTOR
        .checked_add(data_sectors)
        .and_then(|n| n.checked_add(PAD_SECTORS))
        .ok_or_else(too_big)?;
    let mut img = Image::new(total);
    img.put(PVD_SECTOR, &primary_descriptor(total));
    img.put(TERMINATOR_SECTOR, &terminator());
    img.put(L_PATH_SECTOR, &path_table(u32::to_le_bytes));
    img.put(M_PATH_SECTOR, &path_table(u32::to_be_bytes));
    img.put(ROOT_SECTOR, &root_directory(data_len));
    img.put(CONTINUATION_SECTOR, &er_entry());
    img.put(DATA_SECTOR, data);
    Ok(img.bytes)
}

/// The image being filled: whole sectors of zeros, written at sector offsets.
struct Image {
    bytes: Vec<u8>,
}

impl Image {
    fn new(sectors: u32) -> Image {
        // `sectors` is bounded by MAX_XML / SECTOR + 172: at most ~64 MiB.
        let len = usize::try_from(sectors).unwrap_or(0).saturating_mul(SECTOR);
        Image {
            bytes: vec![0; len],
        }
    }

    /// Writes `b` at the start of `sector`; the layout above guarantees it fits (anything
    /// else is dropped rather than indexed out of bounds).
    fn put(&mut self, sector: u32, b: &[u8]) {
        let Ok(s) = usize::try_from(sector) else {
            return;
        };
        let start = s.saturating_mul(SECTOR);
        if let Some(dst) = start
            .checked_add(b.len())
            .and_then(|end| self.bytes.get_mut(start..end))
        {
            dst.copy_from_slice(b);
        }
    }
}

/// A 16-bit number in both byte orders (ECMA-119 §7.2.3).
fn both16(n: u16) -> [u8; 4] {
    let [a, b] = n.to_le_bytes();
    [a, b, b, a]
}

/// A 32-bit number in both byte orders (ECMA-119 §7.3.3).
fn both32(n: u32) -> [u8; 8] {
    let le = n.to_le_bytes();
    let be = n.to_be_bytes();
    [le[0], le[1], le[2], le[3], be[0], be[1], be[2], be[3]]
}

/// `s` left-aligned in `len` bytes padded with spaces (ECMA-119 §7.4: identifiers); `s` is a
/// constant of this module, cut if it were longer.
fn padded(s: &str, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = s.bytes().take(len).collect();
    v.resize(len, b' ');
    v
}

/// The primary volume descriptor (ECMA-119 §8.4) of a volume of `total` sectors.
fn primary_descriptor(total: u32) -> Vec<u8> {
    let mut d = Vec::with_capacity(SECTOR);
    d.push(1); // type: primary
    d.extend_from_slice(b"CD001");
    d.push(1); // version
    d.push(0);
    d.extend(padded("", 32)); // system identifier
    d.extend(padded(VOLUME_ID, 32));
    d.extend([0; 8]);
    d.extend(both32(total)); // volume space size
    d.extend([0; 32]);
    d.extend(both16(1)); // volume set size
    d.extend(both16(1)); // volume sequence number
    d.extend(both16(2048)); // logical block size
    d.extend(both32(PATH_TABLE_LEN));
    d.extend(L_PATH_SECTOR.to_le_bytes());
    d.extend([0; 4]); // no optional type-L table
    d.extend(M_PATH_SECTOR.to_be_bytes());
    d.extend([0; 4]); // no optional type-M table
    d.extend(record(&Record::root_in_descriptor()));
    d.extend(padded("", 128)); // volume set
    d.extend(padded("", 128)); // publisher
    d.extend(padded("", 128)); // data preparer
    d.extend(padded("OVAFS", 128)); // application
    d.extend(padded("", 37)); // copyright file
    d.extend(padded("", 37)); // abstract file
    d.extend(padded("", 37)); // bibliographic file
    for _ in 0..2 {
        // creation, modification
        d.extend_from_slice(EPOCH_LONG);
        d.push(0);
    }
    for _ in 0..2 {
        // expiration, effective: "not specified" (§8.4.26.1: digits zero, offset zero)
        d.extend_from_slice(b"0000000000000000");
        d.push(0);
    }
    d.push(1); // file structure version
    d.resize(SECTOR, 0);
    d
}

/// The volume descriptor set terminator (ECMA-119 §8.3).
fn terminator() -> Vec<u8> {
    let mut d = vec![255];
    d.extend_from_slice(b"CD001");
    d.push(1);
    d.resize(SECTOR, 0);
    d
}

/// Bytes of a path table holding the root only.
const PATH_TABLE_LEN: u32 = 10;

/// The path table (ECMA-119 §9.4) in the byte order of `order`: one record, the root.
fn path_table(order: fn(u32) -> [u8; 4]) -> Vec<u8> {
    let mut t = vec![1, 0]; // identifier length, extended attribute length
    t.extend(order(ROOT_SECTOR));
    // Parent directory number: the root is its own parent (number 1), in the table's order.
    let one = order(1);
    if one[0] == 1 {
        t.extend([1, 0]);
    } else {
        t.extend([0, 1]);
    }
    t.extend([0, 0]); // identifier 0x00 and the padding byte
    t
}

/// One directory record's fields (ECMA-119 §9.1).
struct Record {
    extent: u32,
    len: u32,
    dir: bool,
    name: Vec<u8>,
    system_use: Vec<u8>,
}

impl Record {
    /// The root's record inside the volume descriptor: no system use field (§8.4.18).
    fn root_in_descriptor() -> Record {
        Record {
            extent: ROOT_SECTOR,
            len: SECTOR_U32,
            dir: true,
            name: vec![0],
            system_use: Vec::new(),
        }
    }
}

const SECTOR_U32: u32 = 2048;

/// The bytes of `r`; its length fits the one-byte length field by construction (names and
/// system-use areas here are constants of this module: at most 33 + 13 + 1 + 52 bytes).
fn record(r: &Record) -> Vec<u8> {
    let name_len = r.name.len();
    let pad = usize::from(name_len.is_multiple_of(2));
    let mut v = Vec::with_capacity(34 + name_len + r.system_use.len());
    v.push(0); // length, set below
    v.push(0); // extended attribute record length
    v.extend(both32(r.extent));
    v.extend(both32(r.len));
    v.extend(EPOCH);
    v.push(0); // offset from UTC
    v.push(if r.dir { 2 } else { 0 }); // flags: directory
    v.push(0); // file unit size
    v.push(0); // interleave gap
    v.extend(both16(1)); // volume sequence number
    v.push(u8::try_from(name_len).unwrap_or(0));
    v.extend(&r.name);
    v.extend(std::iter::repeat_n(0, pad));
    v.extend(&r.system_use);
    if !v.len().is_multiple_of(2) {
        v.push(0); // records have even length (§9.1.13)
    }
    let len = u8::try_from(v.len()).unwrap_or(0);
    if let Some(first) = v.first_mut() {
        *first = len;
    }
    v
}

/// The root directory's extent: `.`, `..` and the file of `data_len` bytes.
fn root_directory(data_len: u32) -> Vec<u8> {
    let mut dot_su = sp_entry();
    dot_su.extend(px_entry(MODE_DIR, 2));
    dot_su.extend(ce_entry(CONTINUATION_SECTOR, 0, er_len()));
    let file_su = [px_entry(MODE_FILE, 1), nm_entry(RR_NAME)].concat();
    let records = [
        Record {
            extent: ROOT_SECTOR,
            len: SECTOR_U32,
            dir: true,
            name: vec![0],
            system_use: dot_su,
        },
        Record {
            extent: ROOT_SECTOR,
            len: SECTOR_U32,
            dir: true,
            name: vec![1],
            system_use: px_entry(MODE_DIR, 2),
        },
        Record {
            extent: DATA_SECTOR,
            len: data_len,
            dir: false,
            name: ISO_NAME.as_bytes().to_vec(),
            system_use: file_su,
        },
    ];
    let mut v: Vec<u8> = records.iter().flat_map(record).collect();
    v.resize(SECTOR, 0);
    v
}

/// SUSP `SP`: the system use sharing protocol is in use, no bytes skipped (SUSP §5.3).
fn sp_entry() -> Vec<u8> {
    vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0]
}

/// SUSP `CE`: the system use area continues at `block`/`offset` for `len` bytes (SUSP §5.1).
fn ce_entry(block: u32, offset: u32, len: u32) -> Vec<u8> {
    let mut v = vec![b'C', b'E', 28, 1];
    v.extend(both32(block));
    v.extend(both32(offset));
    v.extend(both32(len));
    v
}

/// RRIP 1.10 `PX`: mode, links, uid 0, gid 0 (RRIP §4.1.1; 36 bytes, no serial number).
fn px_entry(mode: u32, links: u32) -> Vec<u8> {
    let mut v = vec![b'P', b'X', 36, 1];
    v.extend(both32(mode));
    v.extend(both32(links));
    v.extend(both32(0));
    v.extend(both32(0));
    v
}

/// RRIP `NM`: the POSIX name (RRIP §4.1.4); `name` is a short constant.
fn nm_entry(name: &str) -> Vec<u8> {
    let mut v = vec![b'N', b'M', u8::try_from(5 + name.len()).unwrap_or(5), 1, 0];
    v.extend(name.as_bytes());
    v
}

/// Length of the `ER` entry.
fn er_len() -> u32 {
    u32::try_from(8 + ER_ID.len() + ER_DESCRIPTOR.len() + ER_SOURCE.len()).unwrap_or(0)
}

/// SUSP `ER`: the extension in use is RRIP 1.10 (SUSP §5.5), in the continuation area.
fn er_entry() -> Vec<u8> {
    let byte = |n: usize| u8::try_from(n).unwrap_or(0);
    let mut v = vec![
        b'E',
        b'R',
        u8::try_from(er_len()).unwrap_or(0),
        1,
        byte(ER_ID.len()),
        byte(ER_DESCRIPTOR.len()),
        byte(ER_SOURCE.len()),
        1, // extension version
    ];
    v.extend(ER_ID.as_bytes());
    v.extend(ER_DESCRIPTOR.as_bytes());
    v.extend(ER_SOURCE.as_bytes());
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::guest::iso9660::IsoFs;
    use crate::guest::{EntryKind, GuestFs};

    const XML: &str = "<?xml version=\"1.0\"?>\n<Environment/>\n";

    #[test]
    fn layout_and_sizes() {
        let img = environment_image(XML).unwrap();
        assert_eq!(img.len(), (22 + 1 + 150) * SECTOR);
        let pvd = &img[16 * SECTOR..17 * SECTOR];
        assert_eq!(&pvd[1..6], b"CD001");
        assert_eq!(&pvd[40..47], b"OVF ENV");
        assert_eq!(u32::from_le_bytes(pvd[80..84].try_into().unwrap()), 173);
        assert_eq!(&img[22 * SECTOR..22 * SECTOR + XML.len()], XML.as_bytes());
        assert_eq!(er_entry().len(), er_len() as usize);
        assert!(er_len() < 255);
        // Records fit their one-byte length.
        let root = root_directory(1);
        let dot = usize::from(root[0]);
        let dotdot = usize::from(root[dot]);
        let file = usize::from(root[dot + dotdot]);
        assert!(dot > 34 && dotdot > 34 && file > 34);
        assert_eq!(
            &root[dot + dotdot + 33..dot + dotdot + 46],
            ISO_NAME.as_bytes()
        );
    }

    #[test]
    fn byte_stable_and_sized_by_content() {
        assert_eq!(
            environment_image(XML).unwrap(),
            environment_image(XML).unwrap()
        );
        let big = "x".repeat(2049);
        assert_eq!(
            environment_image(&big).unwrap().len(),
            (22 + 2 + 150) * SECTOR
        );
        assert!(environment_image(&"y".repeat(MAX_XML + 1)).is_err());
    }

    #[test]
    fn own_reader_sees_the_rock_ridge_name_and_bytes() {
        let xml = format!("{XML}{}", "<!-- pad -->\n".repeat(400));
        let img = environment_image(&xml).unwrap();
        let fs = IsoFs::open(Arc::new(img)).unwrap();
        assert_eq!(fs.naming(), "rock ridge");
        let list = fs.read_dir(&[]).unwrap();
        let names: Vec<_> = list.iter().map(|e| e.name.clone()).collect();
        assert_eq!(names, vec![b"ovf-env.xml".to_vec()]);
        let path = [b"ovf-env.xml".to_vec()];
        let st = fs.stat(&path).unwrap();
        assert_eq!(st.kind, EntryKind::File);
        assert_eq!(st.size, xml.len() as u64);
        assert_eq!(st.mode & 0o7777, 0o444);
        let mut buf = vec![0; xml.len() + 10];
        let n = fs.read(&path, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], xml.as_bytes());
    }
}
