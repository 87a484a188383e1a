//! Unit tests of the settings layer on small annotated descriptors: one per style that
//! matters for splicing (prefixed 1.x with deployment options, default namespace with
//! per-element declarations, OVF 0.9 typed sections, OVF 2.x VirtualBox items, a bare
//! minimum, CRLF). Every write goes through `apply`, which checks the invariants: the edits
//! splice, the result parses, the setting reads back, and bytes outside the edits are kept.

use super::*;

/// OVF 1.x with `ovf:` prefixes, three configurations, a CPU item shared by two of them,
/// a memory item per-configuration list `small medium`, two NICs (one only in `big`).
const V1: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ovf:Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <ovf:References>
    <ovf:File ovf:href="disk1.vmdk" ovf:id="file1" ovf:size="1024"/>
  </ovf:References>
  <ovf:DiskSection>
    <ovf:Info>Virtual disk information</ovf:Info>
    <ovf:Disk ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1"/>
  </ovf:DiskSection>
  <ovf:NetworkSection>
    <ovf:Info>The list of logical networks</ovf:Info>
    <ovf:Network ovf:name="VM Network">
      <ovf:Description>The VM Network network</ovf:Description>
    </ovf:Network>
    <ovf:Network ovf:name="lab"/>
  </ovf:NetworkSection>
  <ovf:DeploymentOptionSection>
    <ovf:Info>Configurations</ovf:Info>
    <ovf:Configuration ovf:id="small">
      <ovf:Label>Small</ovf:Label>
      <ovf:Description>Small</ovf:Description>
    </ovf:Configuration>
    <ovf:Configuration ovf:default="true" ovf:id="medium">
      <ovf:Label>Medium</ovf:Label>
      <ovf:Description>Medium</ovf:Description>
    </ovf:Configuration>
    <ovf:Configuration ovf:id="big">
      <ovf:Label>Big</ovf:Label>
      <ovf:Description>Big</ovf:Description>
    </ovf:Configuration>
  </ovf:DeploymentOptionSection>
  <ovf:VirtualSystem ovf:id="vm1">
    <ovf:Info>A virtual machine</ovf:Info>
    <ovf:Name>vm one</ovf:Name>
    <ovf:OperatingSystemSection ovf:id="36" vmw:osType="otherLinux64Guest">
      <ovf:Info>The kind of installed guest operating system</ovf:Info>
    </ovf:OperatingSystemSection>
    <ovf:VirtualHardwareSection ovf:transport="iso">
      <ovf:Info>Virtual hardware requirements</ovf:Info>
      <ovf:System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>vm1</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </ovf:System>
      <ovf:Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>1 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
        <vmw:CoresPerSocket ovf:required="false">1</vmw:CoresPerSocket>
      </ovf:Item>
      <ovf:Item ovf:configuration="big">
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>8 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>8</rasd:VirtualQuantity>
        <vmw:CoresPerSocket ovf:required="false">2</vmw:CoresPerSocket>
      </ovf:Item>
      <ovf:Item ovf:configuration="small medium">
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>1024MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>1024</rasd:VirtualQuantity>
      </ovf:Item>
      <ovf:Item ovf:configuration="big">
        <rasd:AllocationUnits>byte * 2^30</rasd:AllocationUnits>
        <rasd:ElementName>8GB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>8</rasd:VirtualQuantity>
      </ovf:Item>
      <ovf:Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </ovf:Item>
      <ovf:Item ovf:configuration="big">
        <rasd:Address>00:50:56:00:00:02</rasd:Address>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>lab</rasd:Connection>
        <rasd:ElementName>Network adapter 2</rasd:ElementName>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </ovf:Item>
      <ovf:Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceType>17</rasd:ResourceType>
      </ovf:Item>
    </ovf:VirtualHardwareSection>
    <ovf:ProductSection ovf:class="com.example" ovf:required="false">
      <ovf:Info>Information about the installed software</ovf:Info>
      <ovf:Product>Widget</ovf:Product>
      <ovf:Vendor>ACME &amp; Co</ovf:Vendor>
      <ovf:Category>Settings</ovf:Category>
      <ovf:Property ovf:key="hostname" ovf:qualifiers="MinLen(1) MaxLen(16)" ovf:type="string" ovf:userConfigurable="true" ovf:value="widget">
        <ovf:Label>Host name</ovf:Label>
      </ovf:Property>
      <ovf:Property ovf:key="port" ovf:type="uint16" ovf:value="8080">
        <ovf:Value ovf:configuration="small medium" ovf:value="80"/>
      </ovf:Property>
      <ovf:Property ovf:key="debug" ovf:type="boolean" ovf:value="false"/>
      <ovf:Property ovf:key="gateway" ovf:type="ip" ovf:value=""/>
      <ovf:Property ovf:key="secret" ovf:password="true" ovf:type="string" ovf:value="s3cret"/>
      <ovf:Property ovf:key="mode" ovf:qualifiers="ValueMap{&quot;fast&quot;,&quot;safe&quot;}" ovf:type="string" ovf:value="safe"/>
    </ovf:ProductSection>
  </ovf:VirtualSystem>
</ovf:Envelope>
"#;

/// Default OVF namespace, `rasd` declared on every rasd element (as ovftool 4.1 writes
/// without a root declaration), no deployment options, no annotation, no ProductSection.
const DEFAULT_NS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References/>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="bridged">
      <Description>The bridged network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="vm">
    <Info>A virtual machine</Info>
    <Name>Win10</Name>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item>
        <rasd:ElementName xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">4 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">1</rasd:InstanceID>
        <rasd:ResourceType xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">3</rasd:ResourceType>
        <rasd:VirtualQuantity xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">4</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">byte * 2^20</rasd:AllocationUnits>
        <rasd:InstanceID xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">2</rasd:InstanceID>
        <rasd:ResourceType xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">4</rasd:ResourceType>
        <rasd:VirtualQuantity xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">6144</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AddressOnParent xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">7</rasd:AddressOnParent>
        <rasd:Connection xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">bridged</rasd:Connection>
        <rasd:ElementName xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">Network adapter 1</rasd:ElementName>
        <rasd:InstanceID xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">3</rasd:InstanceID>
        <rasd:ResourceType xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#;

