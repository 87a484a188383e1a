//! Unit tests for the descriptor model: one small document per rule, asserting the exact
//! error kind, plus span and round-trip checks.

use super::*;

const NS: &str = r#"xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#;

/// A 1.x envelope around `body`.
fn env(body: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Envelope {NS}>\n{body}\n</Envelope>\n")
}

/// A minimal VirtualSystem with `hw` inside its VirtualHardwareSection and `extra` sections.
fn vs(hw: &str, extra: &str) -> String {
    format!(
        "<VirtualSystem ovf:id=\"vm\"><Info>x</Info><Name>the vm</Name>{extra}\
         <VirtualHardwareSection><Info>hw</Info>{hw}</VirtualHardwareSection></VirtualSystem>"
    )
}

fn item(iid: &str, rt: u16, more: &str) -> String {
    format!(
        "<Item>{more}<rasd:InstanceID>{iid}</rasd:InstanceID><rasd:ResourceType>{rt}</rasd:ResourceType></Item>"
    )
}

fn ok(doc: &str) -> Descriptor {
    match parse(doc.as_bytes()) {
        Ok(d) => d,
        Err(e) => panic!("{e}\n{doc}"),
    }
}

fn err(doc: impl AsRef<[u8]>) -> OvfError {
    match parse_descriptor(doc.as_ref()) {
        Ok(_) => panic!("parsed: {}", String::from_utf8_lossy(doc.as_ref())),
        Err(e) => e,
    }
}

#[test]
fn parse_wraps_the_layer_error() {
    let e = parse(b"<Foo/>").unwrap_err();
    assert!(matches!(
        e.layer_error(),
        Some(OvfError::NotAnEnvelope { .. })
    ));
}

/// The raw bytes of a span.
fn raw(d: &Descriptor, s: Span) -> &str {
    std::str::from_utf8(s.slice(&d.bytes).expect("span inside")).expect("utf-8")
}

/// A realistic 1.x descriptor (ovftool style) used by several tests.
fn sample() -> String {
    let hw = [
        "<System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemIdentifier>vm</vssd:VirtualSystemIdentifier><vssd:VirtualSystemType>vmx-11</vssd:VirtualSystemType></System>".to_string(),
        item("1", 3, "<rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>")
            .replace("</Item>", "<rasd:VirtualQuantity> 2 </rasd:VirtualQuantity></Item>"),
        item("2", 4, "<rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>1024MB of memory</rasd:ElementName>")
            .replace("</Item>", "<rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>"),
        item("3", 6, "<rasd:Address>0</rasd:Address><rasd:ElementName>SCSI Controller 0</rasd:ElementName>")
            .replace("</Item>", "<rasd:ResourceSubType>lsilogic</rasd:ResourceSubType></Item>"),
        "<Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>".to_string(),
        "<Item><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>VM &amp; Network</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>".to_string(),
    ]
    .concat();
    let os = r#"<OperatingSystemSection ovf:id="101" vmw:osType="otherLinux64Guest"><Info>os</Info><Description>Linux</Description></OperatingSystemSection>"#;
    let product = r#"<ProductSection ovf:class="com.example" ovf:instance="1"><Info>p</Info><Product>Appliance</Product><Vendor>Example &lt;Inc&gt;</Vendor><Version>1.0</Version>
      <Property ovf:key="hostname" ovf:type="string" ovf:userConfigurable="true" ovf:value="appliance" ovf:qualifiers="MinLen(1)"><Label>Host name</Label><Description>The host name</Description></Property>
      <Property ovf:key="root_password" ovf:type="string" ovf:password="true" ovf:userConfigurable="1"/>
    </ProductSection>"#;
    env(&format!(
        r#"<References>
    <File ovf:href="disk1.vmdk" ovf:id="file1" ovf:size="68096"/>
    <File ovf:id="file2" ovf:href="sub/extra.iso" ovf:compression="gzip" ovf:chunkSize="1000000"/>
  </References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:capacity="8" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" ovf:populatedSize="12345"/>
  </DiskSection>
  <NetworkSection><Info>nets</Info><Network ovf:name="VM &amp; Network"><Description>The net</Description></Network></NetworkSection>
  {}"#,
        vs(&hw, &format!("{os}{product}"))
    ))
}

