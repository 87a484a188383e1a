//! The ISO 9660 transport of the OVF environment: placeholder until the writer lands.

use super::DeployError;

/// An ISO 9660 image holding `ovf-env.xml` (`xml`) at its root.
pub fn environment_image(_xml: &str) -> Result<Vec<u8>, DeployError> {
    Err(DeployError::Unusable {
        file: "ovf-env.iso",
        reason: "not generated yet".into(),
    })
}
