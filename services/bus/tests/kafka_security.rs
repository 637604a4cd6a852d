//! The Kafka adapter over SASL_SSL, as managed Kafkas run it: the test broker's SASL_SSL
//! listener (`scripts/kafka.sh` with `KAFKA_TLS_DIR`, started by the test command) with a
//! certificate from the test CA (`scripts/tls.sh`). Right credentials and CA work for
//! SCRAM-SHA-512 and PLAIN; a wrong password or a wrong CA fails at start-up.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use stockflow_bus::kafka::{
    KafkaConfig, KafkaEventLog, KafkaSecurity, SaslCredentials, SaslMechanism, SecurityProtocol,
    delete_topic,
};
use stockflow_bus::{EventLog, NewRecord};

/// The SASL_SSL listener and the TLS directory of the test command. These tests are the
/// only proof that credentials and CAs reach librdkafka, so a missing listener fails them.
fn listener() -> (Vec<String>, PathBuf) {
    let brokers = std::env::var("STOCKFLOW_TEST_KAFKA_SASL_SSL_BROKERS").expect(
        "STOCKFLOW_TEST_KAFKA_SASL_SSL_BROKERS is unset: run ./scripts/test.sh (it starts Kafka \
         with a SASL_SSL listener from scripts/tls.sh's test CA)",
    );
    let tls = std::env::var("STOCKFLOW_TEST_TLS_DIR")
        .expect("STOCKFLOW_TEST_TLS_DIR is unset: run ./scripts/test.sh");
    (
        brokers.split(',').map(str::to_string).collect(),
        PathBuf::from(tls),
    )
}

fn config(mechanism: SaslMechanism, password: &str, ca: &str) -> KafkaConfig {
    let (brokers, tls) = listener();
    let topic = format!("secure-{}", uuid::Uuid::now_v7().simple());
    let mut config = KafkaConfig::new(brokers, topic, 2);
    config.request_timeout = Duration::from_secs(5);
    config.security = KafkaSecurity {
        protocol: SecurityProtocol::SaslSsl,
        sasl: Some(SaslCredentials {
            mechanism,
            username: "stockflow".into(),
            password: password.into(),
        }),
        ca_pem: Some(std::fs::read_to_string(tls.join(ca)).unwrap()),
    };
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_with_the_right_credentials_and_ca_carries_events() {
    for mechanism in [SaslMechanism::ScramSha512, SaslMechanism::Plain] {
        let config = config(mechanism, "stockflow-secret", "ca.pem");
        let log = KafkaEventLog::connect(config.clone()).await.unwrap();
        log.check_ready().await.unwrap();
        let payload = b"{\"n\":1}".to_vec();
        let records = vec![NewRecord::new("SKU-1", payload.clone())];
        let appended = log.append(records).await.unwrap();
        let (partition, offset) = appended[0];
        let fetched = log
            .fetch(partition, offset, 1 << 16, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(fetched.len(), 1, "{mechanism:?}");
        assert_eq!(fetched[0].value, payload);
        drop(log);
        delete_topic(&config).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_an_unknown_ca_fails_at_start_up() {
    for (what, config, cause) in [
        (
            "wrong password",
            config(SaslMechanism::ScramSha512, "not-the-password", "ca.pem"),
            "Authentication failed",
        ),
        (
            "unknown CA",
            config(
                SaslMechanism::ScramSha512,
                "stockflow-secret",
                "other-ca.pem",
            ),
            "certificate verify failed",
        ),
    ] {
        let result = KafkaEventLog::connect(config).await;
        let Err(e) = result else {
            panic!("{what}: connected anyway");
        };
        // The message must lead an operator to the cause, not just say "timed out".
        let message = e.to_string();
        assert!(message.contains(cause), "{what}: {message}");
    }
}

#[test]
fn the_client_refuses_credentials_it_cannot_use_before_any_connection() {
    let mut config = KafkaConfig::new(vec!["127.0.0.1:1".into()], "t".into(), 1);
    config.security.protocol = SecurityProtocol::SaslSsl;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(KafkaEventLog::connect(config));
    assert!(
        matches!(result, Err(ref e @ stockflow_bus::BusError::Settings { .. }) if e.to_string().contains("needs SASL credentials")),
        "{:?}",
        result.err()
    );
}