#[test]
fn sample_descriptor_model() {
    let d = ok(&sample());
    assert_eq!(d.version, OvfVersion::V1);
    assert_eq!(d.files.len(), 2);
    let f = &d.files[0];
    assert_eq!(
        (f.id.value.as_str(), f.href.value.as_str()),
        ("file1", "disk1.vmdk")
    );
    assert_eq!(f.size.as_ref().map(|s| s.value), Some(68096));
    assert_eq!(raw(&d, f.size.as_ref().unwrap().span), "68096");
    assert_eq!(raw(&d, f.href.span), "disk1.vmdk");
    assert!(raw(&d, f.element).starts_with("<File ") && raw(&d, f.element).ends_with("/>"));
    let f2 = &d.files[1];
    assert_eq!(
        f2.compression.as_ref().map(|c| c.value.as_str()),
        Some("gzip")
    );
    assert_eq!(f2.chunk_size.as_ref().map(|c| c.value), Some(1_000_000));
    assert_eq!(f2.size, None);

    let disk = &d.disks[0];
    assert_eq!(disk.disk_id.value, "vmdisk1");
    assert_eq!(disk.capacity_bytes, Some(8 << 30));
    assert_eq!(raw(&d, disk.capacity_raw.as_ref().unwrap().span), "8");
    assert_eq!(
        disk.file_ref.as_ref().map(|f| f.value.as_str()),
        Some("file1")
    );
    assert_eq!(disk.populated_size.as_ref().map(|p| p.value), Some(12345));
    assert!(
        disk.format_uri
            .as_ref()
            .unwrap()
            .value
            .ends_with("#streamOptimized")
    );
    assert_eq!(d.disk("vmdisk1"), Some(disk));
    assert_eq!(d.file("file2"), Some(f2));

    assert_eq!(d.networks[0].name.value, "VM & Network");
    assert_eq!(raw(&d, d.networks[0].name.span), "VM &amp; Network");
    assert_eq!(d.networks[0].description.as_ref().unwrap().value, "The net");

    assert_eq!(d.systems.len(), 1);
    let s = &d.systems[0];
    assert_eq!(s.id.value, "vm");
    assert_eq!(s.name.as_ref().unwrap().value, "the vm");
    assert!(s.path.is_empty());
    let os = s.os.as_ref().unwrap();
    assert_eq!(os.id.value, 101);
    assert_eq!(raw(&d, os.id.span), "101");
    assert_eq!(os.vmw_os_type.as_ref().unwrap().value, "otherLinux64Guest");
    assert_eq!(os.description.as_ref().unwrap().value, "Linux");
    let cpus = s.cpus.as_ref().unwrap();
    assert_eq!(cpus.value, 2);
    assert_eq!(raw(&d, cpus.span), " 2 ");
    assert_eq!(s.memory_mib, Some(1024));
    let mem = s.memory.as_ref().unwrap();
    assert_eq!((mem.instance_id.as_str(), mem.quantity.value), ("2", 1024));
    assert_eq!(raw(&d, mem.quantity.span), "1024");
    assert_eq!(raw(&d, mem.units.as_ref().unwrap().span), "byte * 2^20");
    assert_eq!(s.nics.len(), 1);
    let nic = &s.nics[0];
    assert_eq!(nic.connection.as_ref().unwrap().value, "VM & Network");
    assert_eq!(
        raw(&d, nic.connection.as_ref().unwrap().span),
        "VM &amp; Network"
    );
    assert_eq!(nic.subtype.as_ref().unwrap().value, "VmxNet3");
    assert_eq!(
        nic.element_name.as_ref().unwrap().value,
        "Network adapter 1"
    );
    assert_eq!(nic.instance_id.value, "5");
    assert_eq!(s.disk_items.len(), 1);
    let di = &s.disk_items[0];
    let hr = di.host_resource.as_ref().unwrap();
    assert_eq!(
        (hr.kind, hr.id.as_str()),
        (HostResourceKind::Disk, "vmdisk1")
    );
    assert_eq!(raw(&d, hr.span), "ovf:/disk/vmdisk1");
    assert_eq!(di.parent.as_ref().unwrap().value, "3");
    assert_eq!(di.resource_type, Some(17));
    let sys = s.hardware[0].system.as_ref().unwrap();
    assert_eq!(sys.system_type.as_ref().unwrap().value, "vmx-11");
    assert_eq!(s.hardware[0].items.len(), 5);

    let product = s.product.as_ref().unwrap();
    assert_eq!(product.product.as_ref().unwrap().value, "Appliance");
    assert_eq!(product.vendor.as_ref().unwrap().value, "Example <Inc>");
    assert_eq!(s.properties.len(), 2);
    let p = &s.properties[0];
    assert_eq!(p.full_key(), "com.example.hostname.1");
    assert_eq!(p.value.as_ref().unwrap().value, "appliance");
    assert_eq!(raw(&d, p.value.as_ref().unwrap().span), "appliance");
    assert!(p.is_user_configurable() && !p.is_password());
    assert_eq!(p.qualifiers.as_ref().unwrap().value, "MinLen(1)");
    assert_eq!(p.label.as_ref().unwrap().value, "Host name");
    assert_eq!(p.type_name.as_ref().unwrap().value, "string");
    assert!(s.properties[1].is_password() && s.properties[1].is_user_configurable());
    assert_eq!(d.properties().count(), 2);
}

#[test]
fn no_edit_round_trip_is_byte_identical() {
    let doc = sample();
    let d = ok(&doc);
    assert_eq!(d.with_edits(&[]).unwrap(), doc.as_bytes());
    assert_eq!(&*d.bytes, doc.as_bytes());
}

#[test]
fn splicing_new_values_changes_only_those_bytes() {
    let doc = sample();
    let d = ok(&doc);
    let s = &d.systems[0];
    let edits = [
        Edit {
            span: s.memory.as_ref().unwrap().quantity.span,
            replacement: "4096".into(),
        },
        Edit {
            span: s.properties[0].value.as_ref().unwrap().span,
            replacement: edit::escape_attr("a\"b&c").into_owned(),
        },
        Edit {
            span: s.nics[0].connection.as_ref().unwrap().span,
            replacement: edit::escape_text("Other <net>").into_owned(),
        },
    ];
    let new = d.with_edits(&edits).unwrap();
    let d2 = parse(&new).unwrap();
    let s2 = &d2.systems[0];
    assert_eq!(s2.memory_mib, Some(4096));
    assert_eq!(s2.properties[0].value.as_ref().unwrap().value, "a\"b&c");
    assert_eq!(s2.nics[0].connection.as_ref().unwrap().value, "Other <net>");
    // Everything before the first edit is untouched.
    let first = edits.iter().map(|e| e.span.start).min().unwrap();
    assert_eq!(&new[..first], &doc.as_bytes()[..first]);
    assert!(matches!(
        d.with_edits(&[Edit {
            span: Span::new(0, doc.len() + 1),
            replacement: String::new()
        }])
        .unwrap_err()
        .layer_error(),
        Some(OvfError::BadEdit { .. })
    ));
}

#[test]
fn utf8_bom_is_accepted_and_spans_index_the_original_bytes() {
    let mut bytes = vec![0xEF, 0xBB, 0xBF];
    bytes.extend(sample().into_bytes());
    let d = parse(&bytes).unwrap();
    assert_eq!(raw(&d, d.files[0].href.span), "disk1.vmdk");
    assert_eq!(d.with_edits(&[]).unwrap(), bytes);
}

