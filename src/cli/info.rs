//! `ovafs info`: a summary of an appliance. PLACEHOLDER.

use std::path::Path;

use crate::error::Result;

/// Runs `ovafs info`.
pub fn run(source: &Path, _json: bool) -> Result<i32> {
    crate::logging::init_stderr(false);
    let a = crate::appliance::Appliance::open(source)?;
    println!("{} disks", a.disks.len());
    Ok(0)
}
