//! Who asked for a change, as recorded on its event (audit): the caller its credentials
//! name and, for a store agent's command, the store and the agent's sequence number.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The caller behind a change, as its credentials named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Actor {
    /// The token's subject (or a client certificate's common name); `anonymous` when the
    /// API runs without authentication.
    pub subject: String,
    /// The OAuth2 client the token was issued to, if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The store whose agent forwarded the command, and the agent's sequence number for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreOrigin>,
}

/// The store a command came from: its `store_id` (the token's claim, which the region
/// checked against the agent's `stockflow-store` header) and the agent's sequence number
/// of the command (`stockflow-store-seq`), so an audit can line the region's movements up
/// with a store's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoreOrigin {
    /// The store.
    pub id: String,
    /// The agent's sequence number of the command, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}
