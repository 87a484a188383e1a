//! Rock Ridge: the POSIX attributes, long names and symbolic links kept in the System Use
//! area of each directory record as SUSP entries (signature, length, version, data), with
//! continuation areas (`CE`) elsewhere in the image.
//!
//! Read here: `PX` (mode, links, owner), `NM` (the name, in pieces), `SL` (a link's target,
//! in components), `TF` (times), `CE` (more entries elsewhere: at most [`MAX_CE`] of them per
//! record, each inside one block and inside the image), `CL`/`RE` (a directory relocated by
//! a writer that kept the tree 8 levels deep), `ZF` (zisofs compression, which is refused
//! when read), `SP` (the marker in the root's `.` record that says Rock Ridge is there) and
//! `ST` (the end). Other entries (`ER`, `PN`, `RR`, xorriso's `AL`) are skipped.

use std::time::SystemTime;

use crate::error::Result;
use crate::io::ReadAt;

use super::IsoError;
use super::time;

/// Continuation areas followed per record (Linux stops at 32 as well).
const MAX_CE: usize = 32;
/// Longest name assembled from `NM` pieces (Linux truncates at 255; longer is corrupt here).
const MAX_NAME: usize = 1024;
/// Longest link target assembled from `SL` components (Linux's `PATH_MAX`).
const MAX_LINK: usize = 4096;

/// `NM` flags.
const NM_CONTINUE: u8 = 1;
const NM_CURRENT: u8 = 2;
const NM_PARENT: u8 = 4;
/// `SL` component flags.
const SL_CONTINUE: u8 = 1;
const SL_CURRENT: u8 = 2;
const SL_PARENT: u8 = 4;
const SL_ROOT: u8 = 8;
/// `TF` flags: which stamps follow, in this order, and whether they are 17-byte ones.
const TF_CREATION: u8 = 1;
const TF_MODIFY: u8 = 2;
const TF_LONG: u8 = 0x80;

/// The POSIX attributes of a `PX` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Px {
    /// `st_mode`, file type bits included.
    pub mode: u32,
    /// `st_nlink`.
    pub nlink: u32,
    /// `st_uid`.
    pub uid: u32,
    /// `st_gid`.
    pub gid: u32,
}

/// What the Rock Ridge entries of one directory record say.
#[derive(Debug, Clone, Default)]
pub struct RockRidge {
    /// Bytes to skip at the start of every System Use area (from `SP`), when `SP` is there.
    pub sp_skip: Option<u8>,
    /// The attributes.
    pub px: Option<Px>,
    /// The name, when an `NM` entry gives one (never `.` or `..`).
    pub name: Option<Vec<u8>>,
    /// The target of a symbolic link.
    pub link: Option<Vec<u8>>,
    /// The modification time.
    pub mtime: Option<SystemTime>,
    /// `CL`: this entry is a directory relocated to this block.
    pub child_link: Option<u32>,
    /// `RE`: this entry is the relocated directory itself, listed where `CL` points from.
    pub relocated: bool,
    /// `ZF`: the data is zisofs-compressed.
    pub compressed: bool,
    /// Whether a `NM` piece said more follows.
    name_open: bool,
    /// Whether a `SL` entry said more follows.
    link_open: bool,
}

/// Where a record's entries continue.
#[derive(Debug, Clone, Copy)]
struct Continuation {
    block: u32,
    offset: u32,
    len: u32,
}

/// Reads the SUSP entries of `area` (a record's System Use area, already past the `SP`
/// skip) and of its continuation areas in `source`. `budget` is how many continuation
/// areas the caller may still read (one directory's records share one budget, so that a
/// directory of millions of records, each with a chain of 32, is refused rather than read).
pub fn parse(
    source: &dyn ReadAt,
    block_size: u64,
    area: &[u8],
    budget: &mut usize,
) -> Result<RockRidge> {
    let mut rr = RockRidge::default();
    let mut next = entries(area, &mut rr)?;
    let mut followed = 0;
    while let Some(ce) = next {
        followed += 1;
        if followed > MAX_CE {
            return Err(IsoError::Corrupt("Rock Ridge continuation chain too long").into());
        }
        *budget = budget.checked_sub(1).ok_or(IsoError::Corrupt(
            "too many Rock Ridge continuation areas in one directory",
        ))?;
        let data = read_continuation(source, block_size, ce)?;
        next = entries(&data, &mut rr)?;
    }
    Ok(rr)
}