/// OVF 0.9: typed sections, `rasd:InstanceId`, `Caption`, the 0.9 child order,
/// `ovf:defaultValue`.
const V09: &str = r#"<?xml version='1.0' encoding='utf-8'?>
<ovf:Envelope xmlns:ovf="http://www.vmware.com/schema/ovf/1/envelope" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ovf:version="0.9">
  <ovf:References/>
  <ovf:Section xsi:type="ovf:NetworkSection_Type">
    <ovf:Info>The list of logical networks</ovf:Info>
    <ovf:Network ovf:name="bridged">
      <ovf:Description>The bridged network</ovf:Description>
    </ovf:Network>
  </ovf:Section>
  <ovf:Content ovf:id="v0.9" xsi:type="ovf:VirtualSystem_Type">
    <ovf:Info>A virtual machine</ovf:Info>
    <ovf:Section xsi:type="ovf:VirtualHardwareSection_Type">
      <ovf:Info>Virtual hardware requirements for a virtual machine</ovf:Info>
      <ovf:System>
        <vssd:InstanceId>0</vssd:InstanceId>
        <vssd:VirtualSystemIdentifier>foo</vssd:VirtualSystemIdentifier>
      </ovf:System>
      <ovf:Item>
        <rasd:Caption>1 virtual CPU(s)</rasd:Caption>
        <rasd:InstanceId>1</rasd:InstanceId>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:AllocationUnits>MegaHertz</rasd:AllocationUnits>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </ovf:Item>
      <ovf:Item>
        <rasd:Caption>8192MB of memory</rasd:Caption>
        <rasd:InstanceId>2</rasd:InstanceId>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:VirtualQuantity>8192</rasd:VirtualQuantity>
      </ovf:Item>
      <ovf:Item>
        <rasd:Caption>ethernet0</rasd:Caption>
        <rasd:InstanceId>8</rasd:InstanceId>
        <rasd:ResourceType>10</rasd:ResourceType>
        <rasd:ResourceSubType>PCNet32</rasd:ResourceSubType>
        <rasd:AddressOnParent>1</rasd:AddressOnParent>
      </ovf:Item>
    </ovf:Section>
    <ovf:Section xsi:type="ovf:ProductSection_Type">
      <ovf:Info>Product</ovf:Info>
      <ovf:Property ovf:key="k" ovf:type="string" ovf:defaultValue="v"/>
      <ovf:Property ovf:key="empty" ovf:type="string"/>
    </ovf:Section>
  </ovf:Content>
</ovf:Envelope>
"#;

/// OVF 2.0 as VirtualBox writes it: Caption instead of ElementName, an EthernetPortItem in
/// the epasd namespace (with the `.xsd` URI quirk), MegaBytes.
const V2: &str = r#"<?xml version="1.0"?>
<Envelope ovf:version="2.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/2" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:epasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData.xsd">
  <References/>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT">
      <Description>Logical network used by this appliance.</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="ubuntu">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="94">
      <Info>The kind of installed guest operating system</Info>
      <Description>Ubuntu_64</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>ubuntu</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:Caption>1 virtual CPU</rasd:Caption>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:Caption>512 MB of memory</rasd:Caption>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>512</rasd:VirtualQuantity>
      </Item>
      <EthernetPortItem>
        <epasd:AutomaticAllocation>true</epasd:AutomaticAllocation>
        <epasd:Caption>Ethernet adapter on 'NAT'</epasd:Caption>
        <epasd:Connection>NAT</epasd:Connection>
        <epasd:InstanceID>10</epasd:InstanceID>
        <epasd:ResourceSubType>E1000</epasd:ResourceSubType>
        <epasd:ResourceType>10</epasd:ResourceType>
      </EthernetPortItem>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#;

/// The bare minimum: a collection with two systems, no sections besides hardware, one
/// system without a hardware section.
const COLLECTION: &str = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
	<References/>
	<VirtualSystemCollection ovf:id="app">
		<Info>Two machines</Info>
		<VirtualSystem ovf:id="web/1">
			<Info>Web</Info>
			<VirtualHardwareSection>
				<Info>hw</Info>
				<Item>
					<rasd:InstanceID>1</rasd:InstanceID>
					<rasd:ResourceType>4</rasd:ResourceType>
					<rasd:VirtualQuantity>256</rasd:VirtualQuantity>
				</Item>
			</VirtualHardwareSection>
		</VirtualSystem>
		<VirtualSystem ovf:id="..">
			<Info>Odd id</Info>
		</VirtualSystem>
	</VirtualSystemCollection>
</Envelope>"#;

fn parse(s: &str) -> Descriptor {
    ovf::parse_descriptor(s.as_bytes()).unwrap()
}

fn crlf(s: &str) -> String {
    s.replace('\n', "\r\n")
}

/// Writes `value` to `path`, checks the invariants, and returns the new descriptor.
fn apply(d: &Descriptor, path: &str, value: &str) -> Descriptor {
    let edits =
        write(d, path, value.as_bytes()).unwrap_or_else(|e| panic!("write {path} {value:?}: {e}"));
    assert!(!edits.is_empty(), "write {path} {value:?} made no edit");
    let bytes = ovf::splice(&d.bytes, &edits).unwrap();
    check_only_edited(&d.bytes, &bytes, &edits);
    ovf::parse_descriptor(&bytes).unwrap()
}

/// The new document is the old one outside the edits' spans.
fn check_only_edited(old: &[u8], new: &[u8], edits: &[Edit]) {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| e.span.start);
    let (mut o, mut n) = (0usize, 0usize);
    for e in sorted {
        let keep = e.span.start - o;
        assert_eq!(&old[o..e.span.start], &new[n..n + keep]);
        n += keep + e.replacement.len();
        assert_eq!(&new[n - e.replacement.len()..n], e.replacement.as_bytes());
        o = e.span.end;
    }
    assert_eq!(&old[o..], &new[n..]);
}

fn text(d: &Descriptor) -> String {
    String::from_utf8(d.bytes.to_vec()).unwrap()
}

fn rd(d: &Descriptor, path: &str) -> String {
    read(d, path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .trim_end_matches('\n')
        .to_string()
}

/// Every file of the tree with its value.
fn snapshot(d: &Descriptor) -> BTreeMap<String, String> {
    tree(d)
        .into_iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| {
            let v = rd(d, &e.path);
            (e.path, v)
        })
        .collect()
}

/// Asserts that only `changed` paths differ between two snapshots.
fn assert_only(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    changed: &[&str],
) {
    for (k, v) in before {
        if changed.contains(&k.as_str()) {
            continue;
        }
        assert_eq!(after.get(k), Some(v), "{k} changed");
    }
}

fn refused(d: &Descriptor, path: &str, value: &str) -> SettingError {
    match write(d, path, value.as_bytes()) {
        Ok(e) => panic!("write {path} {value:?} accepted: {e:?}"),
        Err(e) => e,
    }
}

fn all_fixtures() -> Vec<(&'static str, String)> {
    vec![
        ("V1", V1.to_string()),
        ("V1 CRLF", crlf(V1)),
        ("DEFAULT_NS", DEFAULT_NS.to_string()),
        ("V09", V09.to_string()),
        ("V2", V2.to_string()),
        ("COLLECTION", COLLECTION.to_string()),
    ]
}

