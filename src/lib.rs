//! ovafs: mount an OVF appliance (OVA archive or unpacked OVF package) as a directory.
//!
//! Layers, each using only the ones below it (see the README for the ranked goals):
//! `cli` → `fs` → `appliance` → `disk` / `package` → `cache`, `ovf`, `archive` → `io`, `error`.

#![deny(unsafe_code)]
#![warn(clippy::unwrap_used)]

pub mod archive;
pub mod cache;
pub mod disk;
pub mod error;
pub mod io;
pub mod ovf;
pub mod package;
