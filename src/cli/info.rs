//! `ovafs info`: what an appliance holds, for people (text) or scripts (`--json`).
//!
//! Opens the package and every disk's headers (metadata only, like a mount), but unlike a
//! mount it reports a broken disk instead of failing, so it can be used to find out what is
//! wrong with a package. Exit status 1 when a disk is broken.
//!
//! Properties (DSP0243 ProductSection) are listed with their type, qualifiers and the value
//! a deployment starts from: the `Value` of the default configuration, else `ovf:value`.
//! Password values are never printed (text: `(hidden)`; JSON: `null` with `password`
//! true); the settings files give them to who may read them. Deployment configurations
//! (DeploymentOptionSection) are listed with what each sets differently from the default
//! configuration, compared through the settings layer's per-configuration files
//! (`vms/ID/configs/CONFIG/`: cpus, cores per socket, memory, NICs, property values), so
//! `ovafs info` and a mount agree.

use std::path::Path;

use serde::Serialize;

use super::{EXIT_FAILURE, EXIT_OK};
use crate::appliance::{Appliance, DISKS_DIR, DiskStatus, disk_href};
use crate::error::Result;
use crate::ovf::{Descriptor, VirtualSystem};
use crate::package::{Package, SourceKind};
use crate::units::human_size;

/// The summary, shaped for JSON.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    source: String,
    kind: &'static str,
    ovf_version: String,
    descriptor: String,
    manifest: Option<String>,
    certificate: Option<String>,
    systems: Vec<SystemSummary>,
    configurations: Vec<ConfigurationSummary>,
    disks: Vec<DiskSummary>,
    networks: Vec<NetworkSummary>,
    warnings: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SystemSummary {
    id: String,
    name: Option<String>,
    /// Ids of the enclosing VirtualSystemCollections, outermost first.
    collections: Vec<String>,
    os_id: Option<u16>,
    os: Option<String>,
    cpus: Option<u64>,
    memory_mib: Option<u64>,
    nics: Vec<NicSummary>,
    product: Option<String>,
    properties: Vec<PropertySummary>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PropertySummary {
    /// `[class.]key[.instance]`, as the guest sees it.
    key: String,
    #[serde(rename = "type")]
    type_name: Option<String>,
    qualifiers: Option<String>,
    /// The value in the default configuration (`None` for a password).
    value: Option<String>,
    user_configurable: bool,
    password: bool,
    label: Option<String>,
    description: Option<String>,
    /// The configurations it is limited to (`ovf:configuration`), if any.
    configurations: Option<Vec<String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigurationSummary {
    id: String,
    label: Option<String>,
    description: Option<String>,
    default: bool,
    /// What differs from the default configuration.
    changes: Vec<ConfigChange>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigChange {
    /// The VirtualSystem or collection.
    content: String,
    /// The setting, as under `vms/ID/configs/CONFIG/` (`cpus`, `properties/KEY`).
    setting: String,
    /// Its value in this configuration (`None`: not set here, or a password).
    value: Option<String>,
    /// Its value in the default configuration (`None`: not set there, or a password).
    default_value: Option<String>,
    password: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NicSummary {
    name: Option<String>,
    network: Option<String>,
    adapter: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DiskSummary {
    id: String,
    file: Option<String>,
    /// Path of the flat image inside a mount, when one is shown.
    flat_image: Option<String>,
    format: Option<String>,
    format_uri: Option<String>,
    /// From the image's own header.
    capacity_bytes: Option<u64>,
    /// From the descriptor (ovf:capacity with its units).
    declared_capacity_bytes: Option<u64>,
    stored_bytes: Option<u64>,
    /// Why no flat image is shown, or what is broken.
    problem: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NetworkSummary {
    name: String,
    description: Option<String>,
}

/// Runs `ovafs info`.
pub fn run(source: &Path, json: bool) -> Result<i32> {
    crate::logging::init_stderr(false);
    // A FIFO, device or directory is refused at once (the open does not block).
    crate::io::open_regular_file(source)?;
    let (package, statuses, _) = Appliance::open_each(source)?;
    let summary = summarise(source, &package, &statuses);
    if json {
        match serde_json::to_string_pretty(&summary) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                return Err(crate::error::Error::usage(format!(
                    "cannot write JSON: {e}"
                )));
            }
        }
    } else {
        print_text(&summary);
    }
    let broken = statuses
        .iter()
        .any(|s| matches!(s, DiskStatus::Broken { .. }));
    Ok(if broken { EXIT_FAILURE } else { EXIT_OK })
}

fn summarise(source: &Path, package: &Package, statuses: &[DiskStatus]) -> Summary {
    let d = &package.descriptor;
    let member_name = |i: Option<usize>| {
        i.and_then(|i| package.members.get(i))
            .map(|m| m.name.clone())
    };
    Summary {
        source: source.display().to_string(),
        kind: match package.kind {
            SourceKind::Ova => "ova",
            SourceKind::Folder => "folder",
        },
        ovf_version: d.version.to_string(),
        descriptor: member_name(Some(package.descriptor_member)).unwrap_or_default(),
        manifest: member_name(package.manifest_member),
        certificate: member_name(package.certificate_member),
        systems: d.systems.iter().map(|s| system_summary(d, s)).collect(),
        configurations: configuration_summaries(d),
        disks: package
            .disks
            .iter()
            .zip(statuses)
            .map(|(pd, st)| disk_summary(package, pd, st))
            .collect(),
        networks: d
            .networks
            .iter()
            .map(|n| NetworkSummary {
                name: n.name.to_string(),
                description: n.description.as_ref().map(|x| x.to_string()),
            })
            .collect(),
        warnings: package.warnings.clone(),
    }
}

fn system_summary(d: &Descriptor, s: &VirtualSystem) -> SystemSummary {
    SystemSummary {
        id: s.id.to_string(),
        name: s.name.as_ref().map(|n| n.to_string()),
        collections: s.path.clone(),
        os_id: s.os.as_ref().map(|o| *o.id),
        os: s.os.as_ref().and_then(|o| {
            o.description
                .as_ref()
                .map(|x| x.to_string())
                .or_else(|| o.vmw_os_type.as_ref().map(|x| x.to_string()))
        }),
        cpus: s.cpus.as_ref().map(|c| **c),
        memory_mib: s.memory_mib,
        nics: s
            .nics
            .iter()
            .map(|n| NicSummary {
                name: n.element_name.as_ref().map(|x| x.to_string()),
                network: n.connection.as_ref().map(|x| x.to_string()),
                adapter: n.subtype.as_ref().map(|x| x.to_string()),
            })
            .collect(),
        product: s.product.as_ref().and_then(|p| {
            let name = p.product.as_ref()?.to_string();
            Some(match p.version.as_ref() {
                Some(v) => format!("{name} {}", &**v),
                None => name,
            })
        }),
        properties: s
            .properties
            .iter()
            .map(|p| property_summary(d, p))
            .collect(),
    }
}

fn property_summary(d: &Descriptor, p: &crate::ovf::Property) -> PropertySummary {
    let default = d.default_configuration().map(|c| c.id.value.as_str());
    let text = |x: Option<&crate::ovf::Spanned<String>>| x.map(|v| v.value.clone());
    PropertySummary {
        key: p.full_key(),
        type_name: text(p.type_name.as_ref()),
        qualifiers: text(p.qualifiers.as_ref()),
        value: if p.is_password() {
            None
        } else {
            text(p.value_for(default))
        },
        user_configurable: p.is_user_configurable(),
        password: p.is_password(),
        label: text(p.label.as_ref()),
        description: text(p.description.as_ref()),
        configurations: p.configurations.as_ref().map(|l| l.value.clone()),
    }
}

/// The deployment configurations, each with what it sets differently from the default one.
fn configuration_summaries(d: &Descriptor) -> Vec<ConfigurationSummary> {
    let per = crate::settings::per_configuration(d);
    let default = d.default_configuration().map(|c| c.id.value.as_str());
    d.configurations
        .iter()
        .enumerate()
        .map(|(ci, c)| {
            let is_default = Some(c.id.value.as_str()) == default;
            ConfigurationSummary {
                id: c.id.value.clone(),
                label: c.label.as_ref().map(|l| l.value.clone()),
                description: c.description.as_ref().map(|l| l.value.clone()),
                default: is_default,
                changes: if is_default {
                    Vec::new()
                } else {
                    per.iter()
                        .flat_map(|content| changes_of(content, ci, default))
                        .collect()
                },
            }
        })
        .collect()
}

/// The files of one configuration by path.
fn setting_map(
    c: Option<&(String, Vec<crate::settings::ConfigSetting>)>,
) -> std::collections::BTreeMap<&str, &crate::settings::ConfigSetting> {
    c.map(|(_, v)| v.iter().map(|s| (s.path.as_str(), s)).collect())
        .unwrap_or_default()
}

/// What configuration `ci` of `content` sets differently from configuration `default`.
fn changes_of(
    content: &crate::settings::ContentConfigs,
    ci: usize,
    default: Option<&str>,
) -> Vec<ConfigChange> {
    let here = setting_map(content.configurations.get(ci));
    let base = setting_map(
        content
            .configurations
            .iter()
            .find(|(id, _)| Some(id.as_str()) == default),
    );
    let mut paths: Vec<&str> = here.keys().chain(base.keys()).copied().collect();
    paths.sort_unstable();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|path| {
            let (a, b) = (here.get(path), base.get(path));
            if a.map(|s| &s.value) == b.map(|s| &s.value) {
                return None;
            }
            let password = a.or(b).is_some_and(|s| s.secret);
            let shown = |s: Option<&&crate::settings::ConfigSetting>| {
                s.filter(|_| !password).map(|s| s.value.clone())
            };
            Some(ConfigChange {
                content: content.id.clone(),
                setting: path.to_string(),
                value: shown(a),
                default_value: shown(b),
                password,
            })
        })
        .collect()
}

fn disk_summary(
    package: &Package,
    pd: &crate::package::PackageDisk,
    status: &DiskStatus,
) -> DiskSummary {
    let def = package.descriptor.disk(&pd.disk_id);
    let href = disk_href(package, pd);
    let mut s = DiskSummary {
        id: pd.disk_id.clone(),
        file: (!href.is_empty()).then_some(href),
        flat_image: None,
        format: None,
        format_uri: def.and_then(|d| d.format_uri.as_ref().map(|u| u.to_string())),
        capacity_bytes: None,
        declared_capacity_bytes: def.and_then(|d| d.capacity_bytes),
        stored_bytes: pd.data.as_ref().map(|d| d.len()),
        problem: None,
    };
    match status {
        DiskStatus::Ready(d) => {
            s.flat_image = Some(format!("{DISKS_DIR}/{}.raw", d.stem));
            s.format = Some(d.image.format().to_string());
            s.capacity_bytes = Some(d.image.virtual_size());
        }
        DiskStatus::NotShown { reason, .. } => s.problem = Some(reason.clone()),
        DiskStatus::Broken { error, .. } => s.problem = Some(format!("broken: {error}")),
    }
    s
}

/// `key: type, qualifiers Q, user-configurable, password = "value" (label)`, the value
/// quoted with escapes (a hostile descriptor's value may hold control characters).
fn property_line(p: &PropertySummary) -> String {
    let mut facts: Vec<String> = Vec::new();
    facts.push(
        p.type_name
            .as_deref()
            .map_or_else(|| "no type".into(), shown),
    );
    if let Some(q) = &p.qualifiers {
        facts.push(format!("qualifiers {q:?}"));
    }
    if p.user_configurable {
        facts.push("user-configurable".into());
    }
    if p.password {
        facts.push("password".into());
    }
    if let Some(c) = &p.configurations {
        facts.push(format!("only in {}", shown(&c.join(" "))));
    }
    let value = match (&p.value, p.password) {
        (_, true) => "(hidden)".to_string(),
        (Some(v), false) => format!("{v:?}"),
        (None, false) => "(no value)".to_string(),
    };
    let mut line = format!("{}: {} = {value}", shown(&p.key), facts.join(", "));
    if let Some(l) = &p.label {
        line += &format!(" ({l:?})");
    }
    line
}

/// A name from the descriptor with its control characters escaped, so that it cannot
/// move the terminal's cursor or forge lines.
fn shown(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn print_configurations(configs: &[ConfigurationSummary]) {
    if configs.is_empty() {
        return;
    }
    println!("\nDeployment configurations ({}):", configs.len());
    for c in configs {
        let mut line = format!("  {}", shown(&c.id));
        if let Some(l) = &c.label {
            line += &format!(" {l:?}");
        }
        if c.default {
            line += " (default)";
        }
        println!("{line}");
        if !c.default && c.changes.is_empty() {
            println!("    same settings as the default");
        }
        for ch in &c.changes {
            let value = |v: &Option<String>| match (v, ch.password) {
                (_, true) => "(hidden)".to_string(),
                (Some(v), false) => format!("{v:?}"),
                (None, false) => "(not set)".to_string(),
            };
            println!(
                "    {}/{}: {} (default {})",
                shown(&ch.content),
                shown(&ch.setting),
                value(&ch.value),
                value(&ch.default_value)
            );
        }
    }
}

fn print_text(s: &Summary) {
    println!("{}: {} package, OVF {}", s.source, s.kind, s.ovf_version);
    println!("  descriptor {}", s.descriptor);
    match &s.manifest {
        Some(m) => println!("  manifest   {m}"),
        None => println!("  manifest   none"),
    }
    if let Some(c) = &s.certificate {
        println!("  certificate {c}");
    }
    println!("\nVirtual systems ({}):", s.systems.len());
    for v in &s.systems {
        let mut line = format!("  {}", v.id);
        if let Some(n) = v.name.as_ref().filter(|n| **n != v.id) {
            line += &format!(" \"{n}\"");
        }
        if !v.collections.is_empty() {
            line += &format!(" (in {})", v.collections.join(" / "));
        }
        println!("{line}");
        let cpus = v
            .cpus
            .map(|c| format!("{c} CPU{}", if c == 1 { "" } else { "s" }));
        let mem = v.memory_mib.map(|m| format!("{m} MiB memory"));
        let os =
            v.os.clone()
                .or_else(|| v.os_id.map(|i| format!("OS type {i}")));
        let facts: Vec<String> = [cpus, mem, os].into_iter().flatten().collect();
        if !facts.is_empty() {
            println!("    {}", facts.join(", "));
        }
        for (i, n) in v.nics.iter().enumerate() {
            println!(
                "    NIC {}: {} on {}",
                i + 1,
                n.adapter.as_deref().unwrap_or("adapter"),
                n.network
                    .as_deref()
                    .map(|x| format!("\"{x}\""))
                    .unwrap_or_else(|| "no network".into())
            );
        }
        let n = v.properties.len();
        let plural = if n == 1 { "property" } else { "properties" };
        if let Some(p) = &v.product {
            println!("    product {p}, {n} {plural}");
        } else if n > 0 {
            println!("    {n} {plural}");
        }
        for p in &v.properties {
            println!("      {}", property_line(p));
        }
    }
    print_configurations(&s.configurations);
    println!("\nDisks ({}):", s.disks.len());
    for d in &s.disks {
        let mut line = format!("  {}", d.id);
        if let Some(f) = &d.file {
            line += &format!("  {f}");
        }
        if let Some(fmt) = &d.format {
            line += &format!("  {fmt}");
        }
        if let Some(c) = d.capacity_bytes.or(d.declared_capacity_bytes) {
            line += &format!("  capacity {}", human_size(c));
        }
        if let Some(b) = d.stored_bytes {
            line += &format!("  stored {}", human_size(b));
        }
        println!("{line}");
        if let Some(f) = &d.flat_image {
            println!("    flat image: {f}");
        }
        if let (Some(a), Some(b)) = (d.capacity_bytes, d.declared_capacity_bytes)
            && a != b
        {
            println!("    note: the descriptor declares {b} bytes, the image header {a}");
        }
        if let Some(p) = &d.problem {
            println!("    {p}");
        }
    }
    println!("\nNetworks ({}):", s.networks.len());
    for n in &s.networks {
        match &n.description {
            Some(desc) => println!("  {}: {desc}", n.name),
            None => println!("  {}", n.name),
        }
    }
    for w in &s.warnings {
        println!("warning: {w}");
    }
}