#[test]
fn tree_stays_inside_its_top_level_names() {
    for (what, xml) in all_fixtures() {
        for e in tree(&parse(&xml)) {
            let top = e.path.split('/').next().unwrap_or("");
            assert!(TOP_LEVEL_NAMES.contains(&top), "{what}: {}", e.path);
        }
    }
}

#[test]
fn tree_lists_the_issue_paths() {
    let d = parse(V1);
    let t = tree(&d);
    let has = |p: &str, k: EntryKind| t.iter().any(|e| e.path == p && e.kind == k);
    assert!(has("vm", EntryKind::Symlink("vms/vm1".into())));
    for f in [
        "vms/vm1/name",
        "vms/vm1/os",
        "vms/vm1/os_type",
        "vms/vm1/annotation",
        "vms/vm1/cpus",
        "vms/vm1/cores_per_socket",
        "vms/vm1/memory",
        "vms/vm1/system_type",
        "vms/vm1/transport",
        "vms/vm1/nics/0/network",
        "vms/vm1/nics/0/type",
        "vms/vm1/nics/0/mac",
        "vms/vm1/nics/0/connected",
        "vms/vm1/nics/0/name",
        "vms/vm1/product/product",
        "vms/vm1/product/app_url",
        "vms/vm1/properties/com.example.hostname",
        "vms/vm1/configs/big/cpus",
        "vms/vm1/configs/big/nics/1/network",
        "vms/vm1/configs/small/properties/com.example.port",
        "networks/VM Network/description",
        "networks/lab/description",
    ] {
        assert!(has(f, EntryKind::File), "{f} missing");
    }
    for dir in [
        "vms",
        "vms/vm1",
        "vms/vm1/nics/0",
        "vms/vm1/configs/big",
        "networks/lab",
    ] {
        assert!(has(dir, EntryKind::Dir), "{dir} missing");
    }
    // The default configuration (medium) has one adapter.
    assert!(!t.iter().any(|e| e.path == "vms/vm1/nics/1/network"));
    // Parents come before children.
    for (i, e) in t.iter().enumerate() {
        if let Some((parent, _)) = e.path.rsplit_once('/') {
            assert!(t[..i].iter().any(|p| p.path == parent), "{}", e.path);
        }
    }
    assert!(
        t.iter()
            .any(|e| e.path.ends_with("properties/com.example.secret") && e.secret)
    );
}

#[test]
fn reads() {
    let d = parse(V1);
    assert_eq!(read(&d, "vms/vm1/cpus").unwrap(), "1\n");
    assert_eq!(rd(&d, "vms/vm1/memory"), "1024");
    assert_eq!(rd(&d, "vms/vm1/configs/big/memory"), "8192");
    assert_eq!(rd(&d, "vms/vm1/configs/big/cpus"), "8");
    assert_eq!(rd(&d, "vms/vm1/configs/big/cores_per_socket"), "2");
    assert_eq!(rd(&d, "vms/vm1/os"), "36 LINUX");
    assert_eq!(rd(&d, "vms/vm1/os_type"), "otherLinux64Guest");
    assert_eq!(rd(&d, "vms/vm1/annotation"), "");
    assert_eq!(rd(&d, "vms/vm1/product/vendor"), "ACME & Co");
    assert_eq!(rd(&d, "vms/vm1/nics/0/network"), "VM Network");
    assert_eq!(
        rd(&d, "vms/vm1/configs/big/nics/1/mac"),
        "00:50:56:00:00:02"
    );
    assert_eq!(rd(&d, "vms/vm1/properties/com.example.port"), "8080");
    assert_eq!(
        rd(&d, "vms/vm1/configs/small/properties/com.example.port"),
        "80"
    );
    assert_eq!(
        rd(&d, "vms/vm1/configs/big/properties/com.example.port"),
        "8080"
    );
    assert_eq!(rd(&d, "vms/vm1/properties/com.example.secret"), "s3cret");
    assert_eq!(
        rd(&d, "networks/VM Network/description"),
        "The VM Network network"
    );
    assert!(matches!(
        read(&d, "vms/vm1/nope"),
        Err(SettingError::NotFound { .. })
    ));
    assert!(matches!(
        read(&d, "vms/vm1/nics/1/type"),
        Err(SettingError::NotFound { .. })
    ));
    assert!(matches!(
        read(&d, "vms//cpus"),
        Err(SettingError::NotFound { .. })
    ));
    assert!(matches!(
        read(&d, "vms/vm1/nics/00/type"),
        Err(SettingError::NotFound { .. })
    ));
}

#[test]
fn cpus_edit_changes_one_value() {
    let d = parse(V1);
    let before = snapshot(&d);
    // The default configuration (medium) takes its CPU count from the generic item, which
    // small shares: the edit copies the item for medium.
    let d2 = apply(&d, "vms/vm1/cpus", "4\n");
    assert_eq!(rd(&d2, "vms/vm1/cpus"), "4");
    assert_eq!(rd(&d2, "vms/vm1/configs/medium/cpus"), "4");
    assert_eq!(rd(&d2, "vms/vm1/configs/small/cpus"), "1");
    assert_eq!(rd(&d2, "vms/vm1/configs/big/cpus"), "8");
    assert_only(
        &before,
        &snapshot(&d2),
        &["vms/vm1/cpus", "vms/vm1/configs/medium/cpus"],
    );
    let t = text(&d2);
    let copy = "      <ovf:Item ovf:configuration=\"medium\">\n        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>\n        <rasd:ElementName>1 virtual CPU(s)</rasd:ElementName>\n        <rasd:InstanceID>1</rasd:InstanceID>\n        <rasd:ResourceType>3</rasd:ResourceType>\n        <rasd:VirtualQuantity>4</rasd:VirtualQuantity>\n        <vmw:CoresPerSocket ovf:required=\"false\">1</vmw:CoresPerSocket>\n      </ovf:Item>\n      <ovf:Item ovf:configuration=\"big\">";
    assert!(t.contains(copy), "{t}");
    // Editing medium again now edits its own copy in place.
    let d3 = apply(&d2, "vms/vm1/cpus", "2");
    assert_eq!(d3.bytes.len(), d2.bytes.len());
    // small is now the only user of the generic item: in place.
    let d4 = apply(&d3, "vms/vm1/configs/small/cpus", "3");
    assert_eq!(d4.bytes.len(), d3.bytes.len());
    assert_eq!(rd(&d4, "vms/vm1/configs/small/cpus"), "3");
    assert_eq!(rd(&d4, "vms/vm1/cpus"), "2");
}

