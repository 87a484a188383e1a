//! Deployment files (issue 13): what a hypervisor or a guest needs to run the appliance,
//! generated from the descriptor as it is now, so they are always in step with the settings.
//!
//! Every VirtualSystem and VirtualSystemCollection folder `vms/ID/` gets `deploy/` with:
//! - `ovf-env.xml`: the OVF environment (DSP0243 §11, "OVF environment"): the properties with
//!   their current values in the selected deployment configuration, the PlatformSection, and
//!   for a collection one Entity per child ([`env`]);
//! - `ovf-env.iso`: an ISO 9660 image holding that `ovf-env.xml` at its root, the ISO
//!   transport of DSP0243 §11.2 as VMware and cloud-init's OVF data source read it ([`iso`]);
//! - for a VirtualSystem only, `libvirt.xml` (a libvirt domain) and `qemu.sh` (the same as a
//!   qemu-system-x86_64 command line), both using the mount's flat disks and attaching the
//!   environment ISO as a CD-ROM when the system has properties ([`launch`], [`libvirt`],
//!   [`qemu`]).
//!
//! Pure logic: a function of the descriptor and a [`DeployContext`] (where the mount is, which
//! flat file each disk is, which configuration is deployed). Nothing here knows FUSE; the
//! editor lists [`tree`] with its settings and answers reads with [`read`], caching the bytes
//! until the descriptor changes, so a file is byte-stable while the settings do not change.

pub mod env;
pub mod iso;
pub mod launch;
pub mod libvirt;
pub mod qemu;
mod xml;

use std::path::PathBuf;

use crate::ovf::Descriptor;
use crate::settings::{Owner, content_folders};

/// Name of the folder under each `vms/ID/`.
pub const DEPLOY_DIR: &str = "deploy";

/// A deployment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployFile {
    /// `ovf-env.xml`.
    EnvironmentXml,
    /// `ovf-env.iso`.
    EnvironmentIso,
    /// `libvirt.xml`.
    LibvirtDomain,
    /// `qemu.sh`.
    QemuScript,
}

impl DeployFile {
    /// Every kind, in listing order.
    pub const ALL: [DeployFile; 4] = [
        DeployFile::EnvironmentXml,
        DeployFile::EnvironmentIso,
        DeployFile::LibvirtDomain,
        DeployFile::QemuScript,
    ];

    /// Its file name in `deploy/`.
    pub fn name(self) -> &'static str {
        match self {
            DeployFile::EnvironmentXml => "ovf-env.xml",
            DeployFile::EnvironmentIso => "ovf-env.iso",
            DeployFile::LibvirtDomain => "libvirt.xml",
            DeployFile::QemuScript => "qemu.sh",
        }
    }

    /// Whether a content of this kind has the file: the environment for every content, the
    /// launch files for VirtualSystems only (a collection is started system by system).
    fn applies_to(self, owner: Owner) -> bool {
        match self {
            DeployFile::EnvironmentXml | DeployFile::EnvironmentIso => true,
            DeployFile::LibvirtDomain | DeployFile::QemuScript => {
                matches!(owner, Owner::System(_))
            }
        }
    }

    /// Whether its bytes carry property values (so a password property makes it readable by
    /// the mount's owner only).
    fn carries_properties(self) -> bool {
        matches!(
            self,
            DeployFile::EnvironmentXml | DeployFile::EnvironmentIso
        )
    }

    fn from_name(name: &str) -> Option<DeployFile> {
        DeployFile::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A flat disk of the mount, as the launch files name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatDiskPath {
    /// `ovf:diskId` of the Disk it shows.
    pub disk_id: String,
    /// Its path relative to the mount (`disks/NAME.raw`).
    pub path: String,
}

/// What the deployment files depend on besides the descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeployContext {
    /// The mount point, absolute (launch files name the mount's files by absolute path).
    pub mountpoint: PathBuf,
    /// The flat disks the mount shows.
    pub disks: Vec<FlatDiskPath>,
    /// The deployment configuration to deploy (`-o deployment=CONFIG`); `None`: the
    /// descriptor's default configuration.
    pub configuration: Option<String>,
    /// Whether the flat disks accept writes (a writable mount): the launch files then attach
    /// them read-write, else read-only.
    pub writable_disks: bool,
}

impl DeployContext {
    /// The absolute path of the mount's file at `relative` (`disks/x.raw`).
    pub fn mount_path(&self, relative: &str) -> PathBuf {
        self.mountpoint.join(relative)
    }

    /// The flat disk showing the Disk `disk_id`, as an absolute path.
    pub fn flat_disk(&self, disk_id: &str) -> Option<PathBuf> {
        self.disks
            .iter()
            .find(|d| d.disk_id == disk_id)
            .map(|d| self.mount_path(&d.path))
    }
}

/// What a deployment file cannot be made from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeployError {
    /// `-o deployment=` names a configuration the descriptor does not have.
    #[error("deployment configuration '{0}' is not in the DeploymentOptionSection")]
    UnknownConfiguration(String),
    /// The content the file would describe is not there (the descriptor changed).
    #[error("{0}: no such virtual system or collection")]
    NoContent(String),
    /// Something in the descriptor the file needs is missing or unusable.
    #[error("{file}: {reason}")]
    Unusable {
        /// The deployment file.
        file: &'static str,
        /// What is wrong, for the user's log.
        reason: String,
    },
}

