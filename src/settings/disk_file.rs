//! Keeping the descriptor true to a disk whose image was written again (a writable disk's
//! changes committed as a new stream-optimized VMDK): the File's `ovf:size`, the Disk's
//! `ovf:populatedSize`, `ovf:capacity` and `ovf:format`.
//!
//! Like every settings edit, the result is a splice of the original text (every other byte
//! stays) that is parsed again and checked before it is handed on ([`Edited`]). A capacity is
//! written in the Disk's own `ovf:capacityAllocationUnits` when it is a whole number of them,
//! else in bytes (and the units attribute then says `byte`). What cannot be kept true is
//! refused: a capacity given by a `${property}` (its value is chosen at deployment), a File
//! split in chunks (the new image is one member), a Disk without a File.

use super::xmlview::View;
use super::{Edited, SettingError, verify};
use crate::ovf::{self, Descriptor, Edit, Spanned};

/// What a disk's new image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskImageUpdate {
    /// Bytes of the new file as stored in the package (the File's `ovf:size`).
    pub stored_bytes: u64,
    /// Bytes of data the image holds (`ovf:populatedSize`), when known.
    pub populated_bytes: Option<u64>,
    /// The disk's capacity in bytes, when it changed (a disk grown with `truncate -s`).
    pub capacity_bytes: Option<u64>,
    /// The image format URI (`ovf:format`), when it changed (a VHD committed as VMDK).
    pub format_uri: Option<String>,
}

/// The edits that make `desc` describe `update` as the image of Disk `disk_id`.
pub fn update_disk_image(
    desc: &Descriptor,
    disk_id: &str,
    update: &DiskImageUpdate,
) -> Result<Edited, SettingError> {
    let setting = format!("disk {disk_id}");
    let refuse = |reason: &str| SettingError::Unsupported {
        setting: setting.clone(),
        reason: reason.to_string(),
    };
    let disk = desc
        .disks
        .iter()
        .find(|d| d.disk_id.value == disk_id)
        .ok_or_else(|| SettingError::NotFound {
            path: setting.clone(),
        })?;
    let file_id = disk
        .file_ref
        .as_ref()
        .ok_or_else(|| refuse("the Disk has no File"))?;
    let file = desc
        .file(&file_id.value)
        .ok_or_else(|| refuse("its File is not in the References"))?;
    if file.chunk_size.is_some() {
        return Err(refuse(
            "its File is split in chunks; the new image is one file",
        ));
    }
    let view = View::new(desc)?;
    let file_node = element(&view, file.element, &setting)?;
    let disk_node = element(&view, disk.element, &setting)?;
    let mut edits = Vec::new();
    set_number(
        &view,
        file_node,
        file.size.as_ref(),
        "size",
        update.stored_bytes,
        &mut edits,
    );
    if let Some(old) = &file.compression
        && old.value != "identity"
        && let Some(edit) = view.remove_attr(file_node, old.span)
    {
        // The new image is stored as it is.
        edits.push(edit);
    }
    if let Some(populated) = update.populated_bytes {
        let current = disk.populated_size.as_ref();
        set_number(
            &view,
            disk_node,
            current,
            "populatedSize",
            populated,
            &mut edits,
        );
    }
    if let Some(capacity) = update.capacity_bytes
        && disk.capacity_bytes != Some(capacity)
    {
        capacity_edits(&view, disk_node, disk, capacity, &setting, &mut edits)?;
    }
    if let Some(uri) = &update.format_uri
        && disk.format_uri.as_ref().is_none_or(|f| &f.value != uri)
    {
        let (name, decl) = view.ovf_attr_name(disk_node, "format");
        let existing = disk.format_uri.as_ref().map(|f| f.span);
        edits.push(view.set_attr(disk_node, existing, &name, &decl, uri));
    }
    if edits.is_empty() {
        return Ok(Edited::unchanged());
    }
    let want = update.clone();
    let id = disk_id.to_string();
    verify(desc, edits, move |ctx| {
        check_result(ctx.descriptor, &id, &want)
    })
}

