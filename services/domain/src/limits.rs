//! The bounds every command and stored quantity keeps, shared by validation, the stock
//! rules and the API's schema.

/// Largest quantity one command line may move.
pub const MAX_LINE_QTY: i64 = 1_000_000;
/// Largest on-hand count a stock key may hold; keeps every sum far from i64 overflow.
pub const MAX_ON_HAND: i64 = 1_000_000_000_000;
/// Lines one reservation may hold.
pub const MAX_LINES: usize = 100;
/// Longest reservation TTL, in seconds (one day).
pub const MAX_TTL_SECONDS: u64 = 86_400;
/// Largest version a client may name in `expected_version`: 2^53 - 1, the largest integer
/// every JSON client (JavaScript's included) reads exactly.
pub const MAX_VERSION: u64 = (1 << 53) - 1;
/// Longest free-text reference (order number, ASN, ticket), in characters: enough for any
/// external id, short enough for a log line.
pub const MAX_REFERENCE_CHARS: usize = 128;
/// Open incoming lines (purchase-order lines and transfers) one key may hold: a key's
/// state is one document, kept small.
pub const MAX_INCOMING: usize = 100;
/// Backordered reservations one key may hold at once; past this, reservations beyond stock
/// are refused as under `deny`.
pub const MAX_BACKORDERS: usize = 1000;
/// Lines one transfer may hold.
pub const MAX_TRANSFER_LINES: usize = 100;
