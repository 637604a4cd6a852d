//! Definitions a store keeps whole, as JSON, one row per key, each change one version up:
//! sales channels and bundles. Both backends store them the same way through this trait.

use serde::Serialize;
use serde::de::DeserializeOwned;
use stockflow_domain::Channel;
use stockflow_domain::sourcing::Bundle;

/// A definition stored whole under its key.
pub(crate) trait Definition: Serialize + DeserializeOwned + Clone + Send + Sync {
    /// What it is, for error messages.
    const WHAT: &'static str;
    /// Its key.
    fn key(&self) -> &str;
    /// Its version.
    fn version(&self) -> u64;
    /// `self` as stored over `previous`.
    fn revised(self, previous: Option<&Self>) -> Self;
}

impl Definition for Channel {
    const WHAT: &'static str = "channel";
    fn key(&self) -> &str {
        self.id.as_str()
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn revised(self, previous: Option<&Self>) -> Self {
        Channel::revised(self, previous)
    }
}

impl Definition for Bundle {
    const WHAT: &'static str = "bundle";
    fn key(&self) -> &str {
        self.sku.as_str()
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn revised(self, previous: Option<&Self>) -> Self {
        Bundle::revised(self, previous)
    }
}
