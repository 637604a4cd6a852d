//! The conditional batch of a round: the level `IF version = <loaded>`, one outbox row per
//! change, each keyed operation's applied-command row `IF NOT EXISTS` (its success or its
//! kept refusal), and each line the round touched — bound as typed rows.

use std::collections::{BTreeMap, BTreeSet};

use scylla::statement::batch::{Batch, BatchType};
use stockflow_domain::{BusEvent, RecordedAnswer, Reservation, StockKey, StockLevel};

use super::Partitions;
use super::op::{Change, CmdGuard, StoredAnswer};
use crate::scylla::cql::rows::{
    LevelWrite, LineKey, LineWriteRow, PartitionBatchRow, PayloadWrite,
};
use crate::scylla::cql::values::bigint;
use crate::scylla::cql::write_statements::RECORD_TTL;
use crate::scylla::outbox::{FreshRow, outbox_row_id};
use crate::{Result, StoreError, now_ms};

/// A batch ready to send: its statements, their rows, and the outbox rows it commits for
/// this process's publisher (if it keeps them).
pub(super) struct Written {
    pub batch: Batch,
    pub values: Vec<PartitionBatchRow>,
    pub fresh: Vec<FreshRow>,
}

impl Written {
    fn new() -> Self {
        Self {
            batch: Batch::new(BatchType::Logged),
            values: Vec::new(),
            fresh: Vec::new(),
        }
    }
}

/// A stored version as CQL's bigint.
fn version(v: u64) -> Result<i64> {
    bigint("write a stock level version", v)
}

impl Partitions {
    /// The conditional batch writing `changes` (level `expected` → `level`) and the
    /// applied-command rows of the `refusals` decided beside them.
    pub(super) fn batch(
        &self,
        key: &StockKey,
        level: &StockLevel,
        expected: Option<u64>,
        changes: &[(usize, Change, Option<&CmdGuard>)],
        (lines, assumed_absent): (&BTreeMap<String, Option<Reservation>>, &BTreeSet<String>),
        refusals: &[(&CmdGuard, RecordedAnswer)],
    ) -> Result<Written> {
        let (sku, location) = (key.sku.to_string(), key.location.to_string());
        let keep = self.outbox.fresh().wanted();
        let now = now_ms();
        let mut w = Written::new();
        w.batch.append_statement(self.st.write_level.clone());
        w.values.push(PartitionBatchRow::Level(LevelWrite {
            region: level.region.to_string(),
            on_hand: level.on_hand,
            reserved: level.reserved,
            version: version(level.version)?,
            extras: level
                .extras
                .to_stored()
                .map_err(StoreError::encode("stock extras"))?,
            sku: sku.clone(),
            location: location.clone(),
            expected: expected.map(version).transpose()?,
        }));
        for (_, change, cmd) in changes {
            let payload = serde_json::to_vec(&BusEvent::Stock(change.event.clone()))
                .map_err(StoreError::encode("outbox event"))?;
            if keep {
                w.fresh.push(FreshRow {
                    version: change.level.version,
                    payload: payload.clone(),
                    created_at_ms: now,
                });
            }
            w.batch.append_statement(self.st.insert_outbox.clone());
            w.values.push(PartitionBatchRow::Payload(PayloadWrite {
                sku: sku.clone(),
                location: location.clone(),
                row_id: outbox_row_id(change.level.version),
                payload,
                created_at: now,
            }));
            if let Some(cmd) = cmd {
                let answer = RecordedAnswer::Accepted(change.result.clone());
                self.append_cmd(&mut w, key, cmd, answer, now)?;
            }
        }
        for (cmd, answer) in refusals {
            self.append_cmd(&mut w, key, cmd, answer.clone(), now)?;
        }
        for (id, after) in lines {
            match after {
                Some(r) => {
                    // Active lines live until settled; final ones as long as idempotency
                    // records, for reads and replays.
                    let ttl = if r.is_active() { 0 } else { RECORD_TTL };
                    // A line taken as absent unread is inserted only if it is.
                    w.batch.append_statement(if assumed_absent.contains(id) {
                        self.st.insert_new_line.clone()
                    } else {
                        self.st.put_line.clone()
                    });
                    w.values.push(PartitionBatchRow::Line(LineWriteRow {
                        sku: sku.clone(),
                        location: location.clone(),
                        row_id: id.clone(),
                        status: r.status.as_str(),
                        payload: serde_json::to_vec(r)
                            .map_err(StoreError::encode("reservation line"))?,
                        created_at: now,
                        ttl,
                    }));
                }
                None => {
                    w.batch.append_statement(self.st.delete_line.clone());
                    w.values.push(PartitionBatchRow::DropLine(LineKey {
                        sku: sku.clone(),
                        location: location.clone(),
                        row_id: id.clone(),
                    }));
                }
            }
        }
        Ok(w)
    }

    /// A batch of nothing but refusals' applied-command rows.
    pub(super) fn refusal_batch(
        &self,
        key: &StockKey,
        refusals: &[(&CmdGuard, RecordedAnswer)],
    ) -> Result<Written> {
        let mut w = Written::new();
        let now = now_ms();
        for (cmd, answer) in refusals {
            self.append_cmd(&mut w, key, cmd, answer.clone(), now)?;
        }
        Ok(w)
    }

    /// Appends `cmd`'s applied-command row (`IF NOT EXISTS`) holding `answer`.
    fn append_cmd(
        &self,
        w: &mut Written,
        key: &StockKey,
        cmd: &CmdGuard,
        answer: RecordedAnswer,
        now: i64,
    ) -> Result<()> {
        let partition = (key.sku.as_str(), key.location.as_str());
        let row = StoredAnswer::row(cmd, answer, partition, now)?;
        w.batch.append_statement(self.st.insert_cmd.clone());
        w.values.push(PartitionBatchRow::Payload(row));
        Ok(())
    }
}
