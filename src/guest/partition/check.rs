//! From partitions as a table states them to partitions in bytes of this disk: offsets
//! overflow-checked, ranges clipped to the disk, and overlaps (with each other, with the
//! table's own sectors, out of an extended container) reported as notes. A table is a
//! stranger's claim; these checks never refuse it, they say what is wrong with it.

use super::{Notes, Partition, Raw, Reserved};

/// Turns `raw` into checked partitions of a disk of `disk_len` bytes, sorted by number.
pub(super) fn finish(
    raw: Vec<Raw>,
    reserved: &[Reserved],
    disk_len: u64,
    notes: &mut Notes,
) -> Vec<Partition> {
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        let Some(p) = to_bytes(&r, disk_len, notes) else {
            continue;
        };
        for t in reserved {
            if overlaps(p.start, p.len, t.start, t.len) {
                notes.push(format!("partition {} overlaps {}", p.number, t.what));
            }
        }
        if let Some((c_start, c_len)) = r.container
            && !(p.start >= c_start && p.start - c_start + p.len <= c_len)
        {
            notes.push(format!(
                "partition {} lies outside its extended partition",
                p.number
            ));
        }
        out.push(p);
    }
    out.sort_by_key(|p| p.number);
    report_overlaps(&out, notes);
    out
}

/// The byte range of `r`, clipped to the disk; `None` (with a note) when nothing is left.
fn to_bytes(r: &Raw, disk_len: u64, notes: &mut Notes) -> Option<Partition> {
    let n = r.number;
    let range = r.first_sector.checked_mul(r.sector_size).and_then(|start| {
        r.sectors
            .checked_mul(r.sector_size)
            .and_then(|len| start.checked_add(len).map(|end| (start, end)))
    });
    let Some((start, end)) = range else {
        notes.push(format!(
            "partition {n} (sector {}, {} sectors) is past any disk's end: skipped",
            r.first_sector, r.sectors
        ));
        return None;
    };
    if start >= disk_len {
        notes.push(format!(
            "partition {n} starts past the end of the disk: skipped"
        ));
        return None;
    }
    let end = if end > disk_len {
        notes.push(format!(
            "partition {n} extends past the end of the disk: clipped"
        ));
        disk_len
    } else {
        end
    };
    Some(Partition {
        number: n,
        start,
        len: end - start,
        type_name: r.type_name.clone(),
        name: r.name.clone(),
    })
}

fn overlaps(a: u64, a_len: u64, b: u64, b_len: u64) -> bool {
    // Both ranges lie inside the disk (or are bounded table structures): no overflow.
    a < b.saturating_add(b_len) && b < a.saturating_add(a_len)
}

/// One note per partition that starts inside another: a sweep by start, O(n log n).
fn report_overlaps(parts: &[Partition], notes: &mut Notes) {
    let mut by_start: Vec<&Partition> = parts.iter().collect();
    by_start.sort_by_key(|p| (p.start, p.number));
    let mut reach: Option<&Partition> = None; // the partition reaching furthest so far
    for p in by_start {
        if let Some(q) = reach {
            if p.start < q.start + q.len {
                notes.push(format!(
                    "partition {} overlaps partition {}",
                    p.number, q.number
                ));
            }
            if p.start + p.len <= q.start + q.len {
                continue;
            }
        }
        reach = Some(p);
    }
}
