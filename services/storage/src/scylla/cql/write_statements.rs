//! Every CQL statement of the write store, prepared once per session. Statements bound
//! with a row struct of [`super::rows`] use named markers (`:name`), matched to the
//! struct's fields; the rest take a short tuple in marker order. No state is spelled here:
//! statuses and claim states are bound, as the domain spells them.

use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;

use super::query;
use crate::Result;

/// Applied-command records, final reservation lines and finished claims live this long
/// (seconds): the documented lifetime of an Idempotency-Key, the same on every backend.
pub(crate) const RECORD_TTL: i32 = stockflow_domain::IDEMPOTENCY_KEY_LIFETIME_SECS as i32;
/// Partition (location) holding a SKU's catalog data.
pub(crate) const CATALOG: &str = "~catalog";
/// Partition (location) holding a SKU's own policy, its changes' outbox rows and their
/// applied-command rows.
pub(crate) const SKU_POLICY: &str = "~policy";

/// Whether a stock partition's location names one of a SKU's own partitions (catalog,
/// policy) rather than a location: `~` is not a character of any id.
pub(crate) fn is_sku_partition(location: &str) -> bool {
    location.starts_with('~')
}

/// The write store's prepared statements.
pub(crate) struct WriteStatements {
    pub load_level: PreparedStatement,
    pub load_cmds: PreparedStatement,
    pub load_cmds_serial: PreparedStatement,
    pub load_lines: PreparedStatement,
    pub load_lines_serial: PreparedStatement,
    pub write_level: PreparedStatement,
    pub insert_outbox: PreparedStatement,
    pub insert_cmd: PreparedStatement,
    pub put_line: PreparedStatement,
    pub insert_new_line: PreparedStatement,
    pub delete_line: PreparedStatement,
    pub insert_marker: PreparedStatement,
    pub markers: PreparedStatement,
    pub delete_marker: PreparedStatement,
    pub partition_outbox: PreparedStatement,
    pub outbox_after: PreparedStatement,
    pub delete_outbox_upto: PreparedStatement,
    pub get_location: PreparedStatement,
    pub put_location: PreparedStatement,
    pub get_channel: PreparedStatement,
    pub create_channel: PreparedStatement,
    pub revise_channel: PreparedStatement,
    pub get_bundle: PreparedStatement,
    pub all_bundles: PreparedStatement,
    pub create_bundle: PreparedStatement,
    pub revise_bundle: PreparedStatement,
    pub get_catalog: PreparedStatement,
    pub write_catalog: PreparedStatement,
    pub get_sku_policy: PreparedStatement,
    pub write_sku_policy: PreparedStatement,
    pub create_header: PreparedStatement,
    pub get_header: PreparedStatement,
    pub move_header: PreparedStatement,
    pub fence_header: PreparedStatement,
    pub abandon_header: PreparedStatement,
    pub finish_header: PreparedStatement,
    pub delete_header: PreparedStatement,
    pub index_line: PreparedStatement,
    pub index_of: PreparedStatement,
    pub insert_deadline: PreparedStatement,
    pub delete_deadline: PreparedStatement,
    pub deadlines_from: PreparedStatement,
    pub claim: PreparedStatement,
    pub get_claim: PreparedStatement,
    pub take_over: PreparedStatement,
    pub finish_claim: PreparedStatement,
    pub drop_claim: PreparedStatement,
    pub get_fingerprint: PreparedStatement,
    pub put_fingerprint: PreparedStatement,
    pub put_refusal: PreparedStatement,
    pub all_levels: PreparedStatement,
    pub all_catalogs: PreparedStatement,
    /// Every reservation line of a partition (read only for a recorded fact that
    /// oversells: it names the reservations at risk).
    pub all_lines: PreparedStatement,
}