#[test]
fn shared_list_is_split() {
    let d = parse(V1);
    let before = snapshot(&d);
    let d2 = apply(&d, "vms/vm1/configs/small/memory", "2G");
    assert_eq!(rd(&d2, "vms/vm1/configs/small/memory"), "2048");
    assert_eq!(rd(&d2, "vms/vm1/memory"), "1024");
    assert_only(&before, &snapshot(&d2), &["vms/vm1/configs/small/memory"]);
    let t = text(&d2);
    assert!(t.contains(
        "<ovf:Item ovf:configuration=\"medium\">\n        <rasd:AllocationUnits>byte * 2^20"
    ));
    assert!(t.contains("<ovf:Item ovf:configuration=\"small\">\n        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>\n        <rasd:ElementName>1024MB of memory</rasd:ElementName>\n        <rasd:InstanceID>2</rasd:InstanceID>\n        <rasd:ResourceType>4</rasd:ResourceType>\n        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>\n      </ovf:Item>"));
}

#[test]
fn memory_spellings_and_units() {
    let d = parse(V1);
    for (v, want) in [
        ("512", "512"),
        ("512M", "512"),
        ("512 MiB", "512"),
        ("1G", "1024"),
        ("1 GiB", "1024"),
        ("3072\n", "3072"),
    ] {
        if want == "1024" {
            assert!(
                write(&d, "vms/vm1/memory", v.as_bytes())
                    .unwrap()
                    .is_empty()
            );
            continue;
        }
        let d2 = apply(&d, "vms/vm1/memory", v);
        assert_eq!(rd(&d2, "vms/vm1/memory"), want, "{v}");
    }
    // big counts memory in GiB: 8G keeps the units, 1536M changes them.
    let d2 = apply(&d, "vms/vm1/configs/big/memory", "16G");
    assert!(text(&d2).contains("<rasd:VirtualQuantity>16</rasd:VirtualQuantity>"));
    let d3 = apply(&d, "vms/vm1/configs/big/memory", "1536M");
    assert_eq!(rd(&d3, "vms/vm1/configs/big/memory"), "1536");
    assert!(text(&d3).contains("<rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>\n        <rasd:ElementName>8GB of memory"));
    for bad in ["0", "banana", "1.5G", "100K", "-1", "", "99999999999T"] {
        let e = refused(&d, "vms/vm1/memory", bad);
        assert!(matches!(e, SettingError::Invalid { .. }), "{bad}: {e}");
    }
    // VirtualBox's MegaBytes.
    let v2 = parse(V2);
    let d4 = apply(&v2, "vms/ubuntu/memory", "2 GiB");
    assert!(text(&d4).contains("<rasd:VirtualQuantity>2048</rasd:VirtualQuantity>"));
}

#[test]
fn cpus_validation() {
    let d = parse(V1);
    for bad in ["banana", "0", "-2", "4097", "", "1.5", "0x10"] {
        let e = refused(&d, "vms/vm1/cpus", bad);
        assert!(matches!(e, SettingError::Invalid { .. }), "{bad}: {e}");
        assert!(e.to_string().starts_with("vms/vm1/cpus: "), "{e}");
    }
    // big has 2 cores per socket.
    assert!(matches!(
        refused(&d, "vms/vm1/configs/big/cpus", "5"),
        SettingError::Invalid { .. }
    ));
    apply(&d, "vms/vm1/configs/big/cpus", "6");
    assert!(matches!(
        refused(&d, "vms/vm1/configs/big/cores_per_socket", "3"),
        SettingError::Invalid { .. }
    ));
    let d2 = apply(&d, "vms/vm1/configs/big/cores_per_socket", "4");
    assert_eq!(rd(&d2, "vms/vm1/configs/big/cores_per_socket"), "4");
    // Nothing to change in a system without a processor item.
    let c = parse(COLLECTION);
    assert_eq!(rd(&c, "vms/web%2F1/cpus"), "");
    assert!(matches!(
        refused(&c, "vms/web%2F1/cpus", "2"),
        SettingError::Unsupported { .. }
    ));
}

#[test]
fn unchanged_values_make_no_edits() {
    for (name, doc) in all_fixtures() {
        let d = parse(&doc);
        for e in tree(&d).into_iter().filter(|e| e.kind == EntryKind::File) {
            let v = read(&d, &e.path).unwrap();
            let edits = write(&d, &e.path, v.as_bytes())
                .unwrap_or_else(|err| panic!("{name} {}: {err}", e.path));
            assert!(edits.is_empty(), "{name} {}: {edits:?}", e.path);
        }
    }
}

#[test]
fn annotation_is_inserted_in_each_style() {
    let d = parse(V1);
    let d2 = apply(
        &d,
        "vms/vm1/annotation",
        "Hello <world> & \"you\"\nline two\n",
    );
    assert_eq!(
        rd(&d2, "vms/vm1/annotation"),
        "Hello <world> & \"you\"\nline two"
    );
    assert!(text(&d2).contains("    <ovf:AnnotationSection>\n      <ovf:Info>A human-readable annotation</ovf:Info>\n      <ovf:Annotation>Hello &lt;world&gt; &amp; \"you\"\nline two</ovf:Annotation>\n    </ovf:AnnotationSection>\n  </ovf:VirtualSystem>"));
    // An existing one is edited in place.
    let d3 = apply(&d2, "vms/vm1/annotation", "short");
    assert!(text(&d3).contains("<ovf:Annotation>short</ovf:Annotation>"));

    let c = crlf(V1);
    let d = parse(&c);
    let d2 = apply(&d, "vms/vm1/annotation", "a\nb");
    let t = text(&d2);
    assert!(t.contains("    <ovf:AnnotationSection>\r\n      <ovf:Info>A human-readable annotation</ovf:Info>\r\n      <ovf:Annotation>a\r\nb</ovf:Annotation>\r\n    </ovf:AnnotationSection>\r\n"));
    assert!(
        !t.replace("\r\n", "").contains('\n'),
        "a bare LF in a CRLF document"
    );

    let d = parse(V09);
    let d2 = apply(&d, "vms/v0.9/annotation", "old format");
    assert!(text(&d2).contains("    <ovf:Section xsi:type=\"ovf:AnnotationSection_Type\">\n      <ovf:Info>A human-readable annotation</ovf:Info>\n      <ovf:Annotation>old format</ovf:Annotation>\n    </ovf:Section>\n  </ovf:Content>"));

    let d = parse(COLLECTION);
    let d2 = apply(&d, "vms/app/annotation", "tabs");
    assert!(text(&d2).contains("\t\t<Info>Two machines</Info>\n\t\t<AnnotationSection>\n\t\t\t<Info>A human-readable annotation</Info>\n\t\t\t<Annotation>tabs</Annotation>\n\t\t</AnnotationSection>\n\t\t<VirtualSystem"));
}