/// One entry of the deployment tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployEntry {
    /// Path relative to the settings root (`vms/ID/deploy` or `vms/ID/deploy/ovf-env.xml`).
    pub path: String,
    /// A folder (else a file).
    pub folder: bool,
    /// Holds a password property's value: readable by its owner only.
    pub secret: bool,
}

/// Every deployment folder and file of `desc`, folders first.
pub fn tree(desc: &Descriptor) -> Vec<DeployEntry> {
    let secret = desc.properties().any(|p| p.is_password());
    let mut out = Vec::new();
    for (name, owner) in content_folders(desc) {
        let folder = format!("vms/{name}/{DEPLOY_DIR}");
        out.push(DeployEntry {
            path: folder.clone(),
            folder: true,
            secret: false,
        });
        for f in DeployFile::ALL.into_iter().filter(|f| f.applies_to(owner)) {
            out.push(DeployEntry {
                path: format!("{folder}/{}", f.name()),
                folder: false,
                secret: secret && f.carries_properties(),
            });
        }
    }
    out
}

/// Whether `path` (relative to the settings root) is a deployment file's.
pub fn is_deploy_path(path: &str) -> bool {
    split_path(path).is_some()
}

/// `vms/NAME/deploy/FILE` → (NAME, FILE).
fn split_path(path: &str) -> Option<(&str, DeployFile)> {
    let rest = path.strip_prefix("vms/")?;
    let (name, rest) = rest.split_once('/')?;
    let file = rest.strip_prefix(DEPLOY_DIR)?.strip_prefix('/')?;
    Some((name, DeployFile::from_name(file)?))
}

/// The bytes of the deployment file at `path`, or `None` when `path` is not one.
pub fn read(
    desc: &Descriptor,
    path: &str,
    ctx: &DeployContext,
) -> Option<Result<Vec<u8>, DeployError>> {
    let (name, file) = split_path(path)?;
    Some(generate(desc, name, file, ctx))
}

fn generate(
    desc: &Descriptor,
    name: &str,
    file: DeployFile,
    ctx: &DeployContext,
) -> Result<Vec<u8>, DeployError> {
    let owner = content_folders(desc)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, o)| o)
        .filter(|o| file.applies_to(*o))
        .ok_or_else(|| DeployError::NoContent(format!("vms/{name}")))?;
    let config = selected_configuration(desc, ctx)?;
    let target = Target {
        desc,
        owner,
        folder: name,
        configuration: config,
    };
    match file {
        DeployFile::EnvironmentXml => Ok(env::environment_xml(&target)?.into_bytes()),
        DeployFile::EnvironmentIso => iso::environment_image(&env::environment_xml(&target)?),
        DeployFile::LibvirtDomain => Ok(libvirt::domain_xml(&target, ctx)?.into_bytes()),
        DeployFile::QemuScript => Ok(qemu::script(&target, ctx)?.into_bytes()),
    }
}

/// The configuration deployed: the one `-o deployment=` names (which must exist), else the
/// descriptor's default (`None` when it has no DeploymentOptionSection).
pub fn selected_configuration<'d>(
    desc: &'d Descriptor,
    ctx: &DeployContext,
) -> Result<Option<&'d str>, DeployError> {
    match &ctx.configuration {
        Some(c) => desc
            .configurations
            .iter()
            .find(|x| x.id.value == *c)
            .map(|x| Some(x.id.value.as_str()))
            .ok_or_else(|| DeployError::UnknownConfiguration(c.clone())),
        None => Ok(desc.default_configuration().map(|c| c.id.value.as_str())),
    }
}

/// What one deployment file describes.
#[derive(Clone, Copy)]
pub struct Target<'d> {
    /// The descriptor.
    pub desc: &'d Descriptor,
    /// The VirtualSystem or collection.
    pub owner: Owner,
    /// Its folder name under `vms/` (for paths to its own deploy files).
    pub folder: &'d str,
    /// The deployment configuration in effect, if the descriptor has any.
    pub configuration: Option<&'d str>,
}

impl Target<'_> {
    /// The path of one of its own deployment files, relative to the mount.
    pub fn own_file(&self, file: DeployFile) -> String {
        format!("vms/{}/{DEPLOY_DIR}/{}", self.folder, file.name())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_folder_and_file() {
        assert_eq!(
            split_path("vms/vm1/deploy/ovf-env.xml"),
            Some(("vm1", DeployFile::EnvironmentXml))
        );
        assert_eq!(
            split_path("vms/a%2Fb/deploy/qemu.sh"),
            Some(("a%2Fb", DeployFile::QemuScript))
        );
        for p in [
            "vms/vm1/deploy",
            "vms/vm1/deploy/",
            "vms/vm1/deploy/other",
            "vms/vm1/cpus",
            "vm/deploy/ovf-env.xml",
            "vms/vm1/x/deploy/qemu.sh",
        ] {
            assert_eq!(split_path(p), None, "{p}");
        }
    }
}
