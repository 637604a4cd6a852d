//! Validation errors: a field of a request that breaks its rule, named so a client
//! developer can act on it. The bottom floor of the crate: it depends on nothing.

use serde::{Deserialize, Serialize};

/// A field that failed validation, with a message a client developer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending field, as named in the API.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
    /// What kind of rule the field broke.
    #[serde(default)]
    pub kind: ValidationKind,
}

/// Which rule a field broke: its own shape, or its relation to the other fields.
///
/// The API answers the two differently (400 and 422) because a schema can state the first
/// but not the second: every field of a reservation naming one `(sku, location)` twice is
/// valid on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidationKind {
    /// The value itself is out of its range, too long, or of the wrong characters.
    #[default]
    Shape,
    /// The value repeats another one that must be unique (a reservation's line keys).
    Duplicate,
    /// The value contradicts another field of the request (a transfer whose `to` is its
    /// `from`): each is valid alone, so a schema cannot refuse the pair.
    Conflict,
}

impl ValidationError {
    /// A validation error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            kind: ValidationKind::Shape,
        }
    }

    /// `field` contradicts another field of the request.
    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ValidationKind::Conflict,
            ..Self::new(field, message)
        }
    }

    /// `field` repeats a value that must be unique.
    pub fn duplicate(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ValidationKind::Duplicate,
            ..Self::new(field, message)
        }
    }
}
