//! Resources that live outside Kubernetes: the ScyllaDB keyspace and the bus topic. Only
//! these justify the finalizer. Both are created by the region's migration Job
//! (`stockflow migrate` creates the keyspace, the schema and the topic, with the region's
//! credentials); the operator removes them under `deletionPolicy: Delete`.

use std::time::Duration;

use async_trait_free::BoxFuture;
use stockflow_bus::fluvio::FluvioConfig;
use stockflow_bus::kafka::KafkaConfig;

use crate::crd::InventoryRegion;
use crate::error::{Error, Result};
use crate::resources;

/// Cleans up a region's external resources when its deletion policy is `Delete`.
pub trait External: Send + Sync + 'static {
    /// Drops the region's keyspace (idempotent).
    fn drop_keyspace(&self, region: &InventoryRegion) -> BoxFuture<'_, Result<()>>;
    /// Deletes the region's topic (idempotent).
    fn delete_topic(&self, region: &InventoryRegion) -> BoxFuture<'_, Result<()>>;
}

/// Boxed futures without an extra crate.
pub mod async_trait_free {
    /// A boxed, sendable future.
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

/// The real thing: connects to the region's ScyllaDB and bus.
pub struct Clusters;

impl External for Clusters {
    fn drop_keyspace(&self, region: &InventoryRegion) -> BoxFuture<'_, Result<()>> {
        let spec = region.spec.scylla.clone();
        Box::pin(async move {
            let mut config = stockflow_storage::scylla::ScyllaConfig::new(
                spec.nodes.clone(),
                spec.keyspace.clone(),
            );
            config.connect_timeout = Duration::from_secs(5);
            config.local_dc = Some(spec.local_dc.clone());
            let session = stockflow_storage::scylla::connect(&config).await?;
            // The keyspace name matched ^[a-z0-9_]+$ in the schema, so it is safe in CQL text.
            session
                .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", spec.keyspace), ())
                .await
                .map_err(|e| Error::External(format!("drop keyspace {}: {e}", spec.keyspace)))?;
            Ok(())
        })
    }

    fn delete_topic(&self, region: &InventoryRegion) -> BoxFuture<'_, Result<()>> {
        let bus = region.spec.bus.clone();
        let topic = resources::topic(region);
        Box::pin(async move {
            if let Some(kafka) = &bus.kafka {
                let mut config = KafkaConfig::new(kafka.brokers.clone(), topic, bus.partitions);
                config.request_timeout = Duration::from_secs(5);
                stockflow_bus::kafka::delete_topic(&config).await?;
            } else if let Some(fluvio) = &bus.fluvio {
                let mut config = FluvioConfig::new(fluvio.endpoint.clone(), topic, bus.partitions);
                config.request_timeout = Duration::from_secs(5);
                stockflow_bus::fluvio::delete_topic(&config).await?;
            }
            Ok(())
        })
    }
}
