//! Resources that live outside Kubernetes: the ScyllaDB keyspace and the Fluvio topic.
//! Only these justify the finalizer.

use std::time::Duration;

use async_trait_free::BoxFuture;

use crate::crd::InventoryRegion;

/// Cleans up a region's external resources when its deletion policy is `Delete`.
pub trait External: Send + Sync + 'static {
    /// Drops the region's keyspace (idempotent).
    fn drop_keyspace(&self, region: &InventoryRegion) -> BoxFuture<'_, Result<(), String>>;
}

/// Boxed futures without an extra crate.
pub mod async_trait_free {
    /// A boxed, sendable future.
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

/// The real thing: connects to the region's ScyllaDB and drops its keyspace.
pub struct Scylla;

impl External for Scylla {
    fn drop_keyspace(&self, region: &InventoryRegion) -> BoxFuture<'_, Result<(), String>> {
        let spec = region.spec.scylla.clone();
        Box::pin(async move {
            let mut config = stockflow_storage::scylla::ScyllaConfig::new(
                spec.nodes.clone(),
                spec.keyspace.clone(),
            );
            config.connect_timeout = Duration::from_secs(5);
            config.local_dc = Some(spec.local_dc.clone());
            let session = stockflow_storage::scylla::connect(&config)
                .await
                .map_err(|e| e.to_string())?;
            // The keyspace name matched ^[a-z0-9_]+$ in the schema, so it is safe in CQL text.
            session
                .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", spec.keyspace), ())
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
    }
}
