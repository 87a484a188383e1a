//! `ovafs info` (issue 13 part 5): properties with their types, qualifiers and values, the
//! deployment configurations and what each changes, in text and JSON, on an OVA built by
//! GNU tar whose descriptor has a DeploymentOptionSection, configuration-specific hardware
//! items and Values, and a password property. COT's `cot info --verbose` is the independent
//! judge of the same facts (its configuration profiles with their CPUs and memory, the
//! property keys and values).
//!
//! Contents:
//! - `info_shows_properties_and_configurations`: text and `--json`; a password value is
//!   printed nowhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{OvaBuilder, run_ok, tempdir, tool};
use serde_json::Value;

const CONFIGS: &str = r#"  <DeploymentOptionSection>
    <Info>Sizes</Info>
    <Configuration ovf:id="small" ovf:default="true">
      <Label>Small</Label>
      <Description>2 CPUs, 1 GiB</Description>
    </Configuration>
    <Configuration ovf:id="large">
      <Label>Large</Label>
      <Description>8 CPUs, 8 GiB</Description>
    </Configuration>
  </DeploymentOptionSection>
  <VirtualSystem ovf:id="info">"#;

const PROPERTIES: &str = r#"      </Property>
      <Property ovf:key="admin_password" ovf:type="string" ovf:password="true" ovf:userConfigurable="true" ovf:value="s3cret-default"/>
      <Property ovf:key="ip" ovf:type="string" ovf:qualifiers="MaxLen(15)" ovf:userConfigurable="true" ovf:value="10.0.0.1">
        <Label>IP address</Label>
        <Value ovf:value="10.0.0.99" ovf:configuration="large"/>
      </Property>
      <Property ovf:key="workers" ovf:type="uint8" ovf:value="1"/>
    </ProductSection>"#;

const LARGE_ITEMS: &str = r#"<rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item ovf:configuration="large">
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>8 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>8</rasd:VirtualQuantity>
      </Item>"#;

/// After the base memory item: a configuration's item overrides the ones before it.
const LARGE_MEMORY: &str = r#"<rasd:VirtualQuantity>1024</rasd:VirtualQuantity>
      </Item>
      <Item ovf:configuration="large">
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>8192MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>8192</rasd:VirtualQuantity>
      </Item>"#;

/// The fixture: the sample appliance (2 CPUs, 1024 MiB, `hostname`) with two
/// configurations, `large` raising CPUs, memory and the `ip` property's value.
fn configured_ova(dir: &Path) -> PathBuf {
    let raw = dir.join("info.img");
    common::scattered_raw(&raw, 1 << 20, 2, 7);
    OvaBuilder::new(&dir.join("pkg"), "info")
        .disk(&raw, 1 << 20, "http://example.org/raw")
        .edit_descriptor(r#"  <VirtualSystem ovf:id="info">"#, CONFIGS)
        .edit_descriptor("      </Property>\n    </ProductSection>", PROPERTIES)
        .edit_descriptor(
            "<rasd:VirtualQuantity>2</rasd:VirtualQuantity>\n      </Item>",
            LARGE_ITEMS,
        )
        .edit_descriptor(
            "<rasd:VirtualQuantity>1024</rasd:VirtualQuantity>\n      </Item>",
            LARGE_MEMORY,
        )
        .build()
}

fn info(args: &[&str]) -> String {
    let out = run_ok(Command::new(common::ovafs()).arg("info").args(args));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn info_shows_properties_and_configurations() {
    let tmp = tempdir();
    let ova = configured_ova(tmp.path());
    let path = common::path_str(&ova);

    let text = info(&[path]);
    for want in [
        "product ovafs sample 1.0, 4 properties",
        r#"hostname: string, user-configurable = "sample" ("Host name")"#,
        "admin_password: string, user-configurable, password = (hidden)",
        r#"ip: string, qualifiers "MaxLen(15)", user-configurable = "10.0.0.1" ("IP address")"#,
        r#"workers: uint8 = "1""#,
        "Deployment configurations (2):",
        r#"  small "Small" (default)"#,
        r#"  large "Large""#,
        r#"info/cpus: "8" (default "2")"#,
        r#"info/properties/ip: "10.0.0.99" (default "10.0.0.1")"#,
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    assert!(text.contains("info/memory: "), "{text}");
    assert!(!text.contains("s3cret"), "a password is printed:\n{text}");

    let json = info(&["--json", path]);
    assert!(!json.contains("s3cret"), "a password is printed:\n{json}");
    let v: Value = serde_json::from_str(&json).unwrap();
    let props = v["systems"][0]["properties"].as_array().unwrap();
    let keys: Vec<&str> = props.iter().map(|p| p["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["hostname", "admin_password", "ip", "workers"]);
    assert_eq!(props[1]["password"], true);
    assert_eq!(props[1]["value"], Value::Null);
    assert_eq!(props[2]["qualifiers"], "MaxLen(15)");
    assert_eq!(props[3]["type"], "uint8");
    let configs = v["configurations"].as_array().unwrap();
    assert_eq!(configs.len(), 2);
    assert_eq!(configs[0]["default"], true);
    assert_eq!(configs[0]["changes"].as_array().unwrap().len(), 0);
    let changes: Vec<(String, String, String)> = configs[1]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["setting"].as_str().unwrap().to_string(),
                c["value"].as_str().unwrap_or("").to_string(),
                c["defaultValue"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let setting = |s: &str| changes.iter().find(|c| c.0 == s).cloned();
    assert_eq!(
        setting("cpus"),
        Some(("cpus".into(), "8".into(), "2".into()))
    );
    assert_eq!(
        setting("properties/ip"),
        Some((
            "properties/ip".into(),
            "10.0.0.99".into(),
            "10.0.0.1".into()
        ))
    );
    // The memory file is in MiB: 8192 and 1024, COT's 8 GiB and 1 GiB below.
    assert_eq!(
        setting("memory"),
        Some(("memory".into(), "8192".into(), "1024".into()))
    );
    assert_eq!(
        changes.len(),
        3,
        "only cpus, memory and ip differ: {changes:?}"
    );

    // COT reads the same facts from the descriptor.
    let cot = run_ok(Command::new(tool("cot")).args(["info", "--verbose", path]));
    let cot = String::from_utf8_lossy(&cot.stdout);
    for want in [
        "small",
        "large",
        "hostname",
        "admin_password",
        "ip",
        "workers",
        "10.0.0.1",
    ] {
        assert!(cot.contains(want), "cot info shows no {want:?}:\n{cot}");
    }
    // COT's profile table: `ID [(default)] CPUs MEMORY UNIT NICs ...`.
    let profile = |id: &str| -> (String, String) {
        let line = cot
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{id} ")) && l.contains("iB"))
            .unwrap_or_else(|| panic!("no {id} profile line in cot info:\n{cot}"));
        let t: Vec<&str> = line
            .split_whitespace()
            .filter(|t| *t != "(default)")
            .collect();
        (t[1].to_string(), format!("{} {}", t[2], t[3]))
    };
    assert_eq!(profile("small"), ("2".into(), "1 GiB".into()));
    assert_eq!(profile("large"), ("8".into(), "8 GiB".into()));
    assert!(
        cot.contains("(default)") && cot.contains("small (default)"),
        "{cot}"
    );
}