/// The node of the element at `span`.
fn element(view: &View<'_>, span: ovf::Span, setting: &str) -> Result<usize, SettingError> {
    view.find(span)
        .ok_or_else(|| SettingError::Internal(format!("{setting}: element not found")))
}

/// Sets the OVF attribute `local` of `node` to `value` unless it already says so.
fn set_number(
    view: &View<'_>,
    node: usize,
    current: Option<&Spanned<u64>>,
    local: &str,
    value: u64,
    edits: &mut Vec<Edit>,
) {
    if current.is_some_and(|c| c.value == value) {
        return;
    }
    let (name, decl) = view.ovf_attr_name(node, local);
    edits.push(view.set_attr(
        node,
        current.map(|c| c.span),
        &name,
        &decl,
        &value.to_string(),
    ));
}

/// The edits that make the Disk's capacity `bytes`: in its own units when they divide it,
/// else in bytes.
fn capacity_edits(
    view: &View<'_>,
    node: usize,
    disk: &ovf::DiskDef,
    bytes: u64,
    setting: &str,
    edits: &mut Vec<Edit>,
) -> Result<(), SettingError> {
    if disk
        .capacity_raw
        .as_ref()
        .is_some_and(|c| c.value.contains("${"))
    {
        return Err(SettingError::Unsupported {
            setting: setting.to_string(),
            reason: "its capacity is a property, chosen at deployment".into(),
        });
    }
    let units = disk.capacity_units.as_ref();
    let factor = units
        .map_or(Ok(1), |u| ovf::units::byte_factor(&u.value))
        .unwrap_or(1);
    let (value, new_units) = if factor > 1 && bytes.is_multiple_of(factor) {
        (bytes / factor, None)
    } else {
        (bytes, units.filter(|_| factor != 1).map(|u| u.span))
    };
    let (name, decl) = view.ovf_attr_name(node, "capacity");
    let existing = disk.capacity_raw.as_ref().map(|c| c.span);
    edits.push(view.set_attr(node, existing, &name, &decl, &value.to_string()));
    if let Some(span) = new_units {
        edits.push(Edit {
            span,
            replacement: "byte".into(),
        });
    }
    Ok(())
}

