//! `libvirt.xml`: placeholder until the generator lands.

use super::{DeployContext, DeployError, Target};

/// The libvirt domain of `t`.
pub fn domain_xml(_t: &Target<'_>, _ctx: &DeployContext) -> Result<String, DeployError> {
    Err(DeployError::Unusable {
        file: "libvirt.xml",
        reason: "not generated yet".into(),
    })
}
