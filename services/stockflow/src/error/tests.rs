//! Every error maps to the documented problem (status, code, headers), and 5xx bodies stay generic.

use std::time::Duration;

use stockflow_domain::{LocationId, ReservationId, ReservationStatus, Sku};

use super::*;
use crate::auth::Scope;

/// One of every variant (and every refusal): each code is in [`PROBLEM_CODES`],
/// which the document states as the enum of `Problem.code`.
#[test]
fn every_code_is_documented() {
    let sku = || Sku::parse("S").unwrap();
    let location = || LocationId::parse("L").unwrap();
    let id = || ReservationId::parse("R").unwrap();
    let transfer = || stockflow_domain::TransferId::parse("T").unwrap();
    let refusals = [
        Refusal::VersionConflict {
            sku: sku(),
            location: location(),
            expected: 1,
            current: 2,
        },
        Refusal::InsufficientStock { lines: vec![] },
        Refusal::InsufficientStockInRegion { lines: vec![] },
        Refusal::LocationNotFound(location()),
        Refusal::ReservationNotFound(id()),
        Refusal::ReservationNotActive {
            id: id(),
            status: ReservationStatus::Confirmed,
        },
        Refusal::ReservationExists(id()),
        Refusal::LocationRegionImmutable {
            location: location(),
            current: "north".into(),
        },
        Refusal::LocationForbidden {
            location: location(),
        },
        Refusal::OnHandConflict {
            sku: sku(),
            location: location(),
            expected: 1,
            current: 2,
        },
        Refusal::StateShort {
            sku: sku(),
            location: location(),
            state: stockflow_domain::State::Damaged,
            requested: 2,
            held: 1,
        },
        Refusal::IncomingNotFound {
            sku: sku(),
            location: location(),
            po_line: "PO-1/1".into(),
        },
        Refusal::LimitReached {
            what: "lines".into(),
            limit: 1,
        },
        Refusal::ReservationBackordered {
            id: id(),
            lines: vec![],
        },
        Refusal::RecordModeForbidden,
        Refusal::SkuWideForbidden,
        Refusal::PolicyVersionConflict {
            sku: sku(),
            expected: 1,
            current: 2,
        },
        Refusal::TransferNotFound(transfer()),
        Refusal::TransferExists(transfer()),
        Refusal::TransferStatusConflict {
            id: transfer(),
            status: stockflow_domain::TransferStatus::InTransit,
        },
        Refusal::TransferQuantityExceeded {
            id: transfer(),
            sku: sku(),
            requested: 2,
            outstanding: 1,
        },
        Refusal::TransferChanged(transfer()),
        Refusal::IdempotencyKeyReused,
        Refusal::RequestInProgress,
    ];
    let mut errors = vec![
        ApiError::Invalid(ValidationError::new("f", "m")),
        ApiError::Invalid(ValidationError::duplicate("lines[1]", "m")),
        ApiError::Invalid(ValidationError::conflict("to", "m")),
        ApiError::InvalidQuery("q".into()),
        ApiError::InvalidPath("p".into()),
        ApiError::MalformedBody("b".into()),
        ApiError::MissingIdempotencyKey,
        ApiError::RequestInProgress,
        ApiError::PayloadTooLarge(1),
        ApiError::UnsupportedMediaType,
        ApiError::NotFound("n".into()),
        ApiError::ChannelNotFound("web".into()),
        ApiError::BundleNotFound("GIFT".into()),
        ApiError::MethodNotAllowed,
        ApiError::Unauthenticated("u".into()),
        ApiError::InvalidToken("t".into()),
        ApiError::InsufficientScope(Scope::Admin),
        ApiError::LocationForbidden("L".into()),
        ApiError::StoreForbidden(crate::auth::StoreMismatch {
            said: "s2".into(),
            held: None,
        }),
        ApiError::PrincipalNotListed("cn".into()),
        ApiError::UnsupportedEncoding("gzip".into()),
        ApiError::UnsupportedTransferCoding("gzip".into()),
        ApiError::HeadersTooLarge("h".into()),
        ApiError::QueueFull("q".into()),
        ApiError::CursorExpired {
            snapshot: "/v1/changes/snapshot?locations=a".into(),
        },
        ApiError::RateLimited {
            retry_after_secs: 1,
        },
        ApiError::Overloaded,
        ApiError::Timeout(Duration::from_secs(1)),
        ApiError::NotReady("r".into()),
        ApiError::StorageFault("f".into()),
        ApiError::Store(stockflow_storage::StoreError::Unsupported {
            backend: "scylla",
            command: "transfer",
        }),
        ApiError::InvalidSubscription(stockflow_domain::ValidationError::new("url", "e")),
        ApiError::DeadLetterStillFailing {
            id: 1,
            error: "e".into(),
        },
        ApiError::Internal("i".into()),
        ApiError::Store(StoreError::QueueFull { queue: "q" }),
        ApiError::Store(StoreError::Invariant {
            what: "w",
            detail: "d".into(),
        }),
    ];
    errors.extend(refusals.into_iter().map(ApiError::from));
    for error in &errors {
        assert!(
            PROBLEM_CODES.contains(&error.code()),
            "{} ({error:?}) is not in PROBLEM_CODES",
            error.code()
        );
    }
    let used: std::collections::BTreeSet<_> = errors.iter().map(ApiError::code).collect();
    for code in PROBLEM_CODES {
        assert!(
            used.contains(code),
            "{code} is listed but no error gives it"
        );
    }
}
