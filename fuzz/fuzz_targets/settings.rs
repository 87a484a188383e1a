//! Settings layer: any bytes written to any settings file of a fuzzer-chosen descriptor,
//! through the functions the editor (the fs layer's backend) calls. Never panics; an
//! accepted edit splices, the result parses as a descriptor, the file still exists and
//! reads back a value that is a fixed point (writing it again is no edit), and every other
//! settings file of the tree still exists. Writes to the descriptor itself go through
//! `check_replacement`: what it accepts is exactly the bytes written.
//!
//! Input: `[selector: u16 LE][value length: u16 LE][value][descriptor]` (a value length
//! past the end takes the rest, leaving no descriptor). The selector picks the settings
//! file (modulo the number of files, plus one for the descriptor itself); its top bit
//! makes the value a `mkdir networks/VALUE` instead (accepted: one more network, and one
//! more folder under `networks/`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovafs::ovf;
use ovafs::settings::{self, EntryKind};

fuzz_target!(|data: &[u8]| {
    let Some((selector, value, descriptor)) = split(data) else {
        return;
    };
    let Ok(desc) = ovf::parse(descriptor) else {
        return;
    };
    let entries = settings::tree(&desc);
    let values = settings::read_all(&desc);
    let files: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(files.len(), values.len(), "tree and read_all disagree");
    if selector & 0x8000 != 0 {
        return check_mkdir(&desc, value);
    }
    let pick = usize::from(selector) % (files.len() + 1);
    let Some(&path) = files.get(pick) else {
        return check_descriptor_replacement(&desc, value);
    };
    let current = settings::read(&desc, path).expect("a listed file reads");
    assert!(
        values.iter().any(|(p, v)| p == path && *v == current),
        "read and read_all disagree on {path}"
    );
    let Ok(edits) = settings::write(&desc, path, value) else {
        return;
    };
    if edits.is_empty() {
        return;
    }
    let new_bytes = ovf::splice(&desc.bytes, &edits).expect("accepted edits splice");
    let new = ovf::parse(&new_bytes).expect("an accepted edit leaves a descriptor that parses");
    let back = settings::read(&new, path).expect("the edited file still reads");
    let again = settings::write(&new, path, back.as_bytes()).expect("the read-back value is accepted");
    assert!(again.is_empty(), "{path}: the read-back value {back:?} is not a fixed point");
    let after: Vec<String> = settings::tree(&new).into_iter().map(|e| e.path).collect();
    for f in &files {
        assert!(after.iter().any(|p| p == f), "editing {path} removed {f}");
    }
});

/// Splits the input into (selector, value, descriptor bytes).
fn split(data: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let (head, rest) = data.split_at_checked(4)?;
    let selector = u16::from_le_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_le_bytes([head[2], head[3]])).min(rest.len());
    let (value, descriptor) = rest.split_at(len);
    Some((selector, value, descriptor))
}

/// `mkdir networks/VALUE`: accepted means the network is there after the edit.
fn check_mkdir(desc: &ovf::Descriptor, value: &[u8]) {
    let Ok(name) = std::str::from_utf8(value) else {
        return;
    };
    let path = format!("networks/{name}");
    let Ok(edits) = settings::mkdir(desc, &path) else {
        return;
    };
    let new_bytes = ovf::splice(&desc.bytes, &edits).expect("accepted edits splice");
    let new = ovf::parse(&new_bytes).expect("an added network leaves a descriptor that parses");
    assert_eq!(new.networks.len(), desc.networks.len() + 1, "mkdir {path}");
    let network_dirs = |d: &ovf::Descriptor| {
        settings::tree(d)
            .iter()
            .filter(|e| e.kind == EntryKind::Dir && e.path.matches('/').count() == 1)
            .filter(|e| e.path.starts_with("networks/"))
            .count()
    };
    assert_eq!(
        network_dirs(&new),
        network_dirs(desc) + 1,
        "mkdir {path}: no new folder under networks/"
    );
}

/// The descriptor file itself, written whole: accepted bytes are the new descriptor.
fn check_descriptor_replacement(desc: &ovf::Descriptor, value: &[u8]) {
    let members: Vec<&str> = desc.files.iter().map(|f| f.href.value.as_str()).collect();
    if let Ok(new) = settings::check_replacement(desc, value, &members) {
        assert_eq!(&*new.bytes, value, "check_replacement changed the bytes");
    }
}
