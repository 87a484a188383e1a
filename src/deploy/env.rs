//! The OVF environment document (DSP0243 §11): placeholder until the generator lands.

use super::{DeployError, Target};

/// The `ovf-env.xml` of `t`.
pub fn environment_xml(_t: &Target<'_>) -> Result<String, DeployError> {
    Err(DeployError::Unusable {
        file: "ovf-env.xml",
        reason: "not generated yet".into(),
    })
}
