//! ovafs: mount an OVF appliance (OVA archive or unpacked OVF package) as a directory.
//!
//! Layers, each using only the ones below it (see the README for the ranked goals):
//! `cli` → `fs` → `editor`, `integrity` → `settings` → `overlay` → `commit` → `verify` → `appliance` →
//! `node` → `package` → `disk` → `cache` → `ovf` → `archive` → `io` → `error`.

#![deny(unsafe_code)]
#![warn(clippy::unwrap_used)]

pub mod appliance;
pub mod archive;
pub mod cache;
pub mod cli;
pub mod commit;
pub mod deploy;
pub mod disk;
pub mod editor;
pub mod error;
pub mod fs;
pub mod guest;
pub mod integrity;
pub mod io;
pub mod logging;
pub mod node;
pub mod overlay;
pub mod ovf;
pub mod package;
pub mod roff;
pub mod sample;
pub mod settings;
pub mod units;
pub mod verify;
pub mod writable;
