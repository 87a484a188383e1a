//! Property-based tests of the settings layer (proptest).
//!
//! Contents:
//! - `valid_values_round_trip`: random valid values for every kind of setting (counts, sizes
//!   in every spelling, MACs, booleans, tokens, free text with markup characters and line
//!   breaks, typed properties), written in a random folder of one of several documents
//!   (prefixed 1.x with configurations, the same with CRLF, default namespace with
//!   per-element declarations, OVF 0.9, OVF 2.x): the edits splice, the result parses, the
//!   file reads back the canonical value, bytes outside the edits are the old ones, and
//!   writing the new content back is no edit.
//! - `invalid_values_are_refused`: random invalid values are refused with an error and no
//!   edit, and the error is not an internal one.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use ovafs::ovf::{self, Descriptor, Edit};
use ovafs::settings::{self, SettingError};

const V1: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ovf:Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <ovf:References/>
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
  </ovf:DeploymentOptionSection>
  <ovf:VirtualSystem ovf:id="vm">
    <ovf:Info>A virtual machine</ovf:Info>
    <ovf:Name>vm</ovf:Name>
    <ovf:OperatingSystemSection ovf:id="36">
      <ovf:Info>The kind of installed guest operating system</ovf:Info>
    </ovf:OperatingSystemSection>
    <ovf:VirtualHardwareSection>
      <ovf:Info>Virtual hardware requirements</ovf:Info>
      <ovf:System>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </ovf:System>
      <ovf:Item>
        <rasd:ElementName>1 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </ovf:Item>
      <ovf:Item ovf:configuration="small medium">
        <rasd:AllocationUnits>byte * 2^30</rasd:AllocationUnits>
        <rasd:ElementName>1GB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </ovf:Item>
      <ovf:Item>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceType>10</rasd:ResourceType>
      </ovf:Item>
    </ovf:VirtualHardwareSection>
    <ovf:ProductSection>
      <ovf:Info>Product</ovf:Info>
      <ovf:Product>P</ovf:Product>
      <ovf:Property ovf:key="u8" ovf:type="uint8" ovf:value="1"/>
      <ovf:Property ovf:key="s16" ovf:type="sint16" ovf:value="-1">
        <ovf:Value ovf:configuration="small medium" ovf:value="2"/>
      </ovf:Property>
      <ovf:Property ovf:key="flag" ovf:type="boolean" ovf:value="false"/>
      <ovf:Property ovf:key="short" ovf:qualifiers="MaxLen(10)" ovf:type="string" ovf:value=""/>
      <ovf:Property ovf:key="text" ovf:type="string" ovf:value="x"/>
      <ovf:Property ovf:key="addr" ovf:type="ip" ovf:value=""/>
      <ovf:Property ovf:key="pct" ovf:qualifiers="MinValue(0) MaxValue(100)" ovf:type="uint32" ovf:value="50"/>
    </ovf:ProductSection>
  </ovf:VirtualSystem>
</ovf:Envelope>
"#;

const DEFAULT_NS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References/>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network"><Description>x</Description></Network>
    <Network ovf:name="lab"><Description>y</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="vm">
    <Info>A virtual machine</Info>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item>
        <rasd:InstanceID xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">1</rasd:InstanceID>
        <rasd:ResourceType xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">3</rasd:ResourceType>
        <rasd:VirtualQuantity xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">4</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:InstanceID xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">2</rasd:InstanceID>
        <rasd:ResourceType xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">4</rasd:ResourceType>
        <rasd:VirtualQuantity xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">6144</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Connection xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">VM Network</rasd:Connection>
        <rasd:InstanceID xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">3</rasd:InstanceID>
        <rasd:ResourceType xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
    <ProductSection>
      <Info>Product</Info>
      <Property ovf:key="u8" ovf:type="uint8" ovf:value="1"/>
      <Property ovf:key="text" ovf:type="string" ovf:value="x"/>
    </ProductSection>
  </VirtualSystem>
</Envelope>
"#;