#[test]
fn crlf_documents_parse_with_exact_spans() {
    let doc = sample().replace('\n', "\r\n");
    let d = ok(&doc);
    assert_eq!(raw(&d, d.systems[0].cpus.as_ref().unwrap().span), " 2 ");
    assert_eq!(d.with_edits(&[]).unwrap(), doc.as_bytes());
}

#[test]
fn utf16_is_refused_as_unsupported_encoding() {
    let text = sample();
    let mut le = vec![0xFF, 0xFE];
    le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    let mut be = vec![0xFE, 0xFF];
    be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
    let no_bom: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    for (bytes, enc) in [(le, "UTF-16LE"), (be, "UTF-16BE"), (no_bom, "UTF-16LE")] {
        match err(bytes) {
            OvfError::UnsupportedEncoding { encoding } => assert_eq!(encoding, enc),
            e => panic!("{e:?}"),
        }
    }
}

#[test]
fn declared_non_utf8_encoding() {
    // XenServer declares utf-16 and writes UTF-8: accepted.
    let doc = sample().replace("encoding=\"UTF-8\"", "encoding=\"utf-16\"");
    ok(&doc);
    // Latin-1 bytes under a Latin-1 declaration: refused as unsupported.
    let mut bytes = sample()
        .replace("encoding=\"UTF-8\"", "encoding='ISO-8859-1'")
        .replace("the vm", "the vm \u{1}")
        .into_bytes();
    let at = bytes.iter().position(|&b| b == 1).unwrap();
    bytes[at] = 0xE9;
    match err(&bytes) {
        OvfError::UnsupportedEncoding { encoding } => assert_eq!(encoding, "ISO-8859-1"),
        e => panic!("{e:?}"),
    }
    // The same bytes declared UTF-8 are invalid UTF-8 at that byte.
    let mut bytes = sample().replace("the vm", "the vm \u{1}").into_bytes();
    let at = bytes.iter().position(|&b| b == 1).unwrap();
    bytes[at] = 0xE9;
    assert!(matches!(err(&bytes), OvfError::InvalidUtf8 { position } if position == at));
}

#[test]
fn size_is_capped() {
    let mut big = sample().into_bytes();
    big.resize(MAX_DESCRIPTOR_BYTES as usize + 1, b' ');
    assert!(
        matches!(err(&big), OvfError::TooLarge { size, .. } if size == MAX_DESCRIPTOR_BYTES + 1)
    );
}

#[test]
fn doctype_is_refused_before_any_entity_is_used() {
    let xee = r#"<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///proc/self/comm">]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><VirtualSystem><Name>&xxe;</Name></VirtualSystem></Envelope>"#;
    assert!(matches!(err(xee), OvfError::Dtd { position: 22 }));
    let laughs = "<!DOCTYPE l [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]><l>&b;</l>";
    assert!(matches!(err(laughs), OvfError::Dtd { position: 0 }));
}

#[test]
fn malformed_xml_is_an_xml_error_with_a_position() {
    for doc in [
        env(&vs("", "")).replace("</VirtualSystem>", "</VirtualSystemX>"),
        env("<OpenTag>does not match <<ClosingTag>>"),
        format!("{}<Second/>", env(&vs("", ""))),
        format!("{}trailing text", env(&vs("", ""))),
        env(&vs("", "<Name>&undefined;</Name>")),
        env(&vs("", "")).replace("ovf:id=\"vm\"", "ovf:id=\"vm\" ovf:id=\"again\""),
        env(&vs("", "")).replace("<Name>", "<nope:Name>"),
        env(&vs("", "<Name>&#0;</Name>")),
        String::new(),
        "   ".to_string(),
    ] {
        match err(&doc) {
            OvfError::Xml { position, message } => {
                assert!(position <= doc.len(), "{position} {message}");
                assert!(!message.is_empty());
            }
            e => panic!("{e:?} for {doc}"),
        }
    }
}

