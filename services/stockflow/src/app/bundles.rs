//! The bundles a process knows, kept in memory so a reservation expands its bundle lines
//! without a read per request; reloaded from the store every [`REFRESH`] (a bundle defined
//! through another replica is known here within that), and at once after a local change.
//!
//! A stale copy never oversells: a bundle not yet known is reserved as a plain SKU, which
//! holds no stock and is refused; a changed composition applies once reloaded.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use stockflow_domain::sourcing::{Bundle, expand};
use stockflow_domain::{Reserve, Sku, ValidationError};
use stockflow_storage::ports::WriteStore;
use tokio_util::sync::CancellationToken;

/// How often every bundle is reloaded.
pub const REFRESH: Duration = Duration::from_secs(2);

/// Bundles by SKU.
pub type Bundles = BTreeMap<Sku, Bundle>;

/// The bundles this process knows.
#[derive(Debug, Default)]
pub struct BundleCatalog {
    current: RwLock<Arc<Bundles>>,
}

impl BundleCatalog {
    /// Loads every bundle now and keeps reloading until `shutdown`. A store that cannot
    /// answer at start leaves the catalog empty until the next reload.
    pub async fn start(write: Arc<dyn WriteStore>, shutdown: CancellationToken) -> Arc<Self> {
        let catalog = Arc::new(Self::default());
        catalog.reload(&*write).await;
        let kept = catalog.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(REFRESH) => kept.reload(&*write).await,
                }
            }
        });
        catalog
    }

    async fn reload(&self, write: &dyn WriteStore) {
        match write.bundles().await {
            Ok(all) => self.replace(all.into_iter().map(|b| (b.sku.clone(), b)).collect()),
            Err(e) => tracing::warn!(error = %e, "bundles not reloaded; keeping the last copy"),
        }
    }

    fn replace(&self, bundles: Bundles) {
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(bundles);
        }
    }

    /// The bundles known now.
    pub fn snapshot(&self) -> Arc<Bundles> {
        self.current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Knows `bundle` from now on (after this process stored it).
    pub fn learn(&self, bundle: Bundle) {
        let mut bundles = (*self.snapshot()).clone();
        bundles.insert(bundle.sku.clone(), bundle);
        self.replace(bundles);
    }

    /// `reserve` with each bundle line replaced by its components at the same location.
    pub fn expand(&self, reserve: Reserve) -> Result<Reserve, ValidationError> {
        let bundles = self.snapshot();
        if !reserve.lines.iter().any(|l| bundles.contains_key(&l.sku)) {
            return Ok(reserve);
        }
        let lines = expand(reserve.lines, &bundles)?;
        Ok(
            Reserve::new(reserve.id, lines, reserve.ttl_seconds, reserve.reference)?
                .for_channel(reserve.channel),
        )
    }
}