impl WriteStatements {
    pub(crate) async fn prepare(s: &Session, ks: &str) -> Result<Self> {
        let p = |cql: String| query::prepare(s, cql);
        let sp = format!("{ks}.stock_partitions");
        let load_lines = p(format!("SELECT row_id, status, payload FROM {sp} WHERE sku = ? AND location = ? AND row_kind = 'r' AND row_id IN ?")).await?;
        let mut load_lines_serial = load_lines.clone();
        load_lines_serial.set_consistency(Consistency::LocalSerial);
        let load_cmds = p(format!("SELECT row_id, payload FROM {sp} WHERE sku = ? AND location = ? AND row_kind = 'c' AND row_id IN ?")).await?;
        let mut load_cmds_serial = load_cmds.clone();
        load_cmds_serial.set_consistency(Consistency::LocalSerial);
        Ok(Self {
            load_level: p(format!("SELECT region, on_hand, reserved, version, extras FROM {sp} WHERE sku = ? AND location = ? LIMIT 1")).await?,
            load_cmds,
            load_cmds_serial,
            load_lines,
            load_lines_serial,
            // `IF version = :expected` bound to null holds for a partition never written, so
            // the first change of a key needs no separate Paxos round to create it.
            write_level: p(format!("UPDATE {sp} SET region = :region, on_hand = :on_hand, reserved = :reserved, version = :version, extras = :extras WHERE sku = :sku AND location = :location IF version = :expected")).await?,
            insert_outbox: p(format!("INSERT INTO {sp} (sku, location, row_kind, row_id, payload, created_at) VALUES (:sku, :location, 'o', :row_id, :payload, :created_at)")).await?,
            insert_cmd: p(format!("INSERT INTO {sp} (sku, location, row_kind, row_id, payload, created_at) VALUES (:sku, :location, 'c', :row_id, :payload, :created_at) IF NOT EXISTS USING TTL {RECORD_TTL}")).await?,
            put_line: p(format!("INSERT INTO {sp} (sku, location, row_kind, row_id, status, payload, created_at) VALUES (:sku, :location, 'r', :row_id, :status, :payload, :created_at) USING TTL :ttl")).await?,
            insert_new_line: p(format!("INSERT INTO {sp} (sku, location, row_kind, row_id, status, payload, created_at) VALUES (:sku, :location, 'r', :row_id, :status, :payload, :created_at) IF NOT EXISTS USING TTL :ttl")).await?,
            delete_line: p(format!("DELETE FROM {sp} WHERE sku = :sku AND location = :location AND row_kind = 'r' AND row_id = :row_id")).await?,
            insert_marker: p(format!("INSERT INTO {ks}.outbox_markers (shard, sku, location, touched) VALUES (?, ?, ?, ?)")).await?,
            markers: p(format!("SELECT sku, location, writetime(touched) AS written FROM {ks}.outbox_markers WHERE shard = ?")).await?,
            delete_marker: p(format!("DELETE FROM {ks}.outbox_markers USING TIMESTAMP ? WHERE shard = ? AND sku = ? AND location = ?")).await?,
            partition_outbox: p(format!("SELECT row_id, payload, created_at FROM {sp} WHERE sku = ? AND location = ? AND row_kind = 'o' LIMIT ?")).await?,
            outbox_after: p(format!("SELECT row_id, payload, created_at FROM {sp} WHERE sku = ? AND location = ? AND row_kind = 'o' AND row_id > ? LIMIT ?")).await?,
            // One range tombstone per partition and publish, not one per row: a queue of
            // per-row tombstones makes every later read of the partition slower.
            delete_outbox_upto: p(format!("DELETE FROM {sp} WHERE sku = ? AND location = ? AND row_kind = 'o' AND row_id <= ?")).await?,
            get_location: p(format!("SELECT region, kind, name FROM {ks}.locations WHERE id = ?")).await?,
            put_location: p(format!("INSERT INTO {ks}.locations (id, region, kind, name) VALUES (?, ?, ?, ?)")).await?,
            get_channel: p(format!("SELECT body FROM {ks}.channels WHERE id = ?")).await?,
            create_channel: p(format!("INSERT INTO {ks}.channels (id, version, body) VALUES (?, ?, ?) IF NOT EXISTS")).await?,
            revise_channel: p(format!("UPDATE {ks}.channels SET version = ?, body = ? WHERE id = ? IF version = ?")).await?,
            get_bundle: p(format!("SELECT body FROM {ks}.bundles WHERE sku = ?")).await?,
            all_bundles: p(format!("SELECT body FROM {ks}.bundles")).await?,
            create_bundle: p(format!("INSERT INTO {ks}.bundles (sku, version, body) VALUES (?, ?, ?) IF NOT EXISTS")).await?,
            revise_bundle: p(format!("UPDATE {ks}.bundles SET version = ?, body = ? WHERE sku = ? IF version = ?")).await?,
            get_catalog: p(format!("SELECT version FROM {sp} WHERE sku = ? AND location = '{CATALOG}' LIMIT 1")).await?,
            write_catalog: p(format!("UPDATE {sp} SET region = 'catalog', catalog_name = :catalog_name, catalog_attributes = :catalog_attributes, version = :version WHERE sku = :sku AND location = '{CATALOG}' IF version = :expected")).await?,
            get_sku_policy: p(format!("SELECT extras, version FROM {sp} WHERE sku = ? AND location = '{SKU_POLICY}' LIMIT 1")).await?,
            // `IF version = :expected` bound to null holds for a SKU whose policy was never set.
            write_sku_policy: p(format!("UPDATE {sp} SET region = 'policy', extras = :settings, version = :version WHERE sku = :sku AND location = '{SKU_POLICY}' IF version = :expected")).await?,
            create_header: p(format!("INSERT INTO {ks}.reservations (id, status, owner, lines, reference, created_at, expires_at, updated_at) VALUES (:id, :status, :owner, :lines, :reference, :created_at, :expires_at, :updated_at) IF NOT EXISTS")).await?,
            get_header: p(format!("SELECT status, owner, lines, reference, created_at, expires_at, updated_at FROM {ks}.reservations WHERE id = ?")).await?,
            move_header: p(format!("UPDATE {ks}.reservations SET status = :new_status, updated_at = :moved_at WHERE id = :id IF status = :old_status")).await?,
            // A saga attempt's own moves (a step's lease, `active`, its own rollback): only
            // while the header is still pending and still this attempt's.
            fence_header: p(format!("UPDATE {ks}.reservations SET status = :new_status, updated_at = :moved_at WHERE id = :id IF status = :old_status AND owner = :owner AND created_at = :created_at")).await?,
            // Expiry's rollback of an abandoned saga: only if no step took a lease since
            // expiry read the header.
            abandon_header: p(format!("UPDATE {ks}.reservations SET status = :new_status, updated_at = :moved_at WHERE id = :id IF status = :old_status AND updated_at = :seen")).await?,
            // Plain: only the settlement that won `active → settling` writes it, and
            // readers already report `settling` as its outcome. Every column again, so the
            // whole row expires: an UPDATE's TTL covers only the cells it sets, and the rest
            // of the header (with no status) would outlive it as an active one.
            finish_header: p(format!("INSERT INTO {ks}.reservations (id, status, owner, lines, reference, created_at, expires_at, updated_at) VALUES (:id, :status, :owner, :lines, :reference, :created_at, :expires_at, :updated_at) USING TTL {RECORD_TTL}")).await?,
            delete_header: p(format!("DELETE FROM {ks}.reservations WHERE id = ? IF status = ?")).await?,
            index_line: p(format!("INSERT INTO {ks}.reservation_index (id, sku, location) VALUES (:id, :sku, :location) USING TTL :ttl")).await?,
            index_of: p(format!("SELECT sku, location FROM {ks}.reservation_index WHERE id = ?")).await?,
            insert_deadline: p(format!("INSERT INTO {ks}.reservation_deadlines (minute, expires_at, id) VALUES (:minute, :expires_at, :id) USING TTL :ttl")).await?,
            delete_deadline: p(format!("DELETE FROM {ks}.reservation_deadlines WHERE minute = ? AND expires_at = ? AND id = ?")).await?,
            deadlines_from: p(format!("SELECT expires_at, id FROM {ks}.reservation_deadlines WHERE minute = ? AND expires_at >= ? LIMIT ?")).await?,
            claim: p(format!("INSERT INTO {ks}.idempotency (key, fingerprint, state, claimed_at) VALUES (?, ?, ?, ?) IF NOT EXISTS USING TTL {RECORD_TTL}")).await?,
            get_claim: p(format!("SELECT fingerprint, state, result, claimed_at FROM {ks}.idempotency WHERE key = ?")).await?,
            take_over: p(format!("UPDATE {ks}.idempotency USING TTL {RECORD_TTL} SET claimed_at = :claimed_at WHERE key = :key IF claimed_at = :held")).await?,
            // Only the claim's owner finishes it, after every step of the command is done.
            finish_claim: p(format!("UPDATE {ks}.idempotency USING TTL {RECORD_TTL} SET state = ?, result = ? WHERE key = ? IF claimed_at = ?")).await?,
            drop_claim: p(format!("DELETE FROM {ks}.idempotency WHERE key = ? IF claimed_at = ?")).await?,
            get_fingerprint: p(format!("SELECT fingerprint, refusal FROM {ks}.idempotency_fingerprints WHERE key = ?")).await?,
            put_fingerprint: p(format!("INSERT INTO {ks}.idempotency_fingerprints (key, fingerprint) VALUES (:key, :fingerprint) USING TTL {RECORD_TTL}")).await?,
            put_refusal: p(format!("INSERT INTO {ks}.idempotency_fingerprints (key, fingerprint, refusal) VALUES (?, ?, ?) USING TTL {RECORD_TTL}")).await?,
            all_lines: p(format!("SELECT row_id, status, payload FROM {sp} WHERE sku = ? AND location = ? AND row_kind = 'r'")).await?,
            all_levels: p(format!("SELECT DISTINCT sku, location, region, on_hand, reserved, version, extras FROM {sp}")).await?,
            all_catalogs: p(format!("SELECT DISTINCT sku, location, catalog_name, catalog_attributes, version FROM {sp}")).await?,
        })
    }
}
