//! Idempotency keys as the write side keeps them: scoped per caller, so two clients that
//! pick the same key never see each other's answers.
//!
//! A [`ScopedKey`] travels typed from the HTTP extractor to the store; its text form
//! (`<caller tag>~<key>`, or the bare key for a caller without a tag) is written and read
//! here only ([`fmt::Display`] and [`ScopedKey::parse`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::IdempotencyKey;
use crate::validation::ValidationError;

/// How long an Idempotency-Key keeps its answer, on every backend: a retry within this
/// time gets the recorded answer; after it, the key is forgotten and a request under it
/// runs as new. Seven days: a store agent may hold a store's sales that long while the
/// store is cut off, and a resend after an unanswered attempt must still find its answer.
pub const IDEMPOTENCY_KEY_LIFETIME_SECS: u32 = 7 * 24 * 3600;

/// Longest caller tag: 128 bits of a digest, in hex.
const MAX_TAG_LEN: usize = 32;
/// Joins a caller tag to a key; no client key contains it, so a scoped key never equals
/// an unscoped one.
const SCOPE_SEPARATOR: char = '~';

/// The key space of one caller: 1-32 lowercase hex digits, a digest of its identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallerTag(String);

impl CallerTag {
    /// Validates a tag.
    pub fn parse(tag: impl Into<String>) -> Result<Self, ValidationError> {
        let tag = tag.into();
        let hex = tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if tag.is_empty() || tag.len() > MAX_TAG_LEN || !hex {
            return Err(ValidationError::new(
                "actor",
                format!("an actor tag is 1-{MAX_TAG_LEN} lowercase hex digits"),
            ));
        }
        Ok(Self(tag))
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client's Idempotency-Key in its caller's key space.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ScopedKey {
    /// Whose key space: `None` for callers without authentication, who share one.
    pub caller: Option<CallerTag>,
    /// The key the client sent.
    pub key: IdempotencyKey,
}

impl ScopedKey {
    /// `key` in `caller`'s key space.
    pub fn new(caller: Option<CallerTag>, key: IdempotencyKey) -> Self {
        Self { caller, key }
    }

    /// Reads the text form back.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        match text.split_once(SCOPE_SEPARATOR) {
            Some((tag, key)) => Ok(Self::new(
                Some(CallerTag::parse(tag)?),
                IdempotencyKey::parse(key)?,
            )),
            None => Ok(Self::new(None, IdempotencyKey::parse(text)?)),
        }
    }
}

impl fmt::Display for ScopedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.caller {
            Some(tag) => write!(f, "{}{SCOPE_SEPARATOR}{}", tag.as_str(), self.key),
            None => write!(f, "{}", self.key),
        }
    }
}

// By hand: the text form, which the derive (seeing only `String`) cannot state.
impl schemars::JsonSchema for ScopedKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ScopedKey".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "The client's Idempotency-Key, behind its caller's tag and `~` when the caller has one.",
            "pattern": format!(
                "^([0-9a-f]{{1,{MAX_TAG_LEN}}}{SCOPE_SEPARATOR})?[A-Za-z0-9._:-]{{1,{}}}$",
                crate::ids::MAX_ID_LEN
            ),
        })
    }
}

impl TryFrom<String> for ScopedKey {
    type Error = ValidationError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<ScopedKey> for String {
    fn from(key: ScopedKey) -> String {
        key.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> IdempotencyKey {
        IdempotencyKey::parse(k).expect("valid key")
    }

    #[test]
    fn scoped_keys_differ_per_caller_and_from_the_bare_key() {
        let a = ScopedKey::new(Some(CallerTag::parse("00ff").expect("tag")), key("order-1"));
        let b = ScopedKey::new(Some(CallerTag::parse("00fe").expect("tag")), key("order-1"));
        let bare = ScopedKey::new(None, key("order-1"));
        assert_ne!(a, b);
        assert_ne!(a, bare);
        assert_eq!(a.to_string(), "00ff~order-1");
        assert_eq!(bare.to_string(), "order-1");
        assert!(CallerTag::parse("").is_err());
        assert!(CallerTag::parse("XYZ").is_err());
        assert!(CallerTag::parse("a".repeat(33)).is_err());
    }

    #[test]
    fn the_text_form_reads_back() {
        for text in ["00ff~order-1", "order-1"] {
            let scoped = ScopedKey::parse(text).expect("parses");
            assert_eq!(scoped.to_string(), text);
            let json = serde_json::to_string(&scoped).expect("serialize");
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<ScopedKey>(&json).ok(), Some(scoped));
        }
        assert!(ScopedKey::parse("XY~k").is_err());
    }
}
