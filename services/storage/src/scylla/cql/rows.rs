//! The typed rows of every table: what a statement returns (`DeserializeRow`, matched to
//! the selected columns by name) and what a statement is bound with where its values are
//! more than a few (`SerializeRow`, matched to the statement's named markers). Columns a
//! row may lack are `Option`s.

use std::collections::BTreeMap;

use scylla::serialize::SerializationError;
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::writers::RowWriter;
use scylla::{DeserializeRow, SerializeRow};

/// A batch's values: each statement of a batch is bound with its own row type, so the
/// batch's rows are an enum whose variants serialize as the row they hold.
macro_rules! batch_rows {
    ($(#[$doc:meta])* $name:ident$(<$l:lifetime>)? { $($variant:ident($row:ty)),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) enum $name$(<$l>)? {
            $(
                #[allow(missing_docs)]
                $variant($row),
            )+
        }

        impl$(<$l>)? SerializeRow for $name$(<$l>)? {
            fn serialize(
                &self,
                ctx: &RowSerializationContext<'_>,
                writer: &mut RowWriter,
            ) -> Result<(), SerializationError> {
                match self {
                    $(Self::$variant(row) => row.serialize(ctx, writer),)+
                }
            }

            fn is_empty(&self) -> bool {
                match self {
                    $(Self::$variant(row) => row.is_empty(),)+
                }
            }
        }
    };
}

// ---- stock partitions (write side) ----

/// A SKU's own policy: its settings (JSON) and version.
#[derive(Debug, DeserializeRow)]
pub(crate) struct SkuPolicyRow {
    pub extras: Option<String>,
    pub version: Option<i64>,
}

/// The static (level) columns of a stock partition.
#[derive(Debug, DeserializeRow)]
pub(crate) struct LevelRow {
    pub region: Option<String>,
    pub on_hand: Option<i64>,
    pub reserved: Option<i64>,
    pub version: Option<i64>,
    pub extras: Option<String>,
}

/// A partition's level with its key, as a scan finds it.
#[derive(Debug, DeserializeRow)]
pub(crate) struct KeyedLevelRow {
    pub sku: String,
    pub location: String,
    pub region: Option<String>,
    pub on_hand: Option<i64>,
    pub reserved: Option<i64>,
    pub version: Option<i64>,
    pub extras: Option<String>,
}

/// A SKU's catalog partition, as a scan finds it.
#[derive(Debug, DeserializeRow)]
pub(crate) struct KeyedCatalogRow {
    pub sku: String,
    pub location: String,
    pub catalog_name: Option<String>,
    pub catalog_attributes: Option<BTreeMap<String, String>>,
    pub version: Option<i64>,
}

/// An applied-command row.
#[derive(Debug, DeserializeRow)]
pub(crate) struct CmdRow {
    pub row_id: String,
    pub payload: Option<Vec<u8>>,
}

/// A reservation line row.
#[derive(Debug, DeserializeRow)]
pub(crate) struct LineRow {
    pub row_id: String,
    pub status: Option<String>,
    pub payload: Option<Vec<u8>>,
}

/// A catalog partition's revision.
#[derive(Debug, DeserializeRow)]
pub(crate) struct VersionRow {
    pub version: Option<i64>,
}

/// The level of a partition `IF version = :expected` (null: never written).
#[derive(Debug, SerializeRow)]
pub(crate) struct LevelWrite {
    pub region: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub version: i64,
    /// The domain's extras document (null for a plain key).
    pub extras: Option<String>,
    pub sku: String,
    pub location: String,
    pub expected: Option<i64>,
}

/// A catalog partition's data `IF version = :expected`.
#[derive(Debug, SerializeRow)]
pub(crate) struct CatalogWrite<'a> {
    pub catalog_name: &'a str,
    pub catalog_attributes: &'a BTreeMap<String, String>,
    pub version: i64,
    pub sku: &'a str,
    pub expected: Option<i64>,
}

/// A payload row of a partition: an outbox entry or an applied-command record.
#[derive(Debug, SerializeRow)]
pub(crate) struct PayloadWrite {
    pub sku: String,
    pub location: String,
    pub row_id: String,
    pub payload: Vec<u8>,
    pub created_at: i64,
}

/// A reservation line in its state, living `ttl` seconds (0: until settled).
#[derive(Debug, SerializeRow)]
pub(crate) struct LineWriteRow {
    pub sku: String,
    pub location: String,
    pub row_id: String,
    pub status: &'static str,
    pub payload: Vec<u8>,
    pub created_at: i64,
    pub ttl: i32,
}

/// The key of a reservation line, to delete it.
#[derive(Debug, SerializeRow)]
pub(crate) struct LineKey {
    pub sku: String,
    pub location: String,
    pub row_id: String,
}

batch_rows!(
    /// The rows of a partition's conditional batch.
    PartitionBatchRow {
        Level(LevelWrite),
        Payload(PayloadWrite),
        Line(LineWriteRow),
        DropLine(LineKey),
    }
);