/// Whether the parsed result says what was asked.
fn check_result(desc: &Descriptor, disk_id: &str, want: &DiskImageUpdate) -> Result<(), String> {
    let disk = desc
        .disks
        .iter()
        .find(|d| d.disk_id.value == disk_id)
        .ok_or("the Disk is gone")?;
    let file = disk
        .file_ref
        .as_ref()
        .and_then(|f| desc.file(&f.value))
        .ok_or("the File is gone")?;
    if file.size.as_ref().map(|s| s.value) != Some(want.stored_bytes) {
        return Err("the File's size did not change".into());
    }
    if want.populated_bytes.is_some()
        && disk.populated_size.as_ref().map(|s| s.value) != want.populated_bytes
    {
        return Err("the populated size did not change".into());
    }
    if want.capacity_bytes.is_some() && disk.capacity_bytes != want.capacity_bytes {
        return Err("the capacity did not change".into());
    }
    if let Some(uri) = &want.format_uri
        && disk.format_uri.as_ref().map(|f| &f.value) != Some(uri)
    {
        return Err("the format did not change".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIPTOR: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
    <File ovf:href="disk1.vmdk" ovf:id="file1" ovf:size="1000"/>
    <File ovf:href="disk2.vmdk.gz" ovf:id="file2" ovf:compression="gzip"/>
  </References>
  <DiskSection>
    <Info>Disks</Info>
    <Disk ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="d1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" ovf:populatedSize="500"/>
    <Disk ovf:capacity="${size}" ovf:diskId="d2" ovf:fileRef="file2"/>
  </DiskSection>
  <VirtualSystem ovf:id="vm">
    <Info>A VM</Info>
    <ProductSection>
      <Info>Product</Info>
      <Property ovf:key="size" ovf:type="uint64" ovf:value="1073741824"/>
    </ProductSection>
    <VirtualHardwareSection>
      <Info>Hardware</Info>
      <Item>
        <rasd:ElementName>1 CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#;

    fn parsed() -> Descriptor {
        ovf::parse(DESCRIPTOR.as_bytes()).unwrap()
    }

    fn update(stored: u64) -> DiskImageUpdate {
        DiskImageUpdate {
            stored_bytes: stored,
            populated_bytes: None,
            capacity_bytes: None,
            format_uri: None,
        }
    }

    fn new_text(edited: &Edited) -> String {
        String::from_utf8(edited.descriptor.as_ref().unwrap().bytes.to_vec()).unwrap()
    }

    #[test]
    fn the_same_values_change_nothing() {
        let mut same = update(1000);
        same.populated_bytes = Some(500);
        same.capacity_bytes = Some(1 << 30);
        let edited = update_disk_image(&parsed(), "d1", &same).unwrap();
        assert!(edited.edits.is_empty() && edited.descriptor.is_none());
    }

    #[test]
    fn sizes_are_spliced_and_everything_else_stays() {
        let mut u = update(123_456);
        u.populated_bytes = Some(65_536);
        let edited = update_disk_image(&parsed(), "d1", &u).unwrap();
        let text = new_text(&edited);
        let expected = DESCRIPTOR
            .replace(r#"ovf:size="1000""#, r#"ovf:size="123456""#)
            .replace(r#"ovf:populatedSize="500""#, r#"ovf:populatedSize="65536""#);
        assert_eq!(text, expected);
    }

    #[test]
    fn a_grown_capacity_keeps_its_units_when_it_can() {
        let mut u = update(1000);
        u.capacity_bytes = Some(3 << 30);
        let text = new_text(&update_disk_image(&parsed(), "d1", &u).unwrap());
        assert!(text.contains(r#"ovf:capacity="3" ovf:capacityAllocationUnits="byte * 2^30""#));
        u.capacity_bytes = Some((3 << 30) + 512);
        let edited = update_disk_image(&parsed(), "d1", &u).unwrap();
        let d = edited.descriptor.as_ref().unwrap();
        assert_eq!(d.disks[0].capacity_bytes, Some((3 << 30) + 512));
        assert!(
            new_text(&edited)
                .contains(r#"ovf:capacity="3221225984" ovf:capacityAllocationUnits="byte""#)
        );
    }

    #[test]
    fn missing_attributes_are_added_and_compression_removed() {
        let mut u = update(4096);
        u.populated_bytes = Some(2048);
        u.format_uri = Some(
            "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized".into(),
        );
        let edited = update_disk_image(&parsed(), "d2", &u).unwrap();
        let d = edited.descriptor.as_ref().unwrap();
        let file = d.file("file2").unwrap();
        assert_eq!(file.size.as_ref().map(|s| s.value), Some(4096));
        assert!(file.compression.is_none());
        assert_eq!(
            d.disks[1].populated_size.as_ref().map(|s| s.value),
            Some(2048)
        );
        assert!(d.disks[1].format_uri.is_some());
    }

    #[test]
    fn what_cannot_stay_true_is_refused() {
        let mut u = update(1);
        u.capacity_bytes = Some(2 << 30);
        let e = update_disk_image(&parsed(), "d2", &u).unwrap_err();
        assert!(e.to_string().contains("property"), "{e}");
        let e = update_disk_image(&parsed(), "nope", &update(1)).unwrap_err();
        assert!(matches!(e, SettingError::NotFound { .. }), "{e}");
        let chunked = DESCRIPTOR.replace(
            r#"ovf:size="1000""#,
            r#"ovf:size="1000" ovf:chunkSize="512""#,
        );
        let d = ovf::parse(chunked.as_bytes()).unwrap();
        let e = update_disk_image(&d, "d1", &update(5)).unwrap_err();
        assert!(e.to_string().contains("chunks"), "{e}");
    }
}
