//! Minting tokens from a local key (`stockflow token`), for development and tests: an
//! Ed25519 key kept in the data directory of `stockflow dev --auth-dev`, or any PKCS#8 PEM
//! key an operator holds.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::{AuthError, Scope};

/// Issuer of the development key's tokens.
pub const DEV_ISSUER: &str = "stockflow-dev";
/// Audience of the development key's tokens.
pub const DEV_AUDIENCE: &str = "stockflow";
/// `kid` of the development key.
pub const DEV_KID: &str = "stockflow-dev-1";

/// A private key that signs tokens.
pub struct SigningKey {
    encoding: EncodingKey,
    algorithm: Algorithm,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct TokenClaims {
    /// `sub`.
    pub subject: String,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// `scope`, space-separated.
    pub scopes: Vec<Scope>,
    /// `locations`, when the token is a store's.
    pub locations: Option<Vec<String>>,
    /// `store_id`, when the token is a store agent's.
    pub store_id: Option<String>,
    /// Lifetime from now.
    pub ttl: Duration,
    /// `nbf` this far in the future (tests of not-yet-valid tokens).
    pub not_before_in: Duration,
}

impl TokenClaims {
    /// A token for `subject` with `scopes`, valid for an hour, for the development issuer.
    pub fn dev(subject: &str, scopes: &[Scope]) -> Self {
        Self {
            subject: subject.into(),
            issuer: DEV_ISSUER.into(),
            audience: DEV_AUDIENCE.into(),
            scopes: scopes.to_vec(),
            locations: None,
            store_id: None,
            ttl: Duration::from_secs(3600),
            not_before_in: Duration::ZERO,
        }
    }
}

/// The files of a development key in a data directory.
pub struct DevKeyFiles {
    /// PKCS#8 PEM private key.
    pub private_key: PathBuf,
    /// Its public JWKS, which `stockflow dev --auth-dev` verifies against.
    pub jwks: PathBuf,
}

impl DevKeyFiles {
    /// Under `<data_dir>/auth/`.
    pub fn in_dir(data_dir: &Path) -> Self {
        let dir = data_dir.join("auth");
        Self {
            private_key: dir.join("dev-signing-key.pem"),
            jwks: dir.join("dev-jwks.json"),
        }
    }
}

impl SigningKey {
    /// A fresh Ed25519 key, with its PKCS#8 PEM and its public JWKS.
    pub fn generate_ed25519(kid: &str) -> Result<(Self, String, Value), AuthError> {
        let failed = |e: String| AuthError::Settings(format!("cannot generate a key: {e}"));
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|e| failed(e.to_string()))?;
        let der = pkcs8.as_ref();
        let pem = pem_of("PRIVATE KEY", der);
        let key = Self::from_pem(pem.as_bytes(), Algorithm::EdDSA, kid)?;
        let jwks = ed25519_jwks(der, kid)?;
        Ok((key, pem, jwks))
    }

    /// A PKCS#8 PEM key for `algorithm` (EdDSA, ES256 or RS256).
    pub fn from_pem(pem: &[u8], algorithm: Algorithm, kid: &str) -> Result<Self, AuthError> {
        let bad = |e: jsonwebtoken::errors::Error| {
            AuthError::Settings(format!("not a {algorithm:?} private key: {e}"))
        };
        let encoding = match algorithm {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem).map_err(bad)?,
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem).map_err(bad)?,
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem).map_err(bad)?,
            other => {
                return Err(AuthError::Settings(format!(
                    "tokens are signed with EdDSA, ES256 or RS256, not {other:?}"
                )));
            }
        };
        Ok(Self {
            encoding,
            algorithm,
            kid: kid.into(),
        })
    }

    /// The development key of `data_dir`, created (with its JWKS) on first use.
    pub fn dev_key(data_dir: &Path) -> Result<Self, AuthError> {
        let files = DevKeyFiles::in_dir(data_dir);
        let io = |what: &Path, e: std::io::Error| {
            AuthError::Settings(format!("{}: {e}", what.display()))
        };
        if files.private_key.exists() {
            let pem = std::fs::read(&files.private_key).map_err(|e| io(&files.private_key, e))?;
            return Self::from_pem(&pem, Algorithm::EdDSA, DEV_KID);
        }
        let (key, pem, jwks) = Self::generate_ed25519(DEV_KID)?;
        if let Some(dir) = files.private_key.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        write_private(&files.private_key, pem.as_bytes()).map_err(|e| io(&files.private_key, e))?;
        std::fs::write(&files.jwks, jwks.to_string()).map_err(|e| io(&files.jwks, e))?;
        Ok(key)
    }

    /// A signed token saying `claims`.
    pub fn mint(&self, claims: &TokenClaims) -> Result<String, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let scope: Vec<&str> = claims.scopes.iter().map(|s| s.as_str()).collect();
        let mut body = json!({
            "sub": claims.subject,
            "iss": claims.issuer,
            "aud": claims.audience,
            "iat": now,
            "nbf": now + claims.not_before_in.as_secs(),
            "exp": now + claims.ttl.as_secs(),
            "scope": scope.join(" "),
        });
        if let (Some(locations), Value::Object(map)) = (&claims.locations, &mut body) {
            map.insert("locations".into(), json!(locations));
        }
        if let (Some(store_id), Value::Object(map)) = (&claims.store_id, &mut body) {
            map.insert("store_id".into(), json!(store_id));
        }
        self.sign(&body)
    }

    /// A signed token with exactly `claims` (tests forge odd ones with it).
    pub fn sign(&self, claims: &Value) -> Result<String, AuthError> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        self.sign_with_header(&header, claims)
    }

    /// Signs `claims` under a JOSE header of the caller's (tests of odd headers: an empty
    /// `kid`, none at all).
    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> Result<String, AuthError> {
        encode(header, claims, &self.encoding)
            .map_err(|e| AuthError::Settings(format!("cannot sign the token: {e}")))
    }
}

fn pem_of(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// The public JWKS of an Ed25519 PKCS#8 key (jsonwebtoken cannot derive OKP JWKs).
fn ed25519_jwks(pkcs8: &[u8], kid: &str) -> Result<Value, AuthError> {
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
        .map_err(|e| AuthError::Settings(format!("not an Ed25519 key: {e}")))?;
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    Ok(
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid,
                        "alg": "EdDSA", "use": "sig"}]}),
    )
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_key_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = SigningKey::dev_key(dir.path()).expect("created");
        let files = DevKeyFiles::in_dir(dir.path());
        let jwks: Value =
            serde_json::from_slice(&std::fs::read(&files.jwks).expect("jwks")).expect("json");
        assert_eq!(jwks["keys"][0]["kid"], DEV_KID);
        let again = SigningKey::dev_key(dir.path()).expect("read back");
        let claims = TokenClaims::dev("tester", &[Scope::StockRead]);
        assert!(first.mint(&claims).is_ok() && again.mint(&claims).is_ok());
    }
}