/// The local names of the children of the item with this InstanceID (first one).
fn item_children(d: &Descriptor, iid: &str) -> Vec<String> {
    let item = d.systems[0].hardware[0]
        .items
        .iter()
        .rev()
        .find(|i| i.instance_id().is_some_and(|x| x.value == iid))
        .unwrap();
    item.fields.iter().map(|f| f.name.clone()).collect()
}

#[test]
fn inserted_children_keep_schema_order() {
    let d = parse(V1);
    // mac (Address) sorts first, connected (AutomaticAllocation) after AddressOnParent.
    let d2 = apply(&d, "vms/vm1/configs/small/nics/0/mac", "00:50:56:AA:BB:CC");
    let d3 = apply(&d2, "vms/vm1/configs/small/nics/0/connected", "yes");
    assert_eq!(
        rd(&d3, "vms/vm1/configs/small/nics/0/mac"),
        "00:50:56:aa:bb:cc"
    );
    assert_eq!(rd(&d3, "vms/vm1/configs/small/nics/0/connected"), "true");
    let names = item_children(&d3, "3");
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| n.to_ascii_lowercase());
    assert_eq!(names, sorted);
    assert_eq!(names[0], "Address");
    // The other configurations still have the adapter without a MAC.
    assert_eq!(rd(&d3, "vms/vm1/nics/0/mac"), "");
    assert_eq!(rd(&d3, "vms/vm1/configs/big/nics/0/mac"), "");

    // OVF 0.9 order: Connection goes after ResourceSubType and before AddressOnParent.
    let d = parse(V09);
    let d2 = apply(&d, "vms/v0.9/nics/0/network", "bridged");
    assert_eq!(
        item_children(&d2, "8"),
        [
            "Caption",
            "InstanceId",
            "ResourceType",
            "ResourceSubType",
            "Connection",
            "AddressOnParent"
        ]
    );
    let d3 = apply(&d2, "vms/v0.9/nics/0/mac", "00:0c:29:00:00:01");
    assert_eq!(
        item_children(&d3, "8"),
        [
            "Caption",
            "InstanceId",
            "ResourceType",
            "ResourceSubType",
            "Connection",
            "Address",
            "AddressOnParent"
        ]
    );
    // Vendor children go last; names are written like their neighbours.
    let d = parse(V2);
    let d2 = apply(&d, "vms/ubuntu/nics/0/mac", "08:00:27:00:00:01");
    assert!(text(&d2).contains("<EthernetPortItem>\n        <epasd:Address>08:00:27:00:00:01</epasd:Address>\n        <epasd:AutomaticAllocation>"));
    let d = parse(DEFAULT_NS);
    let d2 = apply(&d, "vms/vm/nics/0/type", "VmxNet3");
    assert!(text(&d2).contains("<rasd:ResourceSubType xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\">VmxNet3</rasd:ResourceSubType>\n        <rasd:ResourceType"));
    let d3 = apply(&d2, "vms/vm/cores_per_socket", "2");
    assert!(text(&d3).contains("<vmw:CoresPerSocket xmlns:vmw=\"http://www.vmware.com/schema/ovf\" ovf:required=\"false\">2</vmw:CoresPerSocket>\n      </Item>"));
    assert_eq!(rd(&d3, "vms/vm/cores_per_socket"), "2");
    let d4 = apply(&d3, "vms/vm/cores_per_socket", "");
    assert_eq!(d4.bytes, d2.bytes);
}

#[test]
fn nic_settings() {
    let d = parse(V1);
    let e = refused(&d, "vms/vm1/nics/0/network", "nowhere");
    assert!(e.to_string().contains("mkdir networks/NAME"), "{e}");
    let d2 = apply(&d, "vms/vm1/nics/0/network", "lab");
    assert_eq!(rd(&d2, "vms/vm1/nics/0/network"), "lab");
    assert_eq!(
        rd(&d2, "vms/vm1/configs/small/nics/0/network"),
        "VM Network"
    );
    for (f, bad) in [
        ("type", "two words"),
        ("type", ""),
        ("mac", "00:50:56:00:00"),
        ("mac", "01:00:5e:00:00:01"),
        ("connected", "maybe"),
        ("name", ""),
        ("name", "a\nb"),
    ] {
        refused(&d, &format!("vms/vm1/nics/0/{f}"), bad);
    }
    let d3 = apply(&d, "vms/vm1/nics/0/name", "eth0 <mgmt>");
    assert_eq!(rd(&d3, "vms/vm1/nics/0/name"), "eth0 <mgmt>");
    // VirtualBox 2.0 adapters have a Caption.
    let v2 = parse(V2);
    let d4 = apply(&v2, "vms/ubuntu/nics/0/name", "eth0");
    assert!(text(&d4).contains("<epasd:Caption>eth0</epasd:Caption>"));
    // A MAC can be removed where only this configuration has it.
    let d5 = apply(&d, "vms/vm1/configs/big/nics/1/mac", "");
    assert_eq!(rd(&d5, "vms/vm1/configs/big/nics/1/mac"), "");
    assert!(!text(&d5).contains("00:50:56:00:00:02"));
}

#[test]
fn properties_are_typed() {
    let d = parse(V1);
    let p = "vms/vm1/properties/com.example.";
    for (k, bad) in [
        ("hostname", ""),
        ("hostname", "a-name-longer-than-16"),
        ("port", "65536"),
        ("port", "-1"),
        ("port", "http"),
        ("debug", "maybe"),
        ("gateway", "10.0.0"),
        ("mode", "turbo"),
    ] {
        let e = refused(&d, &format!("{p}{k}"), bad);
        assert!(matches!(e, SettingError::Invalid { .. }), "{k} {bad}: {e}");
    }
    let d2 = apply(&d, &format!("{p}hostname"), "web01\n");
    assert_eq!(rd(&d2, &format!("{p}hostname")), "web01");
    let d3 = apply(&d, &format!("{p}debug"), "TRUE");
    assert_eq!(rd(&d3, &format!("{p}debug")), "true");
    assert!(write(&d3, &format!("{p}debug"), b"1").unwrap().is_empty());
    let d4 = apply(&d, &format!("{p}gateway"), "fe80::1");
    assert_eq!(rd(&d4, &format!("{p}gateway")), "fe80::1");
    let d5 = apply(
        &d,
        &format!("{p}secret"),
        "a \"quoted\" <pass> & 'word'\twith\nbreaks",
    );
    assert_eq!(
        rd(&d5, &format!("{p}secret")),
        "a \"quoted\" <pass> & 'word'\twith\nbreaks"
    );
    // Trailing spaces are kept: only the line break is removed.
    let d6 = apply(&d, &format!("{p}hostname"), "web01 \n");
    assert_eq!(read(&d6, &format!("{p}hostname")).unwrap(), "web01 \n");
}

