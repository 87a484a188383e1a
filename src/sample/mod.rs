//! Sample appliances built by ovafs itself: for `ovafs demo` and as test fixtures.
//!
//! A sample is an OVF 1.0 descriptor (one virtual system with CPUs, memory, a NIC and its
//! network, a product section with a property), a SHA-256 manifest, and disk images, packed
//! as a ustar OVA in the order the OVF specification asks for (descriptor, manifest, files
//! in References order).

pub mod bootsector;

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Format URI of stream-optimized VMDK disks.
pub const VMDK_STREAM_URI: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// Format URI of hosted sparse VMDK disks.
pub const VMDK_SPARSE_URI: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#sparse";

/// One disk of a sample appliance.
#[derive(Debug, Clone, Default)]
pub struct DiskSpec {
    /// File name of the image in the package (`disk1.vmdk`).
    pub href: String,
    /// Size of the image file in bytes.
    pub file_bytes: u64,
    /// Virtual capacity in bytes.
    pub capacity_bytes: u64,
    /// ovf:format URI.
    pub format_uri: String,
    /// `ovf:compression` of the File (`Some("gzip")`); `None` writes no attribute.
    pub compression: Option<String>,
}

/// What a sample appliance describes.
#[derive(Debug, Clone)]
pub struct ApplianceSpec {
    /// Virtual system id and name.
    pub name: String,
    /// Number of virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Network the NIC is attached to.
    pub network: String,
    /// Disks, in order.
    pub disks: Vec<DiskSpec>,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The OVF 1.0 descriptor for `spec`.
pub fn descriptor_xml(spec: &ApplianceSpec) -> String {
    let name = xml_escape(&spec.name);
    let net = xml_escape(&spec.network);
    let mut refs = String::new();
    let mut disks = String::new();
    let mut items = String::new();
    for (i, d) in spec.disks.iter().enumerate() {
        let n = i + 1;
        let compression = d
            .compression
            .as_ref()
            .map(|c| format!(" ovf:compression=\"{}\"", xml_escape(c)))
            .unwrap_or_default();
        let _ = writeln!(
            refs,
            "    <File{compression} ovf:href=\"{}\" ovf:id=\"file{n}\" ovf:size=\"{}\"/>",
            xml_escape(&d.href),
            d.file_bytes
        );
        let _ = writeln!(
            disks,
            "    <Disk ovf:capacity=\"{}\" ovf:diskId=\"vmdisk{n}\" ovf:fileRef=\"file{n}\" ovf:format=\"{}\"/>",
            d.capacity_bytes,
            xml_escape(&d.format_uri)
        );
        let _ = write!(
            items,
            r#"      <Item>
        <rasd:AddressOnParent>{i}</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk {n}</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk{n}</rasd:HostResource>
        <rasd:InstanceID>{}</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
"#,
            10 + n
        );
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Sample appliance built by ovafs -->
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
{refs}  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
{disks}  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="{net}">
      <Description>The {net} network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="36">
      <Info>The kind of installed guest operating system</Info>
      <Description>Linux</Description>
    </OperatingSystemSection>
    <ProductSection>
      <Info>Information about the installed software</Info>
      <Product>ovafs sample</Product>
      <Vendor>ovafs</Vendor>
      <Version>1.0</Version>
      <Property ovf:key="hostname" ovf:type="string" ovf:userConfigurable="true" ovf:value="sample">
        <Label>Host name</Label>
      </Property>
    </ProductSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-10</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>{cpus} virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>{mem}MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{mem}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
{items}      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>{net}</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#,
        cpus = spec.cpus,
        mem = spec.memory_mib,
    )
}

/// SHA-256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    Ok(hex(&h.finalize()))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A manifest in the canonical `SHA256(name)= hex` form for the files in `dir`.
pub fn manifest(dir: &Path, names: &[&str]) -> Result<String> {
    let mut out = String::new();
    for name in names {
        let _ = writeln!(out, "SHA256({name})= {}", sha256_file(&dir.join(name))?);
    }
    Ok(out)
}

/// Packs `names` (files in `dir`) into a ustar archive at `ova`, in the order given.
pub fn write_ova(ova: &Path, dir: &Path, names: &[&str]) -> Result<()> {
    let out = File::create(ova).map_err(|e| Error::io(format!("create {}", ova.display()), e))?;
    let mut builder = tar::Builder::new(BufWriter::new(out));
    builder.mode(tar::HeaderMode::Deterministic);
    for name in names {
        let path = dir.join(name);
        let mut f =
            File::open(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let len = f.metadata().map_err(|e| Error::io("stat", e))?.len();
        let mut header = tar::Header::new_ustar();
        header
            .set_path(name)
            .map_err(|e| Error::io(format!("tar name {name}"), e))?;
        header.set_size(len);
        header.set_mode(0o644);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        header.set_cksum();
        builder
            .append(&header, &mut f)
            .map_err(|e| Error::io(format!("pack {name}"), e))?;
    }
    let mut w = builder
        .into_inner()
        .map_err(|e| Error::io("finish archive", e))?;
    w.flush().map_err(|e| Error::io("write archive", e))?;
    Ok(())
}

/// A sparse image held as a few chunks of data over zeros: lets the demo describe a large
/// disk without allocating it.
pub struct SparseImage {
    size: u64,
    chunks: Vec<(u64, Vec<u8>)>,
}

impl SparseImage {
    /// An all-zero image of `size` bytes.
    pub fn new(size: u64) -> Self {
        SparseImage {
            size,
            chunks: Vec::new(),
        }
    }

    /// Places `data` at `offset` (chunks must not overlap; later chunks win if they do).
    pub fn put(&mut self, offset: u64, data: &[u8]) -> &mut Self {
        self.chunks.push((offset, data.to_vec()));
        self
    }
}

impl crate::io::ReadAt for SparseImage {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = crate::io::clamp_len(offset, buf.len(), self.size);
        let buf = &mut buf[..n];
        buf.fill(0);
        let end = offset + n as u64;
        for (start, data) in &self.chunks {
            let chunk_end = start.saturating_add(data.len() as u64);
            let (from, to) = (offset.max(*start), end.min(chunk_end));
            if from < to {
                // OK to cast: both differences are below buf.len() or data.len().
                let dst = (from - offset) as usize..(to - offset) as usize;
                let src = (from - start) as usize..(to - start) as usize;
                buf[dst].copy_from_slice(&data[src]);
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_mentions_every_disk_and_setting() {
        let spec = ApplianceSpec {
            name: "demo & co".into(),
            cpus: 2,
            memory_mib: 1024,
            network: "VM Network".into(),
            disks: vec![
                DiskSpec {
                    href: "d1.vmdk".into(),
                    file_bytes: 100,
                    capacity_bytes: 1 << 30,
                    format_uri: VMDK_STREAM_URI.into(),
                    compression: None,
                },
                DiskSpec {
                    href: "d2.img.gz".into(),
                    compression: Some("gzip".into()),
                    ..DiskSpec::default()
                },
            ],
        };
        let xml = descriptor_xml(&spec);
        assert!(xml.contains("ovf:href=\"d1.vmdk\""));
        assert!(xml.contains("<File ovf:compression=\"gzip\" ovf:href=\"d2.img.gz\""));
        assert_eq!(xml.matches("ovf:compression").count(), 1);
        assert!(xml.contains("ovf:capacity=\"1073741824\""));
        assert!(xml.contains("<rasd:VirtualQuantity>1024</rasd:VirtualQuantity>"));
        assert!(xml.contains("demo &amp; co"));
    }

    #[test]
    fn sparse_image_reads_chunks_over_zeros() {
        use crate::io::ReadAt;
        let mut img = SparseImage::new(100);
        img.put(10, &[1, 2, 3]).put(98, &[9, 9, 9]);
        let mut buf = [7u8; 8];
        assert_eq!(img.read_at(8, &mut buf).unwrap(), 8);
        assert_eq!(buf, [0, 0, 1, 2, 3, 0, 0, 0]);
        assert_eq!(img.read_at(97, &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], &[0, 9, 9]);
    }
}
