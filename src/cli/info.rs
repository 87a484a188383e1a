//! `ovafs info`: what an appliance holds, for people (text) or scripts (`--json`).
//!
//! Opens the package and every disk's headers (metadata only, like a mount), but unlike a
//! mount it reports a broken disk instead of failing, so it can be used to find out what is
//! wrong with a package. Exit status 1 when a disk is broken.

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
    properties: usize,
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

fn system_summary(_d: &Descriptor, s: &VirtualSystem) -> SystemSummary {
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
        properties: s.properties.len(),
    }
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
        if let Some(p) = &v.product {
            println!("    product {p}, {} properties", v.properties);
        } else if v.properties > 0 {
            println!("    {} properties", v.properties);
        }
    }
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