const V09: &str = r#"<?xml version='1.0' encoding='utf-8'?>
<ovf:Envelope xmlns:ovf="http://www.vmware.com/schema/ovf/1/envelope" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <ovf:References/>
  <ovf:Section xsi:type="ovf:NetworkSection_Type">
    <ovf:Info>The list of logical networks</ovf:Info>
    <ovf:Network ovf:name="VM Network"/>
    <ovf:Network ovf:name="lab"/>
  </ovf:Section>
  <ovf:Content ovf:id="vm" xsi:type="ovf:VirtualSystem_Type">
    <ovf:Info>A virtual machine</ovf:Info>
    <ovf:Section xsi:type="ovf:VirtualHardwareSection_Type">
      <ovf:Info>hw</ovf:Info>
      <ovf:Item>
        <rasd:Caption>cpu</rasd:Caption>
        <rasd:InstanceId>1</rasd:InstanceId>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </ovf:Item>
      <ovf:Item>
        <rasd:Caption>mem</rasd:Caption>
        <rasd:InstanceId>2</rasd:InstanceId>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:VirtualQuantity>512</rasd:VirtualQuantity>
      </ovf:Item>
      <ovf:Item>
        <rasd:Caption>ethernet0</rasd:Caption>
        <rasd:InstanceId>3</rasd:InstanceId>
        <rasd:ResourceType>10</rasd:ResourceType>
        <rasd:Connection>VM Network</rasd:Connection>
      </ovf:Item>
    </ovf:Section>
    <ovf:Section xsi:type="ovf:ProductSection_Type">
      <ovf:Info>p</ovf:Info>
      <ovf:Property ovf:key="u8" ovf:type="uint8" ovf:defaultValue="1"/>
      <ovf:Property ovf:key="text" ovf:type="string"/>
    </ovf:Section>
  </ovf:Content>
</ovf:Envelope>
"#;

const V2: &str = r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/2" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:epasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData.xsd">
  <References/>
  <NetworkSection>
    <Info>n</Info>
    <Network ovf:name="VM Network"><Description>d</Description></Network>
    <Network ovf:name="lab"><Description>d</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="vm">
    <Info>A virtual machine</Info>
    <VirtualHardwareSection>
      <Info>hw</Info>
      <Item>
        <rasd:Caption>1 virtual CPU</rasd:Caption>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>512</rasd:VirtualQuantity>
      </Item>
      <EthernetPortItem>
        <epasd:Caption>e</epasd:Caption>
        <epasd:Connection>VM Network</epasd:Connection>
        <epasd:InstanceID>10</epasd:InstanceID>
        <epasd:ResourceType>10</epasd:ResourceType>
      </EthernetPortItem>
    </VirtualHardwareSection>
    <ProductSection>
      <Info>p</Info>
      <Property ovf:key="u8" ovf:type="uint8" ovf:value="1"/>
      <Property ovf:key="text" ovf:type="string" ovf:value="x"/>
    </ProductSection>
  </VirtualSystem>
</Envelope>
"#;

/// The documents, and the folders of `vm` in each.
fn documents() -> Vec<(String, Vec<&'static str>)> {
    vec![
        (
            V1.to_string(),
            vec!["vms/vm", "vms/vm/configs/small", "vms/vm/configs/medium"],
        ),
        (
            V1.replace('\n', "\r\n"),
            vec!["vms/vm", "vms/vm/configs/small"],
        ),
        (DEFAULT_NS.to_string(), vec!["vms/vm"]),
        (V09.to_string(), vec!["vms/vm"]),
        (V2.to_string(), vec!["vms/vm"]),
    ]
}

/// Which file is written and how its value reads back.
#[derive(Debug, Clone)]
enum Case {
    /// Written as given; reads back `expect`.
    Folder {
        file: &'static str,
        value: String,
        expect: String,
    },
    /// Written at the top of `vms/vm` only.
    Top {
        file: &'static str,
        value: String,
        expect: String,
    },
}

/// Free text without control characters (markup characters and non-ASCII included).
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 <>&\"'é€😀=/;:._-]{0,30}"
}