/// The bytes of continuation area `ce`, which must lie inside one block of the image.
fn read_continuation(source: &dyn ReadAt, block_size: u64, ce: Continuation) -> Result<Vec<u8>> {
    let (offset, len) = (u64::from(ce.offset), u64::from(ce.len));
    if offset.checked_add(len).is_none_or(|end| end > block_size) {
        return Err(IsoError::Corrupt("Rock Ridge continuation area crosses its block").into());
    }
    let at = u64::from(ce.block)
        .checked_mul(block_size)
        .and_then(|b| b.checked_add(offset))
        .ok_or(IsoError::Corrupt("Rock Ridge continuation area offset"))?;
    // Bounded by the block size (at most 2048) checked above.
    let mut data = vec![0u8; len as usize];
    source.read_exact_at(at, &mut data)?;
    Ok(data)
}

/// Reads the entries of one area into `rr`; returns the continuation it names, if any.
fn entries(area: &[u8], rr: &mut RockRidge) -> Result<Option<Continuation>> {
    let mut ce = None;
    let mut rest = area;
    while let [s0, s1, len, _version, ..] = *rest {
        let len = usize::from(len);
        // Padding, or a length that does not fit: the area ends here (as Linux reads it).
        if len < 4 || len > rest.len() {
            break;
        }
        let (entry, tail) = rest.split_at(len);
        rest = tail;
        let data = &entry[4..];
        match &[s0, s1] {
            b"ST" => break,
            b"CE" => ce = continuation(data),
            b"SP" => rr.sp_skip = sp(data),
            b"PX" => rr.px = px(data),
            b"NM" => name_piece(data, rr)?,
            b"SL" => link_piece(data, rr)?,
            b"TF" => {
                if let Some(t) = tf_modify(data) {
                    rr.mtime = Some(t);
                }
            }
            b"CL" => rr.child_link = data.get(..4).map(le32),
            b"RE" => rr.relocated = true,
            b"ZF" => rr.compressed = true,
            _ => {}
        }
    }
    Ok(ce)
}

/// `SP`: check bytes BE EF, then the number of bytes every System Use area starts with.
fn sp(data: &[u8]) -> Option<u8> {
    match *data {
        [0xBE, 0xEF, skip, ..] => Some(skip),
        _ => None,
    }
}

/// `CE`: block, offset and length of the continuation area (both-endian 32-bit each).
fn continuation(data: &[u8]) -> Option<Continuation> {
    Some(Continuation {
        block: le32(data.get(0..4)?),
        offset: le32(data.get(8..12)?),
        len: le32(data.get(16..20)?),
    })
}

/// `PX`: mode, links, uid and gid (both-endian 32-bit each; a 1.12 serial number may follow).
fn px(data: &[u8]) -> Option<Px> {
    Some(Px {
        mode: le32(data.get(0..4)?),
        nlink: le32(data.get(8..12)?),
        uid: le32(data.get(16..20)?),
        gid: le32(data.get(24..28)?),
    })
}

/// `NM`: a flags byte, then a piece of the name. `.` and `..` flags name no real entry.
fn name_piece(data: &[u8], rr: &mut RockRidge) -> Result<()> {
    let Some((&flags, piece)) = data.split_first() else {
        return Ok(());
    };
    if flags & (NM_CURRENT | NM_PARENT) != 0 {
        return Ok(());
    }
    match &mut rr.name {
        // A complete name already: a later stray piece is ignored.
        Some(_) if !rr.name_open => return Ok(()),
        Some(name) => name.extend_from_slice(piece),
        None => rr.name = Some(piece.to_vec()),
    }
    if rr.name.as_ref().is_some_and(|n| n.len() > MAX_NAME) {
        return Err(IsoError::Corrupt("Rock Ridge name longer than 1024 bytes").into());
    }
    rr.name_open = flags & NM_CONTINUE != 0;
    Ok(())
}