/// The next revision of a SKU's own policy, if the stored one is still `expected`.
#[derive(Debug, SerializeRow)]
pub(crate) struct SkuPolicyWrite {
    pub settings: String,
    pub version: i64,
    pub sku: String,
    pub expected: Option<i64>,
}

batch_rows!(
    /// The rows of a SKU policy change's conditional batch: the policy, its outbox row and
    /// its applied-command row.
    SkuPolicyBatchRow {
        Policy(SkuPolicyWrite),
        Payload(PayloadWrite),
    }
);

batch_rows!(
    /// The rows of a catalog update's conditional batch.
    CatalogBatchRow<'a> {
        Catalog(CatalogWrite<'a>),
        Payload(PayloadWrite),
    }
);

// ---- outbox ----

/// An outbox row.
#[derive(Debug, DeserializeRow)]
pub(crate) struct OutboxRow {
    pub row_id: String,
    pub payload: Option<Vec<u8>>,
    pub created_at: Option<i64>,
}

/// An outbox marker, with when it was written (microseconds).
#[derive(Debug, Clone, DeserializeRow)]
pub(crate) struct MarkerRow {
    pub sku: String,
    pub location: String,
    pub written: Option<i64>,
}

// ---- reservations ----

/// A saga reservation's header.
#[derive(Debug, DeserializeRow)]
pub(crate) struct HeaderRow {
    pub status: Option<String>,
    pub owner: Option<String>,
    pub lines: Option<String>,
    pub reference: Option<String>,
    pub created_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub updated_at: Option<i64>,
}

/// A header written whole (created, or finished with every column so the whole row
/// expires together).
#[derive(Debug, SerializeRow)]
pub(crate) struct HeaderWrite<'a> {
    pub id: &'a str,
    pub status: &'a str,
    pub owner: &'a str,
    pub lines: &'a str,
    pub reference: Option<&'a str>,
    pub created_at: i64,
    pub expires_at: i64,
    pub updated_at: i64,
}

/// A header's move `IF status = :old_status`.
#[derive(Debug, SerializeRow)]
pub(crate) struct HeaderMove<'a> {
    pub new_status: &'a str,
    pub moved_at: i64,
    pub id: &'a str,
    pub old_status: &'a str,
}

/// A header's move while it is still `:old_status` and the attempt's own.
#[derive(Debug, SerializeRow)]
pub(crate) struct FencedMove<'a> {
    pub new_status: &'a str,
    pub moved_at: i64,
    pub id: &'a str,
    pub old_status: &'a str,
    pub owner: &'a str,
    pub created_at: i64,
}

/// Expiry's claim on an idle header: `:new_status` if it is still `:old_status` with the
/// lease `:seen`.
#[derive(Debug, SerializeRow)]
pub(crate) struct HeaderAbandon<'a> {
    pub new_status: &'a str,
    pub moved_at: i64,
    pub id: &'a str,
    pub old_status: &'a str,
    pub seen: i64,
}

/// A partition holding a line of a reservation.
#[derive(Debug, DeserializeRow)]
pub(crate) struct IndexRow {
    pub sku: String,
    pub location: String,
}

/// An index row, living `ttl` seconds.
#[derive(Debug, SerializeRow)]
pub(crate) struct IndexWrite<'a> {
    pub id: &'a str,
    pub sku: &'a str,
    pub location: &'a str,
    pub ttl: i32,
}

/// A deadline row, living `ttl` seconds.
#[derive(Debug, SerializeRow)]
pub(crate) struct DeadlineWrite<'a> {
    pub minute: i64,
    pub expires_at: i64,
    pub id: &'a str,
    pub ttl: i32,
}

batch_rows!(
    /// The rows of a reservation's index batch: where its lines are, when to expire it,
    /// and its key's fingerprint.
    IndexBatchRow<'a> {
        Index(IndexWrite<'a>),
        Deadline(DeadlineWrite<'a>),
        Fingerprint(FingerprintWrite<'a>),
    }
);

/// A row of the deadline index.
#[derive(Debug, DeserializeRow)]
pub(crate) struct DeadlineRow {
    pub expires_at: i64,
    pub id: String,
}

// ---- idempotency ----

/// A key's fingerprint, and its refusal if the command was refused.
#[derive(Debug, DeserializeRow)]
pub(crate) struct FingerprintRow {
    pub fingerprint: Option<String>,
    pub refusal: Option<String>,
}

/// A key's fingerprint.
#[derive(Debug, SerializeRow)]
pub(crate) struct FingerprintWrite<'a> {
    pub key: &'a str,
    pub fingerprint: &'a str,
}

/// An idempotency claim (multi-partition commands).
#[derive(Debug, DeserializeRow)]
pub(crate) struct ClaimRow {
    pub fingerprint: Option<String>,
    pub state: Option<String>,
    pub result: Option<String>,
    pub claimed_at: Option<i64>,
}

/// A claim's new stamp `IF claimed_at = :held`.
#[derive(Debug, SerializeRow)]
pub(crate) struct ClaimStamp<'a> {
    pub claimed_at: i64,
    pub key: &'a str,
    pub held: i64,
}

