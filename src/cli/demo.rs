//! `ovafs demo`. PLACEHOLDER.

use crate::error::{Error, Result};

/// Runs `ovafs demo`.
pub fn run() -> Result<i32> {
    Err(Error::usage("demo is not built yet"))
}