#[test]
fn unclosed_elements_are_truncated() {
    let doc = env(&vs("", ""));
    let cut = &doc[..doc.find("</VirtualSystem>").unwrap()];
    match err(cut) {
        OvfError::Truncated { open_element } => assert_eq!(open_element, "VirtualSystem"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn depth_attributes_and_elements_are_capped() {
    let deep = format!("{}{}", "<a>".repeat(300), "</a>".repeat(300));
    assert!(matches!(err(deep), OvfError::TooDeep { depth: 257 }));
    let attrs: String = (0..300).map(|i| format!(" a{i}=\"x\"")).collect();
    assert!(matches!(
        err(format!("<Envelope{attrs}/>")),
        OvfError::TooManyAttributes { limit: 256, .. }
    ));
    // Also on elements of foreign namespaces that are not stored.
    assert!(matches!(
        err(env(&format!("<x:y xmlns:x=\"urn:x\"{attrs}/>"))),
        OvfError::TooManyAttributes { .. }
    ));
    let many = format!(
        "<Envelope {NS}>{}</Envelope>",
        "<a/>".repeat(xml::MAX_ELEMENTS)
    );
    assert!(matches!(err(many), OvfError::TooManyElements { .. }));
}

#[test]
fn foreign_subtrees_are_checked_but_not_stored() {
    let vbox = r#"<vbox:Machine xmlns:vbox="http://www.virtualbox.org/ovf/machine" ovf:required="false"><ovf:Info>m</ovf:Info><Hardware><CPU count="1"/></Hardware></vbox:Machine>"#;
    let d = ok(&env(&vs("", vbox)));
    assert_eq!(d.systems.len(), 1);
}

#[test]
fn root_must_be_an_ovf_envelope() {
    assert!(matches!(err("<Foo/>"), OvfError::NotAnEnvelope { root } if root == "Foo"));
    assert!(matches!(
        err("<Envelope xmlns=\"urn:other\"/>"),
        OvfError::UnsupportedNamespace { namespace } if namespace == "urn:other"
    ));
    assert!(matches!(
        err("<Envelope/>"),
        OvfError::UnsupportedNamespace { namespace } if namespace.is_empty()
    ));
    assert!(matches!(err(env("<References/>")), OvfError::NoContent));
}

#[test]
fn version_from_namespace() {
    let body = vs("", "");
    for (uri, v) in [
        ("http://schemas.dmtf.org/ovf/envelope/1", OvfVersion::V1),
        ("http://schemas.dmtf.org/ovf/envelope/1/", OvfVersion::V1),
        ("http://schemas.dmtf.org/ovf/envelope/2", OvfVersion::V2),
        ("http://schemas.dmtf.org/ovf/envelope", OvfVersion::Draft),
        ("http://schemas.dmtf.org/ovf/envelope/", OvfVersion::Draft),
        (
            "http://www.vmware.com/schema/ovf/1/envelope",
            OvfVersion::V0_9,
        ),
    ] {
        let doc = format!("<Envelope xmlns=\"{uri}\" xmlns:ovf=\"{uri}\">{body}</Envelope>");
        assert_eq!(ok(&doc).version, v, "{uri}");
    }
}

#[test]
fn ovf_0_9_sections_content_and_spellings() {
    let doc = r#"<?xml version='1.0' encoding='utf-8'?>
<ovf:Envelope xmlns:ovf="http://www.vmware.com/schema/ovf/1/envelope" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ovf:version="0.9">
  <ovf:References><ovf:File ovf:href="input.vmdk" ovf:id="file1" ovf:size="152576" /></ovf:References>
  <ovf:Section xsi:type="ovf:DiskSection_Type"><ovf:Info>d</ovf:Info>
    <ovf:Disk ovf:capacity="1073741824" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/specifications/vmdk.html#sparse" />
  </ovf:Section>
  <ovf:Section xsi:type="ovf:NetworkSection_Type"><ovf:Info>n</ovf:Info><ovf:Network ovf:name="bridged"/></ovf:Section>
  <ovf:Content ovf:id="v0.9" xsi:type="ovf:VirtualSystem_Type">
    <ovf:Info>A virtual machine</ovf:Info>
    <ovf:Section ovf:id="107" xsi:type="ovf:OperatingSystemSection_Type"><ovf:Info>os</ovf:Info></ovf:Section>
    <ovf:Section xsi:type="ovf:ProductSection_Type"><ovf:Info>p</ovf:Info>
      <ovf:Property ovf:key="k" ovf:type="string" ovf:defaultValue="dv" ovf:configurableByUser="true"/>
    </ovf:Section>
    <ovf:Section xsi:type="ovf:VirtualHardwareSection_Type"><ovf:Info>hw</ovf:Info>
      <ovf:Item><rasd:Caption>1 virtual CPU(s)</rasd:Caption><rasd:InstanceId>1</rasd:InstanceId><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></ovf:Item>
      <ovf:Item><rasd:InstanceId>2</rasd:InstanceId><rasd:ResourceType>4</rasd:ResourceType><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits><rasd:VirtualQuantity>8192</rasd:VirtualQuantity></ovf:Item>
      <ovf:Item><rasd:InstanceId>4</rasd:InstanceId><rasd:ResourceType>6</rasd:ResourceType></ovf:Item>
      <ovf:Item><rasd:Caption>disk1</rasd:Caption><rasd:InstanceId>7</rasd:InstanceId><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>/disk/vmdisk1</rasd:HostResource><rasd:Parent>4</rasd:Parent></ovf:Item>
      <ovf:Item><rasd:Caption>ethernet0</rasd:Caption><rasd:InstanceId>8</rasd:InstanceId><rasd:ResourceType>10</rasd:ResourceType><rasd:ResourceSubType>PCNet32</rasd:ResourceSubType><rasd:Connection>bridged</rasd:Connection></ovf:Item>
    </ovf:Section>
  </ovf:Content>
</ovf:Envelope>"#;
    let d = ok(doc);
    assert_eq!(d.version, OvfVersion::V0_9);
    assert_eq!(d.version_attr.as_ref().unwrap().value, "0.9");
    assert_eq!(d.disks[0].capacity_bytes, Some(1 << 30));
    assert_eq!(d.networks[0].name.value, "bridged");
    let s = &d.systems[0];
    assert_eq!(s.id.value, "v0.9");
    assert_eq!(s.os.as_ref().unwrap().id.value, 107);
    assert_eq!(s.cpus.as_ref().unwrap().value, 1);
    assert_eq!(s.memory_mib, Some(8192));
    assert_eq!(s.nics[0].element_name.as_ref().unwrap().value, "ethernet0");
    assert_eq!(
        s.disk_items[0].host_resource.as_ref().unwrap().id,
        "vmdisk1"
    );
    let p = &s.properties[0];
    assert_eq!(p.value.as_ref().unwrap().value, "dv");
    assert!(p.is_user_configurable());
}

#[test]
fn unqualified_ovf_elements_and_xs_name_sections() {
    // Open-OVF: prefixed root, unqualified children, `xs:name` as the section type.
    let doc = r#"<ovf:Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope" xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <References><File ovf:id="f" ovf:href="a.vmdk"/></References>
  <Section xs:name="ovf:DiskSection_Type"><Disk ovf:diskId="d" ovf:capacity="5" ovf:fileRef="f"/></Section>
  <Content ovf:id="vm" xs:name="ovf:VirtualSystem_Type"><Info>i</Info></Content>
</ovf:Envelope>"#;
    let d = ok(doc);
    assert_eq!(d.version, OvfVersion::Draft);
    assert_eq!(d.disks[0].capacity_bytes, Some(5));
    assert_eq!(d.systems[0].id.value, "vm");
}

#[test]
fn namespaces_are_matched_by_uri_not_prefix() {
    let a = ok(&sample());
    // Same document with other prefixes and rasd declared on each element.
    let b_doc = sample()
        .replace(
            "xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\" ",
            "",
        )
        .replace("<rasd:", "<r:")
        .replace("</rasd:", "</r:")
        .replace(
            "<Item>",
            "<Item xmlns:r=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\">",
        )
        .replace(" ovf:", " o:")
        .replace("xmlns:o=", "xmlns:ovf=")
        .replace("xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"", "xmlns:o=\"http://schemas.dmtf.org/ovf/envelope/1\" xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"");
    let b = ok(&b_doc);
    assert_eq!(b.systems[0].memory_mib, a.systems[0].memory_mib);
    assert_eq!(b.systems[0].nics.len(), 1);
    assert_eq!(b.systems[0].disk_items.len(), 1);
    assert_eq!(b.files.len(), 2);
    // A rasd-looking prefix bound to another URI is not rasd.
    let c_doc = sample().replace(
        "xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\"",
        "xmlns:rasd=\"urn:not-rasd\"",
    );
    assert!(matches!(
        err(c_doc),
        OvfError::MissingElement {
            child: "InstanceID",
            ..
        }
    ));
}

#[test]
fn ovf_2_storage_and_ethernet_port_items_with_xsd_uris() {
    let doc = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/2" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:epasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData.xsd" xmlns:sasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData">
  <References><File ovf:href="d.vmdk" ovf:id="file1"/></References>
  <DiskSection><Info>d</Info><Disk ovf:capacity="8589934592" ovf:diskId="vmdisk1" ovf:fileRef="file1"/></DiskSection>
  <VirtualSystem ovf:id="ubuntu"><Info>x</Info>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceType>20</rasd:ResourceType></Item>
      <StorageItem><sasd:Caption>disk1</sasd:Caption><sasd:HostResource>/disk/vmdisk1</sasd:HostResource><sasd:InstanceID>8</sasd:InstanceID><sasd:Parent>5</sasd:Parent><sasd:ResourceType>17</sasd:ResourceType></StorageItem>
      <EthernetPortItem><epasd:Caption>Ethernet adapter on 'NAT'</epasd:Caption><epasd:Connection>NAT</epasd:Connection><epasd:InstanceID>10</epasd:InstanceID><epasd:ResourceSubType>E1000</epasd:ResourceSubType><epasd:ResourceType>10</epasd:ResourceType></EthernetPortItem>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#;
    let d = ok(doc);
    assert_eq!(d.version, OvfVersion::V2);
    let s = &d.systems[0];
    assert_eq!(s.hardware[0].items[1].kind, ItemKind::StorageItem);
    assert_eq!(
        s.disk_items[0].element_name.as_ref().unwrap().value,
        "disk1"
    );
    assert_eq!(s.nics[0].connection.as_ref().unwrap().value, "NAT");
    assert_eq!(s.nics[0].subtype.as_ref().unwrap().value, "E1000");
}

#[test]
fn nested_collections_record_paths() {
    let inner = vs("", "").replace("ovf:id=\"vm\"", "ovf:id=\"inner-vm\"");
    let outer = vs("", "").replace("ovf:id=\"vm\"", "ovf:id=\"outer-vm\"");
    let doc = env(&format!(
        r#"<VirtualSystemCollection ovf:id="top"><Info>t</Info>
      <ProductSection><Info>p</Info><Product>Suite</Product><Property ovf:key="k" ovf:value="v"/></ProductSection>
      <VirtualSystemCollection ovf:id="child"><Info>c</Info>{inner}</VirtualSystemCollection>
      {outer}
    </VirtualSystemCollection>"#
    ));
    let d = ok(&doc);
    let ids: Vec<_> = d
        .systems
        .iter()
        .map(|s| (s.id.value.as_str(), s.path.clone()))
        .collect();
    assert_eq!(
        ids,
        [
            ("inner-vm", vec!["top".to_string(), "child".to_string()]),
            ("outer-vm", vec!["top".to_string()]),
        ]
    );
    assert_eq!(d.collections.len(), 2);
    assert_eq!(d.collections[1].path, ["top"]);
    assert_eq!(
        d.collections[0]
            .product
            .as_ref()
            .unwrap()
            .product
            .as_ref()
            .unwrap()
            .value,
        "Suite"
    );
    assert_eq!(d.properties().count(), 1);
}

#[test]
fn configurations_select_and_merge_items() {
    let hw = r#"<Item ovf:configuration="small"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
<Item ovf:configuration="big huge"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>8</rasd:VirtualQuantity></Item>
<Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
<Item ovf:configuration="big"><rasd:InstanceID>2</rasd:InstanceID><rasd:VirtualQuantity>4096</rasd:VirtualQuantity></Item>
<Item ovf:bound="max"><rasd:InstanceID>2</rasd:InstanceID><rasd:VirtualQuantity>9999</rasd:VirtualQuantity></Item>"#;
    let options = r#"<DeploymentOptionSection><Info>o</Info>
  <Configuration ovf:id="small"><Label>S</Label><Description>small</Description></Configuration>
  <Configuration ovf:id="big" ovf:default="true"><Label>B</Label><Description>big</Description></Configuration>
  <Configuration ovf:id="huge"><Label>H</Label><Description>huge</Description></Configuration>
</DeploymentOptionSection>"#;
    let product = r#"<ProductSection><Info>p</Info><Property ovf:key="size" ovf:value="m"><Value ovf:value="l" ovf:configuration="big"/></Property></ProductSection>"#;
    let d = ok(&env(&format!("{options}{}", vs(hw, product))));
    assert_eq!(d.default_configuration().unwrap().id.value, "big");
    let s = &d.systems[0];
    assert_eq!(s.cpus.as_ref().unwrap().value, 8);
    assert_eq!(s.memory_mib, Some(4096));
    let hw = &s.hardware[0];
    let small = hw.effective_items(Some("small"));
    assert_eq!(small.len(), 2);
    assert_eq!(small[0].text("VirtualQuantity").unwrap().value, "1");
    assert_eq!(small[1].text("VirtualQuantity").unwrap().value, "512");
    let big = hw.effective_items(Some("big"));
    assert_eq!(big[1].sources, [2, 3]);
    assert_eq!(big[1].resource_type(), Some(4));
    assert_eq!(hw.effective_items(None).len(), 1);
    let p = &s.properties[0];
    assert_eq!(p.value_for(Some("big")).unwrap().value, "l");
    assert_eq!(p.value_for(Some("small")).unwrap().value, "m");
    assert_eq!(d.configurations[0].label.as_ref().unwrap().value, "S");
}

#[test]
fn unknown_configuration_ids_are_refused() {
    let hw = r#"<Item ovf:configuration="nope"><rasd:InstanceID>1</rasd:InstanceID></Item>"#;
    assert!(matches!(err(env(&vs(hw, ""))), OvfError::UnknownConfiguration { id } if id == "nope"));
    let product = r#"<ProductSection><Info>p</Info><Property ovf:key="k"><Value ovf:value="l" ovf:configuration="x"/></Property></ProductSection>"#;
    assert!(
        matches!(err(env(&vs("", product))), OvfError::UnknownConfiguration { id } if id == "x")
    );
}

fn with_files(files: &str, disks: &str) -> String {
    env(&format!(
        "<References>{files}</References><DiskSection><Info>d</Info>{disks}</DiskSection>{}",
        vs("", "")
    ))
}

#[test]
fn file_rules() {
    assert!(matches!(
        err(with_files(r#"<File ovf:id="a" ovf:href="x"/><File ovf:id="a" ovf:href="y"/>"#, "")),
        OvfError::DuplicateFileId { id } if id == "a"
    ));
    assert!(matches!(
        err(with_files(r#"<File ovf:id="a" ovf:href="x"/><File ovf:id="b" ovf:href="x"/>"#, "")),
        OvfError::DuplicateHref { href } if href == "x"
    ));
    assert!(matches!(
        err(with_files(r#"<File ovf:id="a"/>"#, "")),
        OvfError::MissingAttribute {
            element: "File",
            attribute: "href",
            ..
        }
    ));
    assert!(matches!(
        err(with_files(r#"<File ovf:href="x"/>"#, "")),
        OvfError::MissingAttribute {
            element: "File",
            attribute: "id",
            ..
        }
    ));
    for bad in ["#SIZE#", "-1", "", "1.5", "99999999999999999999"] {
        let doc = with_files(
            &format!(r#"<File ovf:id="a" ovf:href="x" ovf:size="{bad}"/>"#),
            "",
        );
        assert!(
            matches!(
                err(&doc),
                OvfError::BadValue {
                    what: "File/@ovf:size",
                    ..
                }
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        err(with_files(
            r#"<File ovf:id="a" ovf:href="x" ovf:chunkSize="0"/>"#,
            ""
        )),
        OvfError::BadValue {
            what: "File/@ovf:chunkSize",
            ..
        }
    ));
}

#[test]
fn disk_rules() {
    let f = r#"<File ovf:id="f" ovf:href="x"/>"#;
    assert!(matches!(
        err(with_files(f, r#"<Disk ovf:diskId="d" ovf:capacity="1"/><Disk ovf:diskId="d" ovf:capacity="1"/>"#)),
        OvfError::DuplicateDiskId { disk_id } if disk_id == "d"
    ));
    assert!(matches!(
        err(with_files(f, r#"<Disk ovf:diskId="d" ovf:capacity="1" ovf:fileRef="g"/>"#)),
        OvfError::DiskFileRefUnknown { disk_id, file_ref } if disk_id == "d" && file_ref == "g"
    ));
    assert!(matches!(
        err(with_files(f, r#"<Disk ovf:diskId="d" ovf:capacity="1" ovf:parentRef="p"/>"#)),
        OvfError::DiskParentUnknown { parent_ref, .. } if parent_ref == "p"
    ));
    assert!(matches!(
        err(with_files(
            f,
            r#"<Disk ovf:diskId="a" ovf:capacity="1" ovf:parentRef="b"/><Disk ovf:diskId="b" ovf:capacity="1" ovf:parentRef="a"/>"#
        )),
        OvfError::DiskParentCycle { .. }
    ));
    assert!(matches!(
        err(with_files(
            f,
            r#"<Disk ovf:diskId="a" ovf:capacity="1" ovf:parentRef="a"/>"#
        )),
        OvfError::DiskParentCycle { .. }
    ));
    assert!(matches!(
        err(with_files(f, r#"<Disk ovf:capacity="1"/>"#)),
        OvfError::MissingAttribute {
            element: "Disk",
            attribute: "diskId",
            ..
        }
    ));
    // Blank disks, delta disks, empty oVirt-style refs, missing capacity (Ganeti).
    let d = ok(&with_files(
        f,
        r#"<Disk ovf:diskId="base" ovf:capacity="1" ovf:fileRef="f"/><Disk ovf:diskId="blank" ovf:capacity="128" ovf:capacityAllocationUnits="byte * 2^20"/><Disk ovf:diskId="child" ovf:capacity="1" ovf:parentRef="base" ovf:fileRef=""/><Disk ovf:diskId="nocap" ovf:parentRef=""/>"#,
    ));
    assert_eq!(d.disks[1].capacity_bytes, Some(128 << 20));
    assert_eq!(d.disks[1].file_ref, None);
    assert_eq!(d.disks[2].parent_ref.as_ref().unwrap().value, "base");
    assert_eq!(d.disks[2].file_ref, None);
    assert_eq!(
        (d.disks[3].capacity_bytes, d.disks[3].parent_ref.as_ref()),
        (None, None)
    );
}

#[test]
fn capacity_units_overflow_and_properties() {
    let cap = |c: &str, u: &str, extra: &str| {
        env(&format!(
            "<References/><DiskSection><Info>d</Info><Disk ovf:diskId=\"d\" ovf:capacity=\"{c}\"{u}/></DiskSection>{}",
            vs("", extra)
        ))
    };
    let units = |u: &str| format!(" ovf:capacityAllocationUnits=\"{u}\"");
    assert_eq!(
        ok(&cap("128", &units("byte * 2^30"), "")).disks[0].capacity_bytes,
        Some(128 << 30)
    );
    assert_eq!(
        ok(&cap("2", &units("GigaBytes"), "")).disks[0].capacity_bytes,
        Some(2 << 30)
    );
    assert!(matches!(
        err(cap("17179869184", &units("byte * 2^30"), "")),
        OvfError::CapacityOverflow { disk_id } if disk_id == "d"
    ));
    assert!(matches!(
        err(cap("1", &units("byte * 2^64"), "")),
        OvfError::CapacityOverflow { .. }
    ));
    assert!(matches!(
        err(cap("1", &units("furlongs"), "")),
        OvfError::UnknownUnits { units, .. } if units == "furlongs"
    ));
    assert!(matches!(
        err(cap("-5", "", "")),
        OvfError::BadValue {
            what: "Disk/@ovf:capacity",
            ..
        }
    ));
    // ${property}: resolved to the property default, then units applied.
    let prop = |attrs: &str| {
        format!(
            "<ProductSection ovf:class=\"c\"><Info>p</Info><Property ovf:key=\"disksize\" ovf:type=\"int\"{attrs}/></ProductSection>"
        )
    };
    let d = ok(&cap(
        "${disksize}",
        &units("byte * 2^30"),
        &prop(" ovf:value=\"5\""),
    ));
    assert_eq!(d.disks[0].capacity_bytes, Some(5 << 30));
    assert_eq!(
        d.disks[0].capacity_raw.as_ref().unwrap().value,
        "${disksize}"
    );
    // Full key works too.
    let d = ok(&cap("${c.disksize}", "", &prop(" ovf:value=\"5\"")));
    assert_eq!(d.disks[0].capacity_bytes, Some(5));
    // No default: unknown until deploy time.
    assert_eq!(
        ok(&cap("${disksize}", "", &prop(""))).disks[0].capacity_bytes,
        None
    );
    assert!(matches!(
        err(cap("${nope}", "", &prop(""))),
        OvfError::CapacityPropertyUnknown { property, .. } if property == "nope"
    ));
    assert!(matches!(
        err(cap("${disksize}", "", &prop(" ovf:value=\"big\""))),
        OvfError::BadValue {
            what: "Disk/@ovf:capacity",
            ..
        }
    ));
}

#[test]
fn item_rules() {
    let disk = r#"<References><File ovf:id="f" ovf:href="x"/></References><DiskSection><Info>d</Info><Disk ovf:diskId="d1" ovf:capacity="1" ovf:fileRef="f"/></DiskSection>"#;
    let with_hw = |hw: &str| env(&format!("{disk}{}", vs(hw, "")));
    let host = |h: &str| {
        item(
            "5",
            17,
            &format!("<rasd:HostResource>{h}</rasd:HostResource>"),
        )
    };
    ok(&with_hw(&host("ovf:/disk/d1")));
    ok(&with_hw(&host("ovf:/file/f")));
    assert!(matches!(
        err(with_hw(&host("ovf:/network/d1"))),
        OvfError::BadHostResource { instance_id, value } if instance_id == "5" && value == "ovf:/network/d1"
    ));
    assert!(matches!(
        err(with_hw(&host("ovf:/disk/d2"))),
        OvfError::HostResourceUnknown { value, .. } if value == "ovf:/disk/d2"
    ));
    assert!(matches!(
        err(with_hw(&host("ovf:/file/d1"))),
        OvfError::HostResourceUnknown { .. }
    ));
    assert!(matches!(
        err(with_hw(&item("5", 17, "<rasd:Parent>9</rasd:Parent>"))),
        OvfError::ItemParentUnknown { instance_id, parent } if instance_id == "5" && parent == "9"
    ));
    let cycle = [
        item("1", 6, "<rasd:Parent>2</rasd:Parent>"),
        item("2", 6, "<rasd:Parent>1</rasd:Parent>"),
    ]
    .concat();
    assert!(matches!(
        err(with_hw(&cycle)),
        OvfError::ItemParentCycle { .. }
    ));
    assert!(matches!(
        err(with_hw(&item("1", 6, "<rasd:Parent>1</rasd:Parent>"))),
        OvfError::ItemParentCycle { .. }
    ));
    assert!(matches!(
        err(with_hw(
            "<Item><rasd:ResourceType>3</rasd:ResourceType></Item>"
        )),
        OvfError::MissingElement {
            element: "Item",
            child: "InstanceID",
            ..
        }
    ));
    // A non-numeric InstanceID is fine (VirtualBox tdAppliance1-t7 "needs to work").
    ok(&with_hw(&item("%iid%", 4, "")));
    assert!(matches!(
        err(with_hw(&item("1", 3, "").replace(
            "</Item>",
            "<rasd:VirtualQuantity>two</rasd:VirtualQuantity></Item>"
        ))),
        OvfError::BadValue {
            what: "Processor VirtualQuantity",
            ..
        }
    ));
    assert!(matches!(
        err(with_hw(
            &item("1", 4, "<rasd:AllocationUnits>hertz</rasd:AllocationUnits>").replace(
                "</Item>",
                "<rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>"
            )
        )),
        OvfError::UnknownUnits {
            what: "memory AllocationUnits",
            ..
        }
    ));
    assert!(matches!(
        err(with_hw(&item("1", 4, "<rasd:AllocationUnits>byte * 2^40</rasd:AllocationUnits>").replace("</Item>", "<rasd:VirtualQuantity>99999999</rasd:VirtualQuantity></Item>"))),
        OvfError::QuantityOverflow { instance_id } if instance_id == "1"
    ));
    assert!(matches!(
        err(with_hw(
            &item("1", 4, "").replace("<Item>", "<Item ovf:required=\"maybe\">")
        )),
        OvfError::BadValue {
            what: "Item/@ovf:required",
            ..
        }
    ));
    // Memory not a whole number of MiB: quantity kept, MiB unknown.
    let d = ok(&with_hw(
        &item("1", 4, "<rasd:AllocationUnits>byte</rasd:AllocationUnits>").replace(
            "</Item>",
            "<rasd:VirtualQuantity>1000</rasd:VirtualQuantity></Item>",
        ),
    ));
    assert_eq!(d.systems[0].memory_mib, None);
    assert_eq!(d.systems[0].memory.as_ref().unwrap().quantity.value, 1000);
}

#[test]
fn os_id_must_be_a_u16() {
    let os = |id: &str| {
        env(&vs(
            "",
            &format!(
                "<OperatingSystemSection ovf:id=\"{id}\"><Info>o</Info></OperatingSystemSection>"
            ),
        ))
    };
    assert_eq!(ok(&os("94")).systems[0].os.as_ref().unwrap().id.value, 94);
    assert!(matches!(
        err(os("70000")),
        OvfError::BadValue {
            what: "OperatingSystemSection/@ovf:id",
            ..
        }
    ));
    assert!(matches!(
        err(env(&vs(
            "",
            "<OperatingSystemSection><Info>o</Info></OperatingSystemSection>"
        ))),
        OvfError::MissingAttribute {
            attribute: "id",
            ..
        }
    ));
}

#[test]
fn text_values_are_decoded_trimmed_and_span_the_content() {
    let doc = env(&vs("", "")).replace(
        "<Name>the vm</Name>",
        "<Name>\n  a &lt;b&gt; &#x4e2d; <![CDATA[<c>]]>\n</Name>",
    );
    let d = ok(&doc);
    let name = d.systems[0].name.as_ref().unwrap();
    assert_eq!(name.value, "a <b> 中 <c>");
    assert_eq!(
        raw(&d, name.span),
        "\n  a &lt;b&gt; &#x4e2d; <![CDATA[<c>]]>\n"
    );
    // A self-closing element has an empty value and an empty span at its "/>".
    let d = ok(&env(&vs("", "")).replace("<Name>the vm</Name>", "<Name/>"));
    let name = d.systems[0].name.as_ref().unwrap();
    assert_eq!(name.value, "");
    assert!(name.span.is_empty());
    assert_eq!(&d.bytes[name.span.start..name.span.start + 2], b"/>");
}

#[test]
fn attribute_values_span_between_the_quotes_with_either_quote() {
    let doc = env(&format!(
        "<References><File ovf:id='a&amp;b' ovf:href = \"x y.vmdk\" /></References>{}",
        vs("", "")
    ));
    let d = ok(&doc);
    assert_eq!(d.files[0].id.value, "a&b");
    assert_eq!(raw(&d, d.files[0].id.span), "a&amp;b");
    assert_eq!(raw(&d, d.files[0].href.span), "x y.vmdk");
}

/// A small xorshift generator: deterministic "random" mutations without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_and_truncated_descriptors_never_panic() {
    let base = sample().into_bytes();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let interesting = b"<>/\"'&;=:x \n\0\xff\xc3";
    for _ in 0..3000 {
        let mut doc = base.clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(doc.len());
            match rng.below(3) {
                0 => doc[at] = interesting[rng.below(interesting.len())],
                1 => {
                    doc.remove(at);
                }
                _ => doc.insert(at, interesting[rng.below(interesting.len())]),
            }
        }
        if let Ok(d) = parse_descriptor(&doc) {
            // Whatever parses keeps its bytes and round-trips.
            assert_eq!(d.with_edits(&[]).unwrap(), doc);
        }
    }
    for cut in (0..base.len()).step_by(7) {
        let _ = parse_descriptor(&base[..cut]);
    }
}

#[test]
fn hostile_sizes_stay_linear() {
    let n = 20_000;
    let files: String = (0..n)
        .map(|i| format!("<File ovf:id=\"f{i}\" ovf:href=\"d{i}.vmdk\"/>"))
        .collect();
    let disks: String = (0..n)
        .map(|i| {
            let parent = if i > 0 {
                format!(" ovf:parentRef=\"d{}\"", i - 1)
            } else {
                String::new()
            };
            format!("<Disk ovf:diskId=\"d{i}\" ovf:capacity=\"1\" ovf:fileRef=\"f{i}\"{parent}/>")
        })
        .collect();
    let chain: String = (0..n)
        .map(|i| {
            let parent = if i > 0 {
                format!("<rasd:Parent>{}</rasd:Parent>", i - 1)
            } else {
                String::new()
            };
            format!("<Item>{parent}<rasd:HostResource>ovf:/disk/d{i}</rasd:HostResource><rasd:InstanceID>{i}</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>")
        })
        .collect();
    let same: String = (0..n)
        .map(|_| "<Item><rasd:InstanceID>x</rasd:InstanceID><rasd:ElementName>e</rasd:ElementName></Item>")
        .collect();
    let doc = env(&format!(
        "<References>{files}</References><DiskSection><Info>d</Info>{disks}</DiskSection>{}",
        vs(&format!("{chain}{same}"), "")
    ));
    let started = std::time::Instant::now();
    let d = ok(&doc);
    assert_eq!(d.disks.len(), n);
    assert_eq!(d.systems[0].disk_items.len(), n);
    // Quadratic work here would take minutes; linear work takes well under a few seconds.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}