/// `SL`: a flags byte (1: the target continues in the next `SL`), then components of a
/// flags byte, a length and that many bytes. Joined as Linux joins them: `/` between
/// components unless one continues into the next or is the root.
fn link_piece(data: &[u8], rr: &mut RockRidge) -> Result<()> {
    let Some((&entry_flags, mut rest)) = data.split_first() else {
        return Ok(());
    };
    if rr.link.is_some() && !rr.link_open {
        return Ok(());
    }
    let target = rr.link.get_or_insert_with(Vec::new);
    let mut last_flags = None;
    while let [flags, len, ref tail @ ..] = *rest {
        let len = usize::from(len);
        let Some(content) = tail.get(..len) else {
            return Err(IsoError::Corrupt("Rock Ridge link component past its entry").into());
        };
        if last_flags.is_some_and(|f| f & (SL_CONTINUE | SL_ROOT) == 0) {
            target.push(b'/');
        }
        match flags & !SL_CONTINUE {
            SL_CURRENT => target.push(b'.'),
            SL_PARENT => target.extend_from_slice(b".."),
            SL_ROOT => target.push(b'/'),
            _ => target.extend_from_slice(content),
        }
        last_flags = Some(flags);
        rest = &tail[len..];
        if target.len() > MAX_LINK {
            return Err(IsoError::Corrupt("Rock Ridge link target longer than 4096 bytes").into());
        }
    }
    rr.link_open = entry_flags & 1 != 0;
    // The next entry starts a new component unless the last one continues into it.
    if rr.link_open && last_flags.is_some_and(|f| f & SL_CONTINUE == 0) {
        target.push(b'/');
    }
    Ok(())
}

/// `TF`: the modification stamp, if the entry has one.
fn tf_modify(data: &[u8]) -> Option<SystemTime> {
    let (&flags, stamps) = data.split_first()?;
    if flags & TF_MODIFY == 0 {
        return None;
    }
    let width = if flags & TF_LONG != 0 { 17 } else { 7 };
    let skip = if flags & TF_CREATION != 0 { width } else { 0 };
    let stamp = stamps.get(skip..skip + width)?;
    if width == 17 {
        time::long_form(stamp)
    } else {
        time::short_form(stamp)
    }
}

/// The little-endian half of a both-endian number (the caller gives 4 bytes).
fn le32(b: &[u8]) -> u32 {
    match *b {
        [a, b, c, d, ..] => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sig: &[u8; 2], data: &[u8]) -> Vec<u8> {
        let mut e = vec![sig[0], sig[1], (data.len() + 4) as u8, 1];
        e.extend_from_slice(data);
        e
    }

    #[test]
    fn names_in_pieces_join() {
        let mut area = entry(b"NM", b"\x01long-");
        area.extend(entry(b"NM", b"\x00name"));
        area.extend(entry(b"NM", b"\x00ignored"));
        let rr = parse(&Vec::<u8>::new(), 2048, &area, &mut 100).unwrap();
        assert_eq!(rr.name.as_deref(), Some(&b"long-name"[..]));
    }

    #[test]
    fn link_components_join_like_linux() {
        // /usr/../lib + "x" continued into "y" across two SL entries.
        let mut area = entry(
            b"SL",
            b"\x01\x08\x00\x00\x03usr\x04\x00\x00\x03lib\x01\x01x",
        );
        area.extend(entry(b"SL", b"\x00\x00\x01y"));
        let rr = parse(&Vec::<u8>::new(), 2048, &area, &mut 100).unwrap();
        assert_eq!(rr.link.as_deref(), Some(&b"/usr/../lib/xy"[..]));
    }

    #[test]
    fn a_component_past_its_entry_is_corrupt() {
        let area = entry(b"SL", b"\x00\x00\x09ab");
        assert!(parse(&Vec::<u8>::new(), 2048, &area, &mut 100).is_err());
    }

    #[test]
    fn a_continuation_loop_is_bounded() {
        // Block 1 holds a CE pointing at itself.
        let ce = entry(
            b"CE",
            &[
                1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, 0, 0, 0, 28,
            ],
        );
        let mut image = vec![0u8; 4096];
        image[2048..2048 + ce.len()].copy_from_slice(&ce);
        let err = parse(&image, 2048, &ce, &mut 100).unwrap_err();
        assert!(err.to_string().contains("chain"), "{err}");
        let err = parse(&image, 2048, &ce, &mut 5).unwrap_err();
        assert!(err.to_string().contains("one directory"), "{err}");
    }
}
