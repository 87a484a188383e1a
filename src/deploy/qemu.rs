//! `qemu.sh`: placeholder until the generator lands.

use super::{DeployContext, DeployError, Target};

/// The qemu-system-x86_64 script of `t`.
pub fn script(_t: &Target<'_>, _ctx: &DeployContext) -> Result<String, DeployError> {
    Err(DeployError::Unusable {
        file: "qemu.sh",
        reason: "not generated yet".into(),
    })
}