#[test]
fn per_configuration_property_values() {
    let d = parse(V1);
    let before = snapshot(&d);
    // small and medium share a Value: small gets its own.
    let d2 = apply(
        &d,
        "vms/vm1/configs/small/properties/com.example.port",
        "81",
    );
    assert_eq!(
        rd(&d2, "vms/vm1/configs/small/properties/com.example.port"),
        "81"
    );
    assert_eq!(
        rd(&d2, "vms/vm1/configs/medium/properties/com.example.port"),
        "80"
    );
    assert_only(
        &before,
        &snapshot(&d2),
        &["vms/vm1/configs/small/properties/com.example.port"],
    );
    assert!(text(&d2).contains("<ovf:Value ovf:configuration=\"medium\" ovf:value=\"80\"/>\n        <ovf:Value ovf:value=\"81\" ovf:configuration=\"small\"/>\n      </ovf:Property>"));
    // big has none: a Value is added; the property's default stays.
    let d3 = apply(&d, "vms/vm1/configs/big/properties/com.example.port", "443");
    assert_eq!(rd(&d3, "vms/vm1/properties/com.example.port"), "8080");
    assert_eq!(
        rd(&d3, "vms/vm1/configs/big/properties/com.example.port"),
        "443"
    );
    // A self-closing Property gets children.
    let d4 = apply(
        &d,
        "vms/vm1/configs/big/properties/com.example.debug",
        "true",
    );
    assert!(text(&d4).contains("<ovf:Property ovf:key=\"debug\" ovf:type=\"boolean\" ovf:value=\"false\">\n        <ovf:Value ovf:value=\"true\" ovf:configuration=\"big\"/>\n      </ovf:Property>"));
    assert_eq!(rd(&d4, "vms/vm1/properties/com.example.debug"), "false");
    // The top level edits the default value only.
    let d5 = apply(&d, "vms/vm1/properties/com.example.port", "9090");
    assert_eq!(
        rd(&d5, "vms/vm1/configs/big/properties/com.example.port"),
        "9090"
    );
    assert_eq!(
        rd(&d5, "vms/vm1/configs/small/properties/com.example.port"),
        "80"
    );
}

#[test]
fn ovf_0_9_properties_use_default_value() {
    let d = parse(V09);
    let d2 = apply(&d, "vms/v0.9/properties/k", "w");
    assert!(text(&d2).contains("ovf:defaultValue=\"w\""));
    let d3 = apply(&d, "vms/v0.9/properties/empty", "x");
    assert!(
        text(&d3).contains(
            "<ovf:Property ovf:key=\"empty\" ovf:type=\"string\" ovf:defaultValue=\"x\"/>"
        )
    );
}

#[test]
fn os_settings() {
    let d = parse(V1);
    let d2 = apply(&d, "vms/vm1/os", "ubuntu 64-bit");
    assert_eq!(rd(&d2, "vms/vm1/os"), "94 Ubuntu 64-Bit");
    let d3 = apply(&d, "vms/vm1/os", "101 whatever follows");
    assert_eq!(rd(&d3, "vms/vm1/os"), "101 Linux 64-Bit");
    assert!(write(&d, "vms/vm1/os", b"36 LINUX\n").unwrap().is_empty());
    for bad in ["", "Plan 10", "65536", "36x"] {
        refused(&d, "vms/vm1/os", bad);
    }
    let d4 = apply(&d, "vms/vm1/os_type", "ubuntu64Guest");
    assert!(text(&d4).contains("vmw:osType=\"ubuntu64Guest\""));
    let d5 = apply(&d, "vms/vm1/os_type", "");
    assert!(text(&d5).contains("<ovf:OperatingSystemSection ovf:id=\"36\">"));
    refused(&d, "vms/vm1/os_type", "not valid");
    // A system without an OperatingSystemSection gets one, before its hardware.
    let d = parse(DEFAULT_NS);
    assert!(!tree(&d).iter().any(|e| e.path == "vms/vm/os_type"));
    let d2 = apply(&d, "vms/vm/os", "windows 10 64-bit");
    assert!(text(&d2).contains("    <Name>Win10</Name>\n    <OperatingSystemSection ovf:id=\"120\">\n      <Info>The kind of installed guest operating system</Info>\n    </OperatingSystemSection>\n    <VirtualHardwareSection>"));
    let d3 = apply(&d2, "vms/vm/os_type", "windows9_64Guest");
    assert!(text(&d3).contains("<OperatingSystemSection ovf:id=\"120\" xmlns:vmw=\"http://www.vmware.com/schema/ovf\" vmw:osType=\"windows9_64Guest\">"));
    let d4 = apply(&d3, "vms/vm/os_description", "Windows 10");
    assert!(text(&d4).contains("<Info>The kind of installed guest operating system</Info>\n      <Description>Windows 10</Description>\n    </OperatingSystemSection>"));
}

#[test]
fn system_settings() {
    let d = parse(V1);
    let d2 = apply(&d, "vms/vm1/system_type", "vmx-07,  vmx-08");
    assert_eq!(rd(&d2, "vms/vm1/system_type"), "vmx-07 vmx-08");
    refused(&d, "vms/vm1/system_type", "");
    refused(&d, "vms/vm1/system_type", "vmx/13");
    let d3 = apply(&d, "vms/vm1/transport", "iso vmware");
    assert_eq!(rd(&d3, "vms/vm1/transport"), "iso com.vmware.guestInfo");
    let d4 = apply(&d, "vms/vm1/transport", "");
    assert!(text(&d4).contains("<ovf:VirtualHardwareSection>"));
    let d5 = apply(&d4, "vms/vm1/transport", "com.vmware.guestInfo");
    assert!(
        text(&d5).contains("<ovf:VirtualHardwareSection ovf:transport=\"com.vmware.guestInfo\">")
    );
    // 0.9: System without VirtualSystemType gets one after its last vssd child.
    let d = parse(V09);
    let d2 = apply(&d, "vms/v0.9/system_type", "vmx-04");
    assert!(text(&d2).contains("<vssd:VirtualSystemIdentifier>foo</vssd:VirtualSystemIdentifier>\n        <vssd:VirtualSystemType>vmx-04</vssd:VirtualSystemType>\n      </ovf:System>"));
}

