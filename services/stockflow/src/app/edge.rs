//! The HTTP edge of a process: its authenticator (the JWKS kept fresh), the principals
//! of mutual TLS, limits and deadlines; and the task that forgets idle callers' buckets.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{AppError, Security};

/// The edge `security` asks for; its JWKS refresh and bucket pruning run until `shutdown`.
pub(super) async fn start_edge(
    security: &Security,
    shutdown: &CancellationToken,
) -> Result<Arc<crate::http::guard::Edge>, AppError> {
    let auth = match &security.auth {
        Some(settings) => {
            Some(crate::auth::Authenticator::start(settings.clone(), shutdown.clone()).await?)
        }
        None => None,
    };
    let principals = match &security.mtls_principals {
        Some(path) => Some(Arc::new(crate::auth::Principals::load(path)?)),
        None => None,
    };
    let edge = crate::http::guard::Edge::new(crate::http::guard::EdgeConfig {
        auth,
        principals,
        limit_anonymous: security.limit_anonymous,
        rate_limit: security.rate_limit,
        max_concurrent: security.max_concurrent,
        request_timeout: security.request_timeout,
        client_certificate_required: security
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca.is_some()),
    });
    let pruned = edge.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => pruned.forget_idle_callers(),
            }
        }
    });
    Ok(edge)
}
