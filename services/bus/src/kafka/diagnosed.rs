//! A librdkafka client context that keeps the first errors the brokers' threads reported,
//! so a failed start-up names its cause (authentication failed, certificate not trusted)
//! instead of only "metadata timed out".

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;

/// A client context that keeps the first errors librdkafka reported about the brokers, so
/// a failed start-up says *why* (authentication failed, certificate not trusted) instead
/// of only "metadata timed out". The first ones: later ones are summaries ("1/1 brokers
/// are down").
#[derive(Debug, Default)]
pub(crate) struct Diagnosed {
    errors: std::sync::Mutex<Vec<String>>,
}

impl Diagnosed {
    const KEPT: usize = 3;

    pub(super) fn last_error(&self) -> Option<String> {
        let errors = self.errors.lock().ok()?;
        (!errors.is_empty()).then(|| errors.join("; "))
    }

    fn remember(&self, message: &str) {
        if let Ok(mut errors) = self.errors.lock()
            && errors.len() < Self::KEPT
            && !errors.iter().any(|e| e == message)
        {
            errors.push(message.to_string());
        }
    }
}

// Never produces: only here for a client whose events `poll` serves.
impl rdkafka::producer::ProducerContext for Diagnosed {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

impl ClientContext for Diagnosed {
    // librdkafka reports a failed handshake or authentication as a log line from its
    // broker thread (facility FAIL), before any request fails.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
                tracing::warn!(facility = fac, "librdkafka: {message}");
                self.remember(message);
            }
            L::Notice | L::Info => tracing::info!(facility = fac, "librdkafka: {message}"),
            L::Debug => tracing::debug!(facility = fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "Kafka client error");
        self.remember(reason);
    }
}
