//! The Standard Webhooks signature (standardwebhooks.com, the scheme of the official
//! `standardwebhooks` libraries): HMAC-SHA256 keyed with the subscription's secret over
//! `"{webhook-id}.{webhook-timestamp}.{body}"`, sent as `webhook-signature: v1,<base64>`.
//!
//! The secret is shown to the subscriber once as `whsec_` + base64 of its bytes, the form
//! those libraries take as their constructor's argument.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2_digest011::{Digest, Sha256};

/// The prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes of a secret we generate: the spec asks for 24 to 64.
pub const SECRET_BYTES: usize = 32;

/// A secret that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not `whsec_` + base64 of 24 to 64 bytes.
    #[error("a webhook secret is whsec_ followed by base64 of 24 to 64 bytes")]
    BadSecret,
}

/// A subscription's signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

// Never print the key: it signs every delivery of the subscription.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from `bytes` the caller drew from a secure random source.
    pub fn from_random(bytes: [u8; SECRET_BYTES]) -> Self {
        Self(bytes.to_vec())
    }

    /// Parses the `whsec_...` form.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SignatureError::BadSecret)?;
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| SignatureError::BadSecret)?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(SignatureError::BadSecret);
        }
        Ok(Self(bytes))
    }

    /// The `whsec_...` form, given to the subscriber and stored.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }
}

/// The `webhook-signature` header value of a delivery: `v1,` + base64 of the HMAC-SHA256
/// of `"{msg_id}.{timestamp}.{body}"`.
pub fn sign(secret: &Secret, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    // An HMAC takes keys of any length, so this never fails.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret.0) else {
        return String::new();
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// SHA-256 of `data` (derives stable webhook ids).
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector of the Standard Webhooks reference libraries' tests (and the svix docs).
    #[test]
    fn signs_the_reference_vector() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_or_else(|e| panic!("{e}"));
        let signature = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(secret.expose(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let s = Secret::from_random([7; SECRET_BYTES]);
        assert_eq!(Secret::parse(&s.expose()), Ok(s.clone()));
        assert_eq!(format!("{s:?}"), "Secret(..)");
        for bad in [
            "",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_???",
            "whsec_AAAA",
        ] {
            assert_eq!(Secret::parse(bad), Err(SignatureError::BadSecret), "{bad}");
        }
    }

    #[test]
    fn any_change_changes_the_signature() {
        let s = Secret::from_random([1; SECRET_BYTES]);
        let base = sign(&s, "msg_1", 10, b"{}");
        assert_ne!(base, sign(&s, "msg_2", 10, b"{}"));
        assert_ne!(base, sign(&s, "msg_1", 11, b"{}"));
        assert_ne!(base, sign(&s, "msg_1", 10, b"{ }"));
        assert_ne!(
            base,
            sign(&Secret::from_random([2; SECRET_BYTES]), "msg_1", 10, b"{}")
        );
    }
}