// ---- catalog ----

/// A location.
#[derive(Debug, DeserializeRow)]
pub(crate) struct LocationRow {
    pub region: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
}

/// A sales channel or a bundle: its definition as JSON (the version is inside too).
#[derive(Debug, DeserializeRow)]
pub(crate) struct DefinitionRow {
    pub body: Option<String>,
}

// ---- read models ----

/// A read-model row of one key, written `USING TIMESTAMP :written_at` (the version), to
/// `inventory_by_sku_location` or `availability_by_region` alike.
#[derive(Debug, SerializeRow)]
pub(crate) struct InventoryWrite<'a> {
    pub sku: &'a str,
    pub location: &'a str,
    pub region: &'a str,
    pub on_hand: i64,
    pub reserved: i64,
    pub version: i64,
    pub as_of: i64,
    /// The states beyond on-hand and reserved (null when all are zero).
    pub states: Option<String>,
    pub written_at: i64,
}

/// A row of `inventory_by_sku_location`.
#[derive(Debug, DeserializeRow)]
pub(crate) struct InventoryReadRow {
    pub sku: String,
    pub location: String,
    pub region: Option<String>,
    pub on_hand: Option<i64>,
    pub reserved: Option<i64>,
    pub version: Option<i64>,
    pub as_of: Option<i64>,
    pub states: Option<String>,
}

/// One location's share in `availability_by_region`.
#[derive(Debug, DeserializeRow)]
pub(crate) struct ShareRow {
    pub on_hand: Option<i64>,
    pub reserved: Option<i64>,
    pub as_of: Option<i64>,
    pub states: Option<String>,
}

/// A region a SKU has stock rows in.
#[derive(Debug, DeserializeRow)]
pub(crate) struct RegionRow {
    pub region: String,
}

/// A search document.
#[derive(Debug, DeserializeRow)]
pub(crate) struct DocumentRow {
    pub name: Option<String>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub version: Option<i64>,
}

/// A SKU a search term names.
#[derive(Debug, DeserializeRow)]
pub(crate) struct TermRow {
    pub sku: String,
}

/// A consumer's next offset.
#[derive(Debug, DeserializeRow)]
pub(crate) struct OffsetRow {
    pub next_offset: Option<i64>,
}

/// A consumer's next offset on one partition, as every offset is listed.
#[derive(Debug, DeserializeRow)]
pub(crate) struct ConsumerOffsetRow {
    pub consumer: String,
    pub partition: i32,
    pub next_offset: Option<i64>,
}

/// A dead letter.
#[derive(Debug, SerializeRow, DeserializeRow)]
pub(crate) struct LetterRow {
    pub bucket: i32,
    pub id: i64,
    pub consumer: Option<String>,
    pub partition: Option<i32>,
    pub record_offset: Option<i64>,
    pub key: Option<String>,
    pub payload: Option<String>,
    pub error: Option<String>,
    pub attempts: Option<i32>,
    pub failed_at: Option<i64>,
}

/// A dead letter's id.
#[derive(Debug, DeserializeRow)]
pub(crate) struct IdRow {
    pub id: i64,
}

/// A count.
#[derive(Debug, DeserializeRow)]
pub(crate) struct CountRow {
    pub n: i64,
}

/// A movement's columns.
#[derive(Debug, SerializeRow)]
pub(crate) struct MovementWrite<'a> {
    pub sku: &'a str,
    pub location: &'a str,
    pub version: i64,
    pub kind: &'a str,
    pub on_hand: i64,
    pub reserved: i64,
    pub reservation_id: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub actor_subject: Option<&'a str>,
    pub actor_client_id: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub occurred_at: i64,
    pub detail: Option<&'a str>,
}

/// A movement with where it was projected from (seventeen columns: past the driver's
/// tuples).
#[derive(Debug, SerializeRow)]
pub(crate) struct ProjectedMovementWrite<'a> {
    #[scylla(flatten)]
    pub row: MovementWrite<'a>,
    pub bus_partition: i32,
    pub bus_offset: i64,
    pub projected_at: i64,
    pub projected_by: &'a str,
}

/// A movement as read back.
#[derive(Debug, DeserializeRow)]
pub(crate) struct MovementRow {
    pub sku: String,
    pub location: String,
    pub version: i64,
    pub kind: Option<String>,
    pub on_hand: Option<i64>,
    pub reserved: Option<i64>,
    pub reservation_id: Option<String>,
    pub reason: Option<String>,
    pub reference: Option<String>,
    pub actor_subject: Option<String>,
    pub actor_client_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub occurred_at: Option<i64>,
    pub bus_partition: Option<i32>,
    pub bus_offset: Option<i64>,
    pub projected_at: Option<i64>,
    pub projected_by: Option<String>,
    pub detail: Option<String>,
}

// ---- schema, leases ----

/// A member of a lease group.
#[derive(Debug, DeserializeRow)]
pub(crate) struct MemberRow {
    pub member: String,
}