#[test]
fn product_and_name() {
    let d = parse(V1);
    let d2 = apply(&d, "vms/vm1/product/version", "2.0");
    assert!(text(&d2).contains("<ovf:Vendor>ACME &amp; Co</ovf:Vendor>\n      <ovf:Version>2.0</ovf:Version>\n      <ovf:Category>"));
    let d3 = apply(&d2, "vms/vm1/product/full_version", "2.0.1 build 7");
    assert!(text(&d3).contains(
        "<ovf:Version>2.0</ovf:Version>\n      <ovf:FullVersion>2.0.1 build 7</ovf:FullVersion>"
    ));
    refused(&d, "vms/vm1/product/product_url", "http://a b");
    let d4 = apply(
        &d,
        "vms/vm1/product/product_url",
        "https://example.com/widget",
    );
    assert_eq!(
        rd(&d4, "vms/vm1/product/product_url"),
        "https://example.com/widget"
    );
    let d5 = apply(&d, "vms/vm1/name", "  renamed  \n");
    assert_eq!(rd(&d5, "vms/vm1/name"), "renamed");
    // No ProductSection: one is added; no Name: one is added after Info.
    let c = parse(COLLECTION);
    let c2 = apply(&c, "vms/app/product/vendor", "Me");
    assert!(text(&c2).contains("\t\t<Info>Two machines</Info>\n\t\t<ProductSection>\n\t\t\t<Info>Information about the installed software</Info>\n\t\t\t<Vendor>Me</Vendor>\n\t\t</ProductSection>\n"));
    let c3 = apply(&c, "vms/web%2F1/name", "web");
    assert!(text(&c3).contains("\t\t\t<Info>Web</Info>\n\t\t\t<Name>web</Name>\n"));
    assert!(write(&c, "vms/web%2F1/name", b"").unwrap().is_empty());
}

#[test]
fn names_are_safe_and_unique() {
    let c = parse(COLLECTION);
    let t = tree(&c);
    for p in ["vms/app", "vms/web%2F1", "vms/%2E%2E"] {
        assert!(
            t.iter().any(|e| e.path == p && e.kind == EntryKind::Dir),
            "{p}"
        );
    }
    // Two systems: no vm link.
    assert!(!t.iter().any(|e| e.path == "vm"));
    assert_eq!(unique_names(&["a", "a", "a~2"]), ["a", "a~3", "a~2"]);
    assert_eq!(safe_name("%/."), "%25%2F.");
    assert_eq!(unsafe_name(&safe_name("a/b%c")), "a/b%c");
}

#[test]
fn networks_are_created_and_removed() {
    let d = parse(V1);
    assert!(matches!(
        mkdir(&d, "networks/lab"),
        Err(SettingError::Exists { .. })
    ));
    let edits = mkdir(&d, "networks/dmz").unwrap();
    let d2 = ovf::parse_descriptor(&ovf::splice(&d.bytes, &edits).unwrap()).unwrap();
    assert!(text(&d2).contains("    <ovf:Network ovf:name=\"lab\"/>\n    <ovf:Network ovf:name=\"dmz\">\n      <ovf:Description>The dmz network</ovf:Description>\n    </ovf:Network>\n  </ovf:NetworkSection>"));
    let d3 = apply(&d2, "vms/vm1/nics/0/network", "dmz");
    assert!(matches!(
        rmdir(&d3, "networks/dmz"),
        Err(SettingError::InUse { .. })
    ));
    // lab is used by an adapter of the big configuration only: still in use.
    assert!(matches!(
        rmdir(&d, "networks/lab"),
        Err(SettingError::InUse { .. })
    ));
    let edits = rmdir(&d2, "networks/dmz").unwrap();
    assert_eq!(ovf::splice(&d2.bytes, &edits).unwrap(), d.bytes.to_vec());
    assert!(matches!(
        rmdir(&d, "networks/none"),
        Err(SettingError::NotFound { .. })
    ));
    assert!(mkdir(&d, "vms/x").is_err());

    // No NetworkSection at all: one is created after References.
    let c = parse(COLLECTION);
    let edits = mkdir(&c, "networks/a%2Fb").unwrap();
    let c2 = ovf::parse_descriptor(&ovf::splice(&c.bytes, &edits).unwrap()).unwrap();
    assert_eq!(c2.networks[0].name.value, "a/b");
    assert!(text(&c2).contains("\t<References/>\n\t<NetworkSection>\n\t\t<Info>The list of logical networks</Info>\n\t\t<Network ovf:name=\"a/b\">\n\t\t\t<Description>The a/b network</Description>\n\t\t</Network>\n\t</NetworkSection>\n"));
    assert!(
        tree(&c2)
            .iter()
            .any(|e| e.path == "networks/a%2Fb/description")
    );
    // 0.9: a typed section.
    let v = parse(V09);
    let edits = mkdir(&v, "networks/nat").unwrap();
    let v2 = ovf::parse_descriptor(&ovf::splice(&v.bytes, &edits).unwrap()).unwrap();
    assert_eq!(v2.networks.len(), 2);
    let d4 = apply(&d, "networks/lab/description", "Lab network");
    assert!(text(&d4).contains("<ovf:Network ovf:name=\"lab\">\n      <ovf:Description>Lab network</ovf:Description>\n    </ovf:Network>"));
}

#[test]
fn descriptor_replacement() {
    let d = parse(V1);
    let ok = check_replacement(&d, V1.as_bytes(), &["disk1.vmdk", "x.ovf"]).unwrap();
    assert_eq!(ok.systems.len(), 1);
    assert!(matches!(
        check_replacement(&d, V1.as_bytes(), &["other.vmdk"]),
        Err(SettingError::MissingMember { .. })
    ));
    assert!(matches!(
        check_replacement(&d, b"<not-ovf/>", &[]),
        Err(SettingError::Descriptor(_))
    ));
    let broken = V1.replace("ovf:fileRef=\"file1\"", "ovf:fileRef=\"file9\"");
    assert!(matches!(
        check_replacement(&d, broken.as_bytes(), &["disk1.vmdk"]),
        Err(SettingError::Descriptor(_))
    ));
    assert!(check_replacement(&d, V1.as_bytes(), &["./disk1.vmdk"]).is_ok());
}

#[test]
fn bad_input_is_refused_without_edits() {
    let d = parse(V1);
    assert!(matches!(
        write(&d, "vms/vm1/name", &[0xff, 0xfe]),
        Err(SettingError::NotUtf8 { .. })
    ));
    assert!(matches!(
        write(&d, "vms/vm1/annotation", b"bell\x07"),
        Err(SettingError::Invalid { .. })
    ));
    assert!(matches!(
        write(&d, "vms/vm9/cpus", b"1"),
        Err(SettingError::NotFound { .. })
    ));
    assert!(matches!(
        write(&d, "vms/vm1/configs/huge/cpus", b"1"),
        Err(SettingError::NotFound { .. })
    ));
}

