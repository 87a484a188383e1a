//! ext4-view's byte source over ovafs's [`ReadAt`]: a partition's window of a flat disk,
//! so reads of guest files go through the disk's decoded-grain cache like any other read.

use std::sync::Arc;

use ext4_view::Ext4Read;

use crate::io::ReadAt;

/// An [`Ext4Read`] that reads `source`.
pub struct SourceReader(pub Arc<dyn ReadAt>);

impl Ext4Read for SourceReader {
    /// Fills `dst` from `start_byte` or fails (ext4-view wants exactly `dst.len()` bytes);
    /// the error is ovafs's own, boxed, and taken back out by `super::worker::convert`.
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.read_exact_at(start_byte, dst).map_err(Box::new)?;
        Ok(())
    }
}
