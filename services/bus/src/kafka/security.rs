//! How the Kafka clients authenticate and protect their connections: the protocol, SASL
//! credentials and the CA that signs the brokers' certificates, turned into librdkafka
//! settings. Managed Kafkas (MSK, Confluent Cloud, Aiven) all need `SASL_SSL`.

use std::fmt;
use std::str::FromStr;

use crate::{BusError, Result};

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// No authentication, no encryption (a private network or a test broker).
    #[default]
    Plaintext,
    /// TLS, the broker authenticated by its certificate.
    Ssl,
    /// SASL authentication without encryption.
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The value librdkafka expects.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

impl FromStr for SecurityProtocol {
    type Err = BusError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "plaintext" => Ok(SecurityProtocol::Plaintext),
            "ssl" => Ok(SecurityProtocol::Ssl),
            "sasl_plaintext" => Ok(SecurityProtocol::SaslPlaintext),
            "sasl_ssl" => Ok(SecurityProtocol::SaslSsl),
            other => Err(BusError::Settings {
                setting: "Kafka security protocol",
                reason: format!("{other:?}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
            }),
        }
    }
}

/// librdkafka's `sasl.mechanisms` (the ones a password authenticates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// PLAIN: the password travels to the broker (use it over TLS only).
    Plain,
    /// SCRAM with SHA-256.
    ScramSha256,
    /// SCRAM with SHA-512.
    ScramSha512,
}

impl SaslMechanism {
    /// The value librdkafka expects.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = BusError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().replace('_', "-").as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            other => Err(BusError::Settings {
                setting: "SASL mechanism",
                reason: format!("{other:?}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
            }),
        }
    }
}

/// A SASL identity. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    /// How the password is proven.
    pub mechanism: SaslMechanism,
    /// The user.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The security settings of every client of one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaSecurity {
    /// The protocol.
    pub protocol: SecurityProtocol,
    /// Credentials; required by the SASL protocols, refused by the others.
    pub sasl: Option<SaslCredentials>,
    /// PEM of the CA that signs the brokers' certificates; without it, the system's trust
    /// store is used. Only with a TLS protocol.
    pub ca_pem: Option<String>,
}

impl KafkaSecurity {
    /// The librdkafka settings, or why this combination cannot work (refused here, at
    /// start-up, instead of as a connection that never authenticates).
    pub fn settings(&self) -> Result<Vec<(&'static str, String)>> {
        let protocol = self.protocol;
        let mut out = vec![("security.protocol", protocol.as_str().to_string())];
        match (&self.sasl, protocol.uses_sasl()) {
            (Some(sasl), true) => {
                out.push(("sasl.mechanisms", sasl.mechanism.as_str().to_string()));
                out.push(("sasl.username", sasl.username.clone()));
                out.push(("sasl.password", sasl.password.clone()));
            }
            (None, true) => {
                return Err(BusError::Settings {
                    setting: "Kafka security protocol",
                    reason: format!(
                        "{} needs SASL credentials (a username and a password)",
                        protocol.as_str()
                    ),
                });
            }
            (Some(_), false) => {
                return Err(BusError::Settings {
                    setting: "SASL credentials",
                    reason: format!(
                        "given, but the Kafka security protocol is {}; use sasl_plaintext or sasl_ssl",
                        protocol.as_str()
                    ),
                });
            }
            (None, false) => {}
        }
        match (&self.ca_pem, protocol.uses_tls()) {
            (Some(pem), true) => {
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(BusError::Settings {
                        setting: "Kafka CA",
                        reason: "not a PEM certificate (no BEGIN CERTIFICATE line)".into(),
                    });
                }
                out.push(("ssl.ca.pem", pem.clone()));
            }
            (Some(_), false) => {
                return Err(BusError::Settings {
                    setting: "Kafka CA",
                    reason: format!(
                        "given, but the security protocol is {}; use ssl or sasl_ssl",
                        protocol.as_str()
                    ),
                });
            }
            (None, _) => {}
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl() -> SaslCredentials {
        SaslCredentials {
            mechanism: SaslMechanism::ScramSha512,
            username: "stockflow".into(),
            password: "s3cret".into(),
        }
    }

    #[test]
    fn names_parse_as_kafka_spells_them() {
        assert_eq!(
            "SASL_SSL".parse::<SecurityProtocol>().unwrap(),
            SecurityProtocol::SaslSsl
        );
        assert_eq!(
            "scram-sha-256".parse::<SaslMechanism>().unwrap(),
            SaslMechanism::ScramSha256
        );
        assert!("kerberos".parse::<SaslMechanism>().is_err());
        assert!("tls".parse::<SecurityProtocol>().is_err());
    }

    #[test]
    fn sasl_ssl_sets_credentials_and_the_ca() {
        let security = KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            sasl: Some(sasl()),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into()),
        };
        let settings = security.settings().unwrap();
        let get = |k: &str| {
            settings
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.username"), Some("stockflow"));
        assert!(get("ssl.ca.pem").is_some());
    }

    #[test]
    fn combinations_that_cannot_work_are_refused() {
        let no_credentials = KafkaSecurity {
            protocol: SecurityProtocol::SaslPlaintext,
            ..KafkaSecurity::default()
        };
        assert!(matches!(
            no_credentials.settings(),
            Err(BusError::Settings { .. })
        ));
        let credentials_without_sasl = KafkaSecurity {
            protocol: SecurityProtocol::Ssl,
            sasl: Some(sasl()),
            ca_pem: None,
        };
        assert!(credentials_without_sasl.settings().is_err());
        let ca_without_tls = KafkaSecurity {
            protocol: SecurityProtocol::Plaintext,
            sasl: None,
            ca_pem: Some("-----BEGIN CERTIFICATE-----".into()),
        };
        assert!(ca_without_tls.settings().is_err());
        let not_pem = KafkaSecurity {
            protocol: SecurityProtocol::Ssl,
            sasl: None,
            ca_pem: Some("hello".into()),
        };
        assert!(not_pem.settings().is_err());
    }

    #[test]
    fn debug_never_shows_the_password() {
        let text = format!("{:?}", sasl());
        assert!(!text.contains("s3cret"), "{text}");
    }
}
