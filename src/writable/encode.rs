//! One changed disk as its new member: the bytes a commit stores, written to an unnamed
//! temporary file in the overlay folder, and what the descriptor must say of them.
//!
//! A stream-optimized or monolithicSparse VMDK is re-encoded as a stream-optimized VMDK
//! over its own grains (unchanged grains' compressed bytes copied verbatim, changed ones
//! deflated on every core). A raw image stays raw (the flat content itself). Any other
//! format becomes a stream-optimized VMDK and the Disk's `ovf:format` says so.

use std::fs::File;
use std::io::BufWriter;
use std::sync::Arc;

use super::disk::Current;
use crate::disk::DiskFormat;
use crate::disk::vmdk::SparseVmdk;
use crate::disk::vmdk_reencode::{
    Base, ReencodeOptions, ReencodeProgress, ReencodeReport, reencode_stream_optimized,
};
use crate::error::{Error, Result};
use crate::io::{FileSource, ReadAt};
use crate::overlay::Run;
use crate::overlay::journal::BLOCK_BYTES;
use crate::settings::DiskImageUpdate;

/// A disk's new member: its bytes and what the descriptor must say of them.
pub struct Encoded {
    /// The bytes to store.
    pub data: Arc<dyn ReadAt>,
    /// What the Disk and its File say now.
    pub update: DiskImageUpdate,
    /// Grains copied verbatim, deflated, and omitted (zeros), for the summary.
    pub report: Option<ReencodeReport>,
}

/// The buffer between the encoder and the temporary file.
const WRITE_BUFFER: usize = 4 << 20;

/// Encodes the disk `cur` (which must have changes) into a temporary file in `folder`.
pub fn encode(
    cur: &Current,
    folder: &std::path::Path,
    options: &ReencodeOptions,
    progress: &mut dyn FnMut(ReencodeProgress),
) -> Result<Encoded> {
    let content = cur.content();
    let len = content.len();
    let old_len = cur.base.len();
    let capacity_bytes = Some(len);
    if cur.source.format == DiskFormat::Raw {
        // Stored as it reads; its holes stay holes in the package (zero chunks are skipped).
        let populated = Some(cur.data_bytes()?);
        return Ok(Encoded {
            data: content,
            update: DiskImageUpdate {
                stored_bytes: len,
                populated_bytes: populated,
                capacity_bytes,
                format_uri: None,
            },
            report: None,
        });
    }
    let vmdk = match cur.source.format {
        // A gzip-compressed member's grains are deflated anew from the flat content.
        DiskFormat::VmdkStreamOptimized | DiskFormat::VmdkSparse if cur.source.stored_is_image => {
            Some(SparseVmdk::open(cur.source.stored.clone())?)
        }
        _ => None,
    };
    let grain_bytes = match &vmdk {
        Some(v) => v.geometry().grain_sectors * 512,
        None => options.fresh.grain_sectors * 512,
    };
    let changed = ChangedGrains::of(
        &cur.overlay
            .as_ref()
            .map(|o| o.changed_blocks())
            .unwrap_or_default(),
        grain_bytes,
        old_len,
        len > old_len,
    );
    let base = vmdk.as_ref().map_or(Base::Other, Base::Vmdk);
    let file = tempfile::tempfile_in(folder).map_err(|e| {
        Error::io(
            format!("create a temporary file in {}", folder.display()),
            e,
        )
    })?;
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    let report = reencode_stream_optimized(
        base,
        &*content,
        &|g| changed.contains(g),
        &mut out,
        options,
        progress,
    )?;
    let file = finish(out, folder)?;
    let data: Arc<dyn ReadAt> = Arc::new(FileSource::from_file(file, folder)?);
    let format_uri = (cur.source.format != DiskFormat::VmdkStreamOptimized)
        .then(|| crate::sample::VMDK_STREAM_URI.to_string());
    Ok(Encoded {
        data,
        update: DiskImageUpdate {
            stored_bytes: report.bytes_written,
            populated_bytes: Some(report.populated_bytes),
            capacity_bytes,
            format_uri,
        },
        report: Some(report),
    })
}

/// Flushes the temporary file. It is not synced: it has no name and is only copied into the
/// package, whose new file the commit syncs; a sync here would write the whole disk to
/// storage once more for nothing.
fn finish(out: BufWriter<File>, folder: &std::path::Path) -> Result<File> {
    out.into_inner().map_err(|e| {
        Error::io(
            format!("write a temporary file in {}", folder.display()),
            e.into_error(),
        )
    })
}

/// The grains a disk's changed blocks touch, plus every grain past the old end (the disk
/// grew there), as sorted, merged ranges of grain numbers.
struct ChangedGrains {
    ranges: Vec<(u64, u64)>,
    /// The first grain that is not entirely inside the old disk.
    first_beyond: u64,
}

impl ChangedGrains {
    fn of(runs: &[Run], grain_bytes: u64, old_len: u64, grew: bool) -> ChangedGrains {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for r in runs {
            let start = r.first.saturating_mul(BLOCK_BYTES) / grain_bytes;
            let end = r.end.saturating_mul(BLOCK_BYTES).div_ceil(grain_bytes);
            match ranges.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => ranges.push((start, end)),
            }
        }
        ChangedGrains {
            ranges,
            first_beyond: if grew {
                old_len / grain_bytes
            } else {
                u64::MAX
            },
        }
    }

    fn contains(&self, grain: u64) -> bool {
        if grain >= self.first_beyond {
            return true;
        }
        let i = self.ranges.partition_point(|&(_, end)| end <= grain);
        self.ranges.get(i).is_some_and(|&(start, _)| start <= grain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::map::BlockState;

    fn run(first: u64, end: u64) -> Run {
        Run {
            first,
            end,
            state: BlockState::Data,
        }
    }

    #[test]
    fn changed_blocks_name_the_grains_they_touch_and_growth_is_changed() {
        // 64 KiB grains = 16 blocks; a disk of 10 grains.
        let g = ChangedGrains::of(
            &[run(0, 1), run(16, 17), run(40, 60)],
            64 << 10,
            10 << 16,
            true,
        );
        let hits: Vec<u64> = (0..12).filter(|&i| g.contains(i)).collect();
        assert_eq!(hits, vec![0, 1, 2, 3, 10, 11]);
        let grown = ChangedGrains::of(&[], 64 << 10, (10 << 16) + 1, true);
        assert!(!grown.contains(9));
        assert!(
            grown.contains(10),
            "the grain holding the old disk's partial end"
        );
        let same = ChangedGrains::of(&[], 64 << 10, (10 << 16) + 1, false);
        assert!(!same.contains(10), "no growth: only changed grains");
    }
}