fn valid_case() -> impl Strategy<Value = Case> {
    let mib = 1u64..=(1 << 20);
    prop_oneof![
        (1u64..=4096).prop_map(|n| Case::Folder {
            file: "cpus",
            value: format!("{n}\n"),
            expect: n.to_string()
        }),
        (mib, 0usize..5).prop_map(|(n, form)| {
            let value = match form {
                0 => format!("{n}"),
                1 => format!("{n}M\n"),
                2 => format!("{n} MiB"),
                3 => format!("{} G", n.div_ceil(1024)),
                _ => format!("{}GiB\n", n.div_ceil(1024)),
            };
            let expect = if form >= 3 {
                n.div_ceil(1024) * 1024
            } else {
                n
            };
            Case::Folder {
                file: "memory",
                value,
                expect: expect.to_string(),
            }
        }),
        (any::<[u8; 6]>(), any::<bool>()).prop_map(|(mut b, dash)| {
            b[0] &= 0xfe;
            let sep = if dash { "-" } else { ":" };
            let parts: Vec<String> = b.iter().map(|x| format!("{x:02X}")).collect();
            Case::Folder {
                file: "nics/0/mac",
                value: parts.join(sep),
                expect: parts.join(":").to_ascii_lowercase(),
            }
        }),
        (any::<bool>(), 0usize..3).prop_map(|(b, form)| {
            let value = match (b, form) {
                (true, 0) => "true",
                (true, 1) => "1",
                (true, _) => "YES",
                (false, 0) => "false",
                (false, 1) => "0",
                (false, _) => "Off",
            };
            Case::Folder {
                file: "nics/0/connected",
                value: value.to_string(),
                expect: b.to_string(),
            }
        }),
        "[A-Za-z0-9._-]{1,20}".prop_map(|t| Case::Folder {
            file: "nics/0/type",
            value: format!("{t}\n"),
            expect: t
        }),
        prop_oneof![Just("lab"), Just("VM Network")].prop_map(|n| Case::Folder {
            file: "nics/0/network",
            value: n.to_string(),
            expect: n.to_string()
        }),
        text()
            .prop_filter("not blank", |t| !t.trim().is_empty())
            .prop_map(|t| Case::Folder {
                file: "nics/0/name",
                expect: t.trim().to_string(),
                value: t,
            }),
        (0u32..=255).prop_map(|n| Case::Folder {
            file: "properties/u8",
            value: n.to_string(),
            expect: n.to_string()
        }),
        text().prop_map(|t| Case::Folder {
            file: "properties/text",
            value: format!("{t}\n"),
            expect: t
        }),
        text().prop_map(|t| Case::Top {
            file: "name",
            expect: t.trim().to_string(),
            value: t,
        }),
        (text(), text()).prop_map(|(a, b)| {
            let expect = format!("{a}\n{b}").trim().to_string();
            Case::Top {
                file: "annotation",
                value: format!("{a}\r\n{b}\n"),
                expect,
            }
        }),
        text().prop_map(|t| Case::Top {
            file: "product/vendor",
            expect: t.trim().to_string(),
            value: t,
        }),
        (0usize..=120).prop_map(|id| Case::Top {
            file: "os",
            value: id.to_string(),
            expect: String::new(),
        }),
        "vmx-[0-9]{1,2}( vmx-[0-9]{1,2}){0,2}".prop_map(|t| Case::Top {
            file: "system_type",
            expect: t.clone(),
            value: t,
        }),
    ]
}

/// Cases for the properties only the V1 document has.
fn v1_property_case() -> impl Strategy<Value = Case> {
    prop_oneof![
        (i16::MIN..=i16::MAX).prop_map(|n| Case::Folder {
            file: "properties/s16",
            value: n.to_string(),
            expect: n.to_string()
        }),
        any::<bool>().prop_map(|b| Case::Folder {
            file: "properties/flag",
            value: b.to_string().to_uppercase(),
            expect: b.to_string()
        }),
        "[a-zé€ ]{0,10}".prop_map(|t| Case::Folder {
            file: "properties/short",
            expect: t.clone(),
            value: t
        }),
        (0u32..=100).prop_map(|n| Case::Folder {
            file: "properties/pct",
            value: n.to_string(),
            expect: n.to_string()
        }),
        prop_oneof![
            any::<u32>().prop_map(|a| Ipv4Addr::from(a).to_string()),
            any::<u128>().prop_map(|a| Ipv6Addr::from(a).to_string()),
        ]
        .prop_map(|a| Case::Folder {
            file: "properties/addr",
            expect: a.clone(),
            value: a
        }),
    ]
}