#[test]
fn man_page_carries_the_generated_section() {
    let man_path = concat!(env!("CARGO_MANIFEST_DIR"), "/man/ovafs.1");
    let mut man = std::fs::read_to_string(man_path).unwrap();
    if std::env::var_os("OVAFS_REGENERATE_MAN").is_some() {
        // Replace the section (up to the next .SH), or put it before FSTAB.
        let section = man_section();
        man = match man.find(".SH SETTINGS FILES\n") {
            Some(start) => {
                let end = man[start + 1..]
                    .find("\n.SH ")
                    .map(|k| start + 1 + k + 1)
                    .unwrap_or(man.len());
                format!("{}{section}{}", &man[..start], &man[end..])
            }
            None => {
                let at = man.find(".SH FSTAB\n").unwrap_or(man.len());
                format!("{}{section}{}", &man[..at], &man[at..])
            }
        };
        std::fs::write(man_path, &man).unwrap();
    }
    assert!(
        man.contains(&man_section()),
        "man/ovafs.1 is out of date: replace its SETTINGS FILES section with settings::man_section()"
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for s in table::SETTINGS {
        let path = match s.place {
            Place::Network => format!("networks/NAME/{}", s.path),
            _ => format!("vms/ID/{}", s.path),
        };
        let leaf = s.path.rsplit('/').next().unwrap_or(s.path);
        assert!(
            readme.contains(&format!("`{path}`"))
                || readme.contains(&format!("`{leaf}`"))
                || readme.contains(&format!("/{leaf}`")),
            "README lacks {path}"
        );
    }
}

#[test]
fn large_descriptors_list_in_linear_time() {
    // 3000 adapters and 1000 properties in one system: listing reads every file once.
    let nic = r#"      <ovf:Item>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:InstanceID>N</rasd:InstanceID>
        <rasd:ResourceType>10</rasd:ResourceType>
      </ovf:Item>
"#;
    let nics: String = (0..3000)
        .map(|i| nic.replace(">N<", &format!(">n{i}<")))
        .collect();
    let props: String = (0..1000)
        .map(|i| {
            format!(
                "      <ovf:Property ovf:key=\"p{i}\" ovf:type=\"string\" ovf:value=\"{i}\"/>\n"
            )
        })
        .collect();
    let doc = V1
        .replace(
            "    </ovf:VirtualHardwareSection>",
            &format!("{nics}    </ovf:VirtualHardwareSection>"),
        )
        .replace(
            "    </ovf:ProductSection>",
            &format!("{props}    </ovf:ProductSection>"),
        );
    let d = parse(&doc);
    let start = std::time::Instant::now();
    let all = read_all(&d);
    let took = start.elapsed();
    assert!(all.len() > 4 * (3 * 3000 + 1000), "{}", all.len());
    assert!(took.as_secs() < 30, "listing took {took:?}");
    let d2 = apply(&d, "vms/vm1/nics/2999/type", "E1000");
    assert_eq!(rd(&d2, "vms/vm1/nics/2999/type"), "E1000");
}

/// V2 with the machine settings VirtualBox exports inside the VirtualSystem.
fn with_vbox_machine(hardware: &str) -> String {
    let machine = format!(
        r#"    <vbox:Machine ovf:required="false" version="1.16-linux" uuid="{{40a22499-f787-4d19-a8d7-238eca2aae88}}" name="ubuntu" OSType="Ubuntu_64">
      <ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>
      {hardware}
    </vbox:Machine>
  </VirtualSystem>"#
    );
    V2.replace(
        "xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/2\"",
        "xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/2\" xmlns:vbox=\"http://www.virtualbox.org/ovf/machine\"",
    )
    .replace("  </VirtualSystem>", &machine)
}

#[test]
fn virtualbox_machine_settings_follow_cpus_and_memory() {
    let d = parse(&with_vbox_machine(
        r#"<Hardware>
        <CPU count="1" hotplug="false">
          <PAE enabled="false"/>
        </CPU>
        <Memory RAMSize="512" PageFusion="false"/>
        <Network>
          <Adapter slot="0" enabled="true" MACAddress="080027939672" type="82540EM"/>
        </Network>
      </Hardware>"#,
    ));
    let d = apply(&d, "vms/ubuntu/cpus", "4");
    let t = text(&d);
    assert!(t.contains(r#"<CPU count="4" hotplug="false">"#), "{t}");
    let d = apply(&d, "vms/ubuntu/memory", "2 GiB");
    let t = text(&d);
    assert!(
        t.contains(r#"<Memory RAMSize="2048" PageFusion="false"/>"#),
        "{t}"
    );
    assert_eq!(rd(&d, "vms/ubuntu/cpus"), "4");
    assert_eq!(rd(&d, "vms/ubuntu/memory"), "2048");
    // The descriptor's own items changed as always; nothing else in the machine settings.
    assert!(t.contains("<rasd:VirtualQuantity>4</rasd:VirtualQuantity>"));
    assert!(t.contains(r#"<Adapter slot="0" enabled="true""#));
}

#[test]
fn virtualbox_machine_settings_get_missing_cpu_and_memory() {
    // A count left out means 1 CPU; missing elements are added in VirtualBox's order.
    let d = parse(&with_vbox_machine(
        "<Hardware>\n        <CPU hotplug=\"false\"/>\n        <Chipset type=\"PIIX3\"/>\n      </Hardware>",
    ));
    let d = apply(&d, "vms/ubuntu/cpus", "2");
    let t = text(&d);
    assert!(t.contains(r#"<CPU hotplug="false" count="2"/>"#), "{t}");
    let d = apply(&d, "vms/ubuntu/memory", "1024");
    let t = text(&d);
    let (cpu, mem, chipset) = (
        t.find("<CPU ").unwrap(),
        t.find(r#"<Memory RAMSize="1024"/>"#).expect(&t),
        t.find("<Chipset").unwrap(),
    );
    assert!(cpu < mem && mem < chipset, "{t}");

    let d = parse(&with_vbox_machine("<Hardware/>"));
    let edits = write(&d, "vms/ubuntu/cpus", b"1").unwrap();
    assert!(
        edits.is_empty(),
        "1 CPU is what the descriptor and VirtualBox both say"
    );
    let d = apply(&d, "vms/ubuntu/cpus", "3");
    let t = text(&d);
    assert!(t.contains(r#"<CPU count="3"/>"#), "{t}");
}

#[test]
fn descriptors_without_machine_settings_are_unchanged_by_the_sync() {
    // V2 has no vbox:Machine: the edit is the VirtualQuantity alone.
    let d = parse(V2);
    let edits = write(&d, "vms/ubuntu/cpus", b"2").unwrap();
    assert_eq!(edits.len(), 1, "{edits:?}");
}
