//! Every CQL statement of the read store, prepared once per session. Read-model rows are
//! written `USING TIMESTAMP :written_at` (their version), so the newest version wins
//! without a read or a Paxos round.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::query;
use crate::Result;

/// The read store's prepared statements.
pub(crate) struct ReadStatements {
    pub upsert_inventory: PreparedStatement,
    pub upsert_availability: PreparedStatement,
    pub add_region: PreparedStatement,
    pub get_document: PreparedStatement,
    pub upsert_document: PreparedStatement,
    pub delete_term: PreparedStatement,
    pub insert_term: PreparedStatement,
    pub terms: PreparedStatement,
    pub store_offset: PreparedStatement,
    pub get_offset: PreparedStatement,
    pub insert_letter: PreparedStatement,
    pub letters: PreparedStatement,
    pub delete_letter: PreparedStatement,
    pub letters_before: PreparedStatement,
    pub delete_letters_through: PreparedStatement,
    pub count_letters: PreparedStatement,
    pub stock_by_sku: PreparedStatement,
    pub stock_at: PreparedStatement,
    pub regions: PreparedStatement,
    pub region_rows: PreparedStatement,
    pub all_inventory: PreparedStatement,
    pub all_offsets: PreparedStatement,
    pub insert_movement: PreparedStatement,
    pub insert_projected_movement: PreparedStatement,
    pub movements: PreparedStatement,
    pub trim_movements: PreparedStatement,
}

impl ReadStatements {
    pub(crate) async fn prepare(s: &Session, ks: &str) -> Result<Self> {
        let p = |cql: String| query::prepare(s, cql);
        let inventory = "sku, location, region, on_hand, reserved, version, as_of, states";
        let movement = "sku, location, version, kind, on_hand, reserved, reservation_id, reason, reference, actor_subject, actor_client_id, idempotency_key, occurred_at, detail";
        let provenance = "bus_partition, bus_offset, projected_at, projected_by";
        Ok(Self {
            upsert_inventory: p(format!("INSERT INTO {ks}.inventory_by_sku_location ({inventory}) VALUES (:sku, :location, :region, :on_hand, :reserved, :version, :as_of, :states) USING TIMESTAMP :written_at")).await?,
            upsert_availability: p(format!("INSERT INTO {ks}.availability_by_region ({inventory}) VALUES (:sku, :location, :region, :on_hand, :reserved, :version, :as_of, :states) USING TIMESTAMP :written_at")).await?,
            // Timestamp 1: nothing deletes these rows, so any write of one is as good.
            add_region: p(format!("INSERT INTO {ks}.regions_by_sku (sku, region) VALUES (?, ?) USING TIMESTAMP 1")).await?,
            get_document: p(format!("SELECT name, attributes, version FROM {ks}.search_documents WHERE sku = ?")).await?,
            upsert_document: p(format!("INSERT INTO {ks}.search_documents (sku, name, attributes, version) VALUES (?, ?, ?, ?) USING TIMESTAMP ?")).await?,
            delete_term: p(format!("DELETE FROM {ks}.search_terms USING TIMESTAMP ? WHERE term = ? AND sku = ?")).await?,
            insert_term: p(format!("INSERT INTO {ks}.search_terms (term, sku) VALUES (?, ?) USING TIMESTAMP ?")).await?,
            terms: p(format!("SELECT sku FROM {ks}.search_terms WHERE term = ?")).await?,
            store_offset: p(format!("INSERT INTO {ks}.consumer_offsets (consumer, partition, next_offset) VALUES (?, ?, ?)")).await?,
            get_offset: p(format!("SELECT next_offset FROM {ks}.consumer_offsets WHERE consumer = ? AND partition = ?")).await?,
            insert_letter: p(format!("INSERT INTO {ks}.dead_letters (bucket, id, consumer, partition, record_offset, key, payload, error, attempts, failed_at) VALUES (:bucket, :id, :consumer, :partition, :record_offset, :key, :payload, :error, :attempts, :failed_at) IF NOT EXISTS")).await?,
            letters: p(format!("SELECT bucket, id, consumer, partition, record_offset, key, payload, error, attempts, failed_at FROM {ks}.dead_letters WHERE bucket = ? LIMIT ?")).await?,
            delete_letter: p(format!("DELETE FROM {ks}.dead_letters WHERE bucket = ? AND id = ? IF EXISTS")).await?,
            letters_before: p(format!("SELECT id FROM {ks}.dead_letters WHERE bucket = ? AND id < ? LIMIT ?")).await?,
            delete_letters_through: p(format!("DELETE FROM {ks}.dead_letters WHERE bucket = ? AND id <= ?")).await?,
            count_letters: p(format!("SELECT COUNT(*) AS n FROM {ks}.dead_letters WHERE bucket = ?")).await?,
            stock_by_sku: p(format!("SELECT {inventory} FROM {ks}.inventory_by_sku_location WHERE sku = ?")).await?,
            stock_at: p(format!("SELECT {inventory} FROM {ks}.inventory_by_sku_location WHERE sku = ? AND location = ?")).await?,
            regions: p(format!("SELECT region FROM {ks}.regions_by_sku WHERE sku = ?")).await?,
            region_rows: p(format!("SELECT on_hand, reserved, as_of, states FROM {ks}.availability_by_region WHERE sku = ? AND region = ?")).await?,
            all_inventory: p(format!("SELECT {inventory} FROM {ks}.inventory_by_sku_location")).await?,
            all_offsets: p(format!("SELECT consumer, partition, next_offset FROM {ks}.consumer_offsets")).await?,
            insert_movement: p(format!("INSERT INTO {ks}.stock_movements ({movement}) VALUES (:sku, :location, :version, :kind, :on_hand, :reserved, :reservation_id, :reason, :reference, :actor_subject, :actor_client_id, :idempotency_key, :occurred_at, :detail)")).await?,
            insert_projected_movement: p(format!("INSERT INTO {ks}.stock_movements ({movement}, {provenance}) VALUES (:sku, :location, :version, :kind, :on_hand, :reserved, :reservation_id, :reason, :reference, :actor_subject, :actor_client_id, :idempotency_key, :occurred_at, :detail, :bus_partition, :bus_offset, :projected_at, :projected_by)")).await?,
            movements: p(format!("SELECT {movement}, {provenance} FROM {ks}.stock_movements WHERE sku = ? AND location = ? AND version > ? ORDER BY version LIMIT ?")).await?,
            trim_movements: p(format!("DELETE FROM {ks}.stock_movements WHERE sku = ? AND location = ? AND version > ?")).await?,
        })
    }
}