/// Bytes outside the edits are the old ones.
fn only_edited(old: &[u8], new: &[u8], edits: &[Edit]) -> bool {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| e.span.start);
    let (mut o, mut n) = (0usize, 0usize);
    for e in sorted {
        let keep = e.span.start - o;
        if old[o..e.span.start] != new[n..n + keep] {
            return false;
        }
        n += keep + e.replacement.len();
        o = e.span.end;
    }
    old[o..] == new[n..]
}

fn check_valid(d: &Descriptor, path: &str, value: &str, expect: &str) -> Result<(), TestCaseError> {
    if let Err(SettingError::NotFound { .. }) = settings::read(d, path) {
        // Not every document has every setting (no System element, ...).
        let refused = matches!(
            settings::write(d, path, value.as_bytes()),
            Err(SettingError::NotFound { .. })
        );
        prop_assert!(refused, "{} is not listed but writable", path);
        return Ok(());
    }
    let edits = settings::write(d, path, value.as_bytes())
        .map_err(|e| TestCaseError::fail(format!("{path} {value:?}: {e}")))?;
    let before = settings::read(d, path).map_err(|e| TestCaseError::fail(e.to_string()))?;
    if edits.is_empty() {
        // Unchanged: the file already holds the value.
        if !expect.is_empty() {
            prop_assert_eq!(before.trim_end_matches('\n'), expect);
        }
        return Ok(());
    }
    let bytes = ovf::splice(&d.bytes, &edits).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(only_edited(&d.bytes, &bytes, &edits));
    if !d.bytes.contains(&b'\r') {
        prop_assert!(!bytes.contains(&b'\r'), "a CR in an LF document");
    } else {
        let s = String::from_utf8_lossy(&bytes).replace("\r\n", "");
        prop_assert!(!s.contains('\n'), "an LF alone in a CRLF document");
    }
    let d2 = ovf::parse_descriptor(&bytes)
        .map_err(|e| TestCaseError::fail(format!("{path} {value:?}: {e}")))?;
    let got = settings::read(&d2, path).map_err(|e| TestCaseError::fail(e.to_string()))?;
    if !expect.is_empty() {
        prop_assert_eq!(got.trim_end_matches('\n'), expect, "{} {:?}", path, value);
    }
    let again = settings::write(&d2, path, got.as_bytes())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(again.is_empty());
    let again = settings::write(&d2, path, value.as_bytes())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(
        again.is_empty(),
        "rewriting {:?} to {} edits again",
        value,
        path
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn valid_values_round_trip(doc in 0usize..5, folder in 0usize..3, case in valid_case()) {
        let docs = documents();
        let (text, folders) = &docs[doc];
        let d = ovf::parse_descriptor(text.as_bytes()).unwrap();
        let (path, value, expect) = match &case {
            Case::Folder { file, value, expect } => {
                let f = folders[folder % folders.len()];
                (format!("{f}/{file}"), value.clone(), expect.clone())
            }
            Case::Top { file, value, expect } => (format!("vms/vm/{file}"), value.clone(), expect.clone()),
        };
        check_valid(&d, &path, &value, &expect)?;
    }

    #[test]
    fn v1_properties_round_trip(crlf in any::<bool>(), folder in 0usize..3, case in v1_property_case()) {
        let text = if crlf { V1.replace('\n', "\r\n") } else { V1.to_string() };
        let d = ovf::parse_descriptor(text.as_bytes()).unwrap();
        let f = ["vms/vm", "vms/vm/configs/small", "vms/vm/configs/medium"][folder];
        let Case::Folder { file, value, expect } = case else { unreachable!() };
        check_valid(&d, &format!("{f}/{file}"), &value, &expect)?;
    }

    #[test]
    fn invalid_values_are_refused(doc in 0usize..5, which in 0usize..9, junk in "[ -~]{0,12}", n in any::<i64>()) {
        let docs = documents();
        let (text, _) = &docs[doc];
        let d = ovf::parse_descriptor(text.as_bytes()).unwrap();
        let (file, value): (&str, String) = match which {
            0 => ("cpus", if junk.trim().bytes().all(|b| b.is_ascii_digit()) { "0".into() } else { junk.clone() }),
            1 => ("cpus", (4097 + n.unsigned_abs() % 1_000_000).to_string()),
            2 => ("memory", format!("{}K", 1 + (n.unsigned_abs() % 1023))),
            3 => ("memory", format!("x{junk}")),
            4 => ("nics/0/mac", format!("{junk}:zz")),
            5 => ("nics/0/connected", format!("{junk}?")),
            6 => ("properties/u8", (256 + n.unsigned_abs() % 100_000).to_string()),
            7 => ("properties/u8", format!("-{}", 1 + n.unsigned_abs() % 1000)),
            _ => ("nics/0/network", format!("no such network {junk}")),
        };
        let path = format!("vms/vm/{file}");
        match settings::write(&d, &path, value.as_bytes()) {
            Ok(edits) => prop_assert!(false, "{} {:?} accepted: {:?}", path, value, edits),
            Err(SettingError::Internal(e)) => prop_assert!(false, "internal error {}", e),
            Err(_) => {}
        }
    }
}

/// Applies one structural mutation to a document: delete, duplicate or move a range of
/// lines, or replace a value with junk.
fn mutate(doc: &str, op: usize, a: usize, b: usize, junk: &str) -> String {
    let lines: Vec<&str> = doc.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let n = lines.len();
    let (i, j) = (a % n, b % n);
    let (lo, hi) = (i.min(j), i.max(j));
    let mut out: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    match op % 4 {
        0 => {
            out.drain(lo..=hi.min(out.len().saturating_sub(1)));
        }
        1 => {
            let chunk: Vec<String> = out[lo..=hi].to_vec();
            let at = (a / 7) % (out.len() + 1);
            for (k, l) in chunk.into_iter().enumerate() {
                out.insert(at + k, l);
            }
        }
        2 => {
            let line = out[lo].clone();
            if let (Some(s), Some(e)) = (line.find('>'), line.rfind('<'))
                && s < e
            {
                out[lo] = format!("{}{junk}{}", &line[..=s], &line[e..]);
            }
        }
        _ => {
            let line = out[lo].clone();
            if let Some(q) = line.find("=\"") {
                out[lo] = format!("{}=\"{junk}{}", &line[..q], &line[q + 2..]);
            }
        }
    }
    out.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Mutated descriptors that still parse never make the settings layer panic, and
    /// whatever a write accepts re-parses (the write verifies it) and reads back.
    #[test]
    fn mutated_descriptors_do_not_panic(
        doc in 0usize..5,
        ops in proptest::collection::vec((0usize..4, any::<usize>(), any::<usize>(), "[a-z0-9 ]{0,6}"), 1..4),
        value in "[a-zA-Z0-9:. ]{0,12}",
    ) {
        let docs = documents();
        let mut text = docs[doc].0.clone();
        for (op, a, b, junk) in &ops {
            text = mutate(&text, *op, *a, *b, junk);
        }
        let Ok(d) = ovf::parse_descriptor(text.as_bytes()) else {
            return Ok(());
        };
        let all = settings::read_all(&d);
        for (path, cur) in &all {
            let got = settings::read(&d, path).ok();
            prop_assert_eq!(got.as_ref(), Some(cur));
            for v in [cur.as_str(), value.as_str(), "2", "true", "lab"] {
                if let Ok(edits) = settings::write(&d, path, v.as_bytes())
                    && !edits.is_empty()
                {
                    let bytes = ovf::splice(&d.bytes, &edits).unwrap();
                    prop_assert!(ovf::parse_descriptor(&bytes).is_ok());
                }
            }
        }
        let _ = settings::mkdir(&d, "networks/new");
        let _ = settings::rmdir(&d, "networks/lab");
        let _ = settings::check_replacement(&d, text.as_bytes(), &[]);
    }
}
