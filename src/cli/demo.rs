//! `ovafs demo`: build a sample appliance with ovafs's own writers, mount it, and show what
//! to try. Unmounts and removes everything on Ctrl-C.
//!
//! The sample disk is a 256 MiB stream-optimized VMDK holding a boot sector that prints a
//! message stored 200 MiB into the disk, so booting the flat image with qemu proves the
//! whole path: tar member → VMDK grains → FUSE → hypervisor.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use super::mount;
use super::options::MountConfig;
use crate::disk::vmdk_writer::{StreamWriterOptions, write_stream_optimized};
use crate::error::{Error, Result};
use crate::sample::{self, ApplianceSpec, DiskSpec, SparseImage, bootsector};

/// Virtual size of the demo disk.
const DISK_BYTES: u64 = 256 << 20;
/// Sector holding the message the boot sector prints (200 MiB into the disk).
const MESSAGE_LBA: u64 = 409_600;

/// Runs `ovafs demo`.
pub fn run() -> Result<i32> {
    crate::logging::init_stderr(false);
    let work = tempfile::Builder::new()
        .prefix("ovafs-demo-")
        .tempdir()
        .map_err(|e| Error::io("cannot create a temporary folder", e))?;
    let ova = build_sample(work.path())?;
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).map_err(|e| Error::io("cannot create the mount point", e))?;
    let mut config = MountConfig::new(ova.clone(), mnt.clone());
    config.foreground = true;
    let code = mount::serve(&config, |_| {
        print_instructions(&ova, &mnt);
        Ok(())
    })?;
    println!("Unmounted; removing {}.", work.path().display());
    Ok(code)
}

/// Writes demo.ovf, demo.mf, demo-disk1.vmdk and packs them as demo.ova in `dir`.
fn build_sample(dir: &Path) -> Result<std::path::PathBuf> {
    let mut image = SparseImage::new(DISK_BYTES);
    image.put(0, &bootsector::boot_sector(MESSAGE_LBA)).put(
        MESSAGE_LBA * 512,
        &bootsector::message_sector(
            "Hello from ovafs: this line was read 200 MiB into the flat disk,\r\n\
             decoded from stream-optimized VMDK grains inside the OVA.\r\n",
        ),
    );
    let disk_name = "demo-disk1.vmdk";
    let disk_path = dir.join(disk_name);
    let out = File::create(&disk_path)
        .map_err(|e| Error::io(format!("create {}", disk_path.display()), e))?;
    let opts = StreamWriterOptions {
        extent_file_name: disk_name.into(),
        ..Default::default()
    };
    let summary = write_stream_optimized(&image, &mut BufWriter::new(out), &opts)?;
    let spec = ApplianceSpec {
        name: "demo".into(),
        cpus: 2,
        memory_mib: 1024,
        network: "VM Network".into(),
        disks: vec![DiskSpec {
            href: disk_name.into(),
            file_bytes: summary.bytes_written,
            capacity_bytes: DISK_BYTES,
            format_uri: sample::VMDK_STREAM_URI.into(),
            compression: None,
        }],
    };
    std::fs::write(dir.join("demo.ovf"), sample::descriptor_xml(&spec))
        .map_err(|e| Error::io("write demo.ovf", e))?;
    let manifest = sample::manifest(dir, &["demo.ovf", disk_name])?;
    std::fs::write(dir.join("demo.mf"), manifest).map_err(|e| Error::io("write demo.mf", e))?;
    let ova = dir.join("demo.ova");
    sample::write_ova(&ova, dir, &["demo.ovf", "demo.mf", disk_name])?;
    Ok(ova)
}

fn print_instructions(ova: &Path, mnt: &Path) {
    let (o, m) = (ova.display(), mnt.display());
    println!(
        "ovafs demo: built {o}\n\
         (descriptor, SHA-256 manifest, and a 256 MiB stream-optimized VMDK)\n\
         \n\
         Mounted on {m}. Try, in another terminal:\n\
         \n  ls -l {m} {m}/disks\
         \n  cat {m}/demo.ovf\
         \n  sha256sum {m}/demo-disk1.vmdk; cat {m}/demo.mf\
         \n  qemu-img info {m}/disks/demo-disk1.raw\
         \n  ovafs info {o}\
         \n  qemu-system-x86_64 -nodefaults -display none -serial stdio -m 64 \\\
         \n      -device isa-debug-exit,iobase=0xf4,iosize=0x04 \\\
         \n      -drive file={m}/disks/demo-disk1.raw,format=raw,if=virtio,readonly=on\
         \n    (boots the flat disk: it prints a message read 200 MiB into it, then exits)\n\
         \nPress Ctrl-C here to unmount and clean up."
    );
}
