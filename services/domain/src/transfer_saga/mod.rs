//! The saga of a transfer on a store that writes key by key (ScyllaDB): its header's
//! states, their stored spelling, and every rule a store follows to move it. The store
//! reads the header, asks here, and writes what it is told.
//!
//! ```text
//! created ──▶ shipping ──▶ delivering ──▶ in_transit ──▶ receiving ──▶ in_transit | received
//!    │           │
//!    │           └──▶ unshipping ──▶ created   (a source was short, or the attempt was abandoned)
//!    └──▶ cancelled
//! ```
//!
//! Every move of the header is a conditional write on its `seq`, which each move raises by
//! one, so a write decided on a header that changed since is refused. An *attempt* at
//! shipping is named by the `seq` its `shipping` header got; its steps at each key are
//! guarded by names built from it ([`step_guard`]), so a resumed attempt applies each step
//! once and a later attempt never mistakes an earlier one's steps for its own.
//!
//! Only `shipping` can fail (a source short of stock). Once every source is out the
//! header says `delivering`, and from there on any run (the attempt, a retry, expiry)
//! finishes the shipment: the destination steps cannot be refused. A receipt is checked
//! whole against the header before `receiving` is written, so it too only goes forward.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::decide::transfer::ReceiveStep;
use crate::grant::LocationGrant;
use crate::refusal::{Answer, Refusal};
use crate::saga::RecoveryWindow;
use crate::transfer::{Transfer, TransferStatus};

/// Where a transfer's saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferState {
    /// At rest in a status of the transfer's life cycle.
    At(TransferStatus),
    /// An attempt is taking the units out of the sources.
    Shipping,
    /// An abandoned or refused attempt is giving the sources back.
    Unshipping,
    /// Every source is out; the destinations are being told. Cannot fail.
    Delivering,
    /// A receipt is being applied at the destination. Cannot fail.
    Receiving,
}

impl TransferState {
    /// Reads the stored spelling back.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "created" => Self::At(TransferStatus::Created),
            "in_transit" => Self::At(TransferStatus::InTransit),
            "received" => Self::At(TransferStatus::Received),
            "cancelled" => Self::At(TransferStatus::Cancelled),
            "shipping" => Self::Shipping,
            "unshipping" => Self::Unshipping,
            "delivering" => Self::Delivering,
            "receiving" => Self::Receiving,
            _ => return None,
        })
    }
}

impl fmt::Display for TransferState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::At(status) => f.write_str(status.as_str()),
            Self::Shipping => f.write_str("shipping"),
            Self::Unshipping => f.write_str("unshipping"),
            Self::Delivering => f.write_str("delivering"),
            Self::Receiving => f.write_str("receiving"),
        }
    }
}

/// A receipt under way: its steps at the destination and the transfer once they are in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReceipt {
    /// The changes, in order.
    pub steps: Vec<ReceiveStep>,
    /// The transfer afterwards.
    pub after: Transfer,
    /// Names the receipt's steps: the `seq` of its `receiving` move.
    #[serde(default)]
    pub attempt: i64,
}

/// A transfer's header row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferHeader {
    /// The transfer as of its last state at rest (`created` while shipping).
    pub transfer: Transfer,
    /// Where the saga is.
    pub state: TransferState,
    /// Raised by every move; every conditional write names the value it was decided on.
    pub seq: i64,
    /// The request that moved it last (an attempt's owner, resumed by its retries).
    pub owner: String,
    /// The shipping attempt: the `seq` of its `shipping` move. Kept once the transfer
    /// shipped, so a stale run of that attempt knows its shipment stands.
    pub attempt: i64,
    /// The last move or lease, Unix milliseconds (what expiry judges idleness by).
    pub updated_at_ms: i64,
    /// The receipt under way, while `receiving`.
    pub receipt: Option<PendingReceipt>,
    /// The requests whose command is done (the create, the shipment, each receipt, the
    /// cancel): a retry of one whose answer was lost answers again instead of running
    /// again, whatever happened to the transfer since. Written with the move that
    /// finished the command.
    pub done_by: BTreeSet<String>,
}

impl TransferHeader {
    /// The header of a transfer just created by `owner`.
    pub fn created(transfer: Transfer, owner: &str) -> Self {
        Self {
            updated_at_ms: transfer.created_at_ms,
            transfer,
            state: TransferState::At(TransferStatus::Created),
            seq: 0,
            owner: owner.to_string(),
            attempt: 0,
            receipt: None,
            done_by: BTreeSet::from([owner.to_string()]),
        }
    }

    /// Whether the request `owner`'s command on this transfer is done.
    pub fn done_by(&self, owner: &str) -> bool {
        self.done_by.contains(owner)
    }

    /// `self` with `owner`'s command done.
    fn done(mut self, owner: &str) -> Self {
        self.done_by.insert(owner.to_string());
        self
    }

    /// The transfer as clients see it: an attempt under way that may still fail is not
    /// shown; one that can no longer fail is shown as done.
    pub fn shown(&self) -> Transfer {
        match (self.state, &self.receipt) {
            (TransferState::Delivering, _) => {
                crate::decide::transfer::shipped(&self.transfer, self.updated_at_ms)
            }
            (TransferState::Receiving, Some(receipt)) => receipt.after.clone(),
            _ => self.transfer.clone(),
        }
    }

    /// The next header: `state`, moved by `owner` at `now_ms` (`seq` raised by one).
    fn moved(&self, state: TransferState, owner: &str, now_ms: i64) -> Self {
        Self {
            state,
            seq: self.seq + 1,
            owner: owner.to_string(),
            updated_at_ms: now_ms,
            ..self.clone()
        }
    }

    /// `shipping`: a new attempt by `owner`.
    pub fn begin_shipping(&self, owner: &str, now_ms: i64) -> Self {
        let next = self.moved(TransferState::Shipping, owner, now_ms);
        Self {
            attempt: next.seq,
            ..next
        }
    }

    /// `delivering`: every source of the attempt is out.
    pub fn delivering(&self, now_ms: i64) -> Self {
        let owner = self.owner.clone();
        self.moved(TransferState::Delivering, &owner, now_ms)
    }

    /// `in_transit`, the shipment done (for the attempt's owner).
    pub fn delivered(&self, now_ms: i64) -> Self {
        let owner = self.owner.clone();
        Self {
            transfer: crate::decide::transfer::shipped(&self.transfer, now_ms),
            ..self.moved(TransferState::At(TransferStatus::InTransit), &owner, now_ms)
        }
        .done(&owner)
    }

    /// `unshipping`: the attempt is given up.
    pub fn unshipping(&self, now_ms: i64) -> Self {
        let owner = self.owner.clone();
        self.moved(TransferState::Unshipping, &owner, now_ms)
    }

    /// `created` again, the sources given back.
    pub fn unshipped(&self, now_ms: i64) -> Self {
        let owner = self.owner.clone();
        self.moved(TransferState::At(TransferStatus::Created), &owner, now_ms)
    }

    /// `receiving` the receipt of `steps`, leaving `after`, by `owner`.
    pub fn begin_receiving(
        &self,
        steps: Vec<ReceiveStep>,
        after: Transfer,
        owner: &str,
        now_ms: i64,
    ) -> Self {
        let next = self.moved(TransferState::Receiving, owner, now_ms);
        let receipt = PendingReceipt {
            steps,
            after,
            attempt: next.seq,
        };
        Self {
            receipt: Some(receipt),
            ..next
        }
    }

    /// At rest after the receipt under way (`None` if there is none).
    pub fn received(&self, now_ms: i64) -> Option<Self> {
        let after = self.receipt.as_ref()?.after.clone();
        let owner = self.owner.clone();
        let next = self.moved(TransferState::At(after.status), &owner, now_ms);
        Some(
            Self {
                transfer: after,
                receipt: None,
                ..next
            }
            .done(&owner),
        )
    }

    /// `cancelled`, as [`crate::decide::transfer::cancel`] decided.
    pub fn cancelled(&self, transfer: Transfer, owner: &str, now_ms: i64) -> Self {
        Self {
            transfer,
            ..self.moved(TransferState::At(TransferStatus::Cancelled), owner, now_ms)
        }
        .done(owner)
    }
}

/// Which step of an attempt a guard names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// A line's units out of its source.
    Out,
    /// The same units given back to the source (the attempt abandoned).
    Back,
    /// A line's units in transit at its destination.
    In,
    /// The `n`th change of a receipt at the destination.
    Receipt(usize),
}

/// The name of `step` of `attempt` at a key: at most one change per name is ever applied
/// at that key (the store keeps the name with the change, in the same conditional write).
pub fn step_guard(transfer: &Transfer, attempt: i64, step: StepKind) -> String {
    let step = match step {
        StepKind::Out => "out".to_string(),
        StepKind::Back => "back".to_string(),
        StepKind::In => "in".to_string(),
        StepKind::Receipt(n) => format!("r{n}"),
    };
    format!("t:{}:{attempt}:{step}", transfer.id)
}

/// What a ship request does about the header it finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnShip {
    /// Created: begin an attempt.
    Begin,
    /// The request's own attempt, left `shipping`: resume it.
    Resume,
    /// Another attempt is shipping and was active within the window: retry later.
    Busy,
    /// Another attempt has been idle for the whole window: abandon it (if its lease is
    /// still the one seen), roll it back, then look again.
    Abandon {
        /// The lease judged idle.
        seen_updated_at_ms: i64,
    },
    /// An attempt is being rolled back: finish that, then look again.
    FinishRollback,
    /// Every source is out: finish the delivery, then answer.
    FinishDelivery,
    /// Shipped by this very request before (its answer was lost): answer again.
    AnswerAgain,
}

/// What a request by `owner` to ship does about `header` at `now_ms`.
pub fn on_ship(
    header: &TransferHeader,
    owner: &str,
    grant: &LocationGrant,
    now_ms: i64,
    window: RecoveryWindow,
) -> Answer<OnShip> {
    grant.check(&header.transfer.from)?;
    if header.done_by(owner) {
        return Ok(OnShip::AnswerAgain);
    }
    let own = header.owner == owner;
    Ok(match header.state {
        TransferState::At(TransferStatus::Created) => OnShip::Begin,
        TransferState::Shipping if own => OnShip::Resume,
        TransferState::Shipping if window.is_idle(header.updated_at_ms, now_ms) => {
            OnShip::Abandon {
                seen_updated_at_ms: header.updated_at_ms,
            }
        }
        TransferState::Shipping => OnShip::Busy,
        TransferState::Unshipping => OnShip::FinishRollback,
        TransferState::Delivering => OnShip::FinishDelivery,
        _ => return Err(status_conflict(header)),
    })
}

/// What expiry does about a header whose recovery time came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnRecover {
    /// At rest: nothing to do.
    Done,
    /// An attempt still shipping and active: look again at this time.
    LookAgain(i64),
    /// An attempt idle for the window: abandon it (if its lease is still the one seen)
    /// and roll it back.
    Abandon {
        /// The lease judged idle.
        seen_updated_at_ms: i64,
    },
    /// Finish a rollback.
    FinishRollback,
    /// Finish a delivery.
    FinishDelivery,
    /// Finish a receipt.
    FinishReceipt,
}

/// What expiry does about `header` at `now_ms`.
pub fn on_recover(header: &TransferHeader, now_ms: i64, window: RecoveryWindow) -> OnRecover {
    match header.state {
        TransferState::At(_) => OnRecover::Done,
        TransferState::Shipping if window.is_idle(header.updated_at_ms, now_ms) => {
            OnRecover::Abandon {
                seen_updated_at_ms: header.updated_at_ms,
            }
        }
        TransferState::Shipping => OnRecover::LookAgain(window.after(header.updated_at_ms)),
        TransferState::Unshipping => OnRecover::FinishRollback,
        TransferState::Delivering => OnRecover::FinishDelivery,
        TransferState::Receiving => OnRecover::FinishReceipt,
    }
}

/// What an attempt does once one of its fenced writes was refused (the header is no
/// longer `shipping` at the attempt's `seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLostFence {
    /// A concurrent run of the same attempt took it past the point of no return: finish
    /// the delivery (if still under way) and answer.
    Made,
    /// The attempt is being rolled back: help finish it, then tell the client to retry.
    HelpRollBack,
    /// Rolled back already, or another attempt's: give back exactly what this attempt
    /// holds, then tell the client to retry.
    GiveBack,
}

/// What `attempt` does after a lost fence, with the header as it is now. (`attempt` is
/// kept through `delivering` and every receipt, so a shipment that stands is never given
/// back by a stale run of the attempt that made it.)
pub fn after_lost_fence(now: &TransferHeader, attempt: i64) -> AfterLostFence {
    if now.attempt != attempt {
        return AfterLostFence::GiveBack;
    }
    match now.state {
        TransferState::Delivering | TransferState::At(TransferStatus::InTransit) => {
            AfterLostFence::Made
        }
        TransferState::Unshipping => AfterLostFence::HelpRollBack,
        // Received or receiving already: the attempt shipped, and more happened since.
        TransferState::Receiving | TransferState::At(TransferStatus::Received) => {
            AfterLostFence::Made
        }
        _ => AfterLostFence::GiveBack,
    }
}

/// Whether the request `owner` created the transfer: a create whose answer was lost
/// answers again instead of `transfer_exists`.
pub fn made_by(header: &TransferHeader, owner: &str) -> bool {
    header.done_by(owner)
}

/// What a receive request does about the header it finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnReceive {
    /// In transit: decide the receipt ([`crate::decide::transfer::receive_steps`]) and
    /// begin it.
    Begin,
    /// The request's own receipt, left `receiving`: finish it and answer.
    Resume,
    /// Another request's receipt, or a delivery, is under way: finish it, then look again.
    FinishFirst,
    /// This very request received it before (its answer was lost): answer again.
    AnswerAgain,
}

/// What a request by `owner` to receive does about `header`.
pub fn on_receive(
    header: &TransferHeader,
    owner: &str,
    grant: &LocationGrant,
) -> Answer<OnReceive> {
    grant.check(&header.transfer.to)?;
    if header.done_by(owner) {
        return Ok(OnReceive::AnswerAgain);
    }
    Ok(match header.state {
        TransferState::Receiving if header.owner == owner => OnReceive::Resume,
        TransferState::Receiving | TransferState::Delivering => OnReceive::FinishFirst,
        TransferState::At(TransferStatus::InTransit) => OnReceive::Begin,
        // Not shipped yet (shipping, unshipping and created all show `created`), or done.
        _ => return Err(status_conflict(header)),
    })
}

/// What a cancel request does about the header it finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnCancel {
    /// Created: cancel it ([`crate::decide::transfer::cancel`]).
    Decide,
    /// An attempt is shipping it: retry later (it may yet fail, and cancel).
    Busy,
    /// Being rolled back: finish that, then look again.
    FinishRollback,
    /// This very request cancelled it before (its answer was lost): answer again.
    AnswerAgain,
}

/// What a cancel request by `owner` does about `header`.
pub fn on_cancel(header: &TransferHeader, owner: &str, grant: &LocationGrant) -> Answer<OnCancel> {
    grant.check(&header.transfer.from)?;
    if header.done_by(owner) {
        return Ok(OnCancel::AnswerAgain);
    }
    Ok(match header.state {
        TransferState::At(TransferStatus::Created) => OnCancel::Decide,
        TransferState::Shipping => OnCancel::Busy,
        TransferState::Unshipping => OnCancel::FinishRollback,
        _ => return Err(status_conflict(header)),
    })
}

fn status_conflict(header: &TransferHeader) -> Refusal {
    let shown = header.shown();
    Refusal::TransferStatusConflict {
        id: shown.id,
        status: shown.status,
    }
}

#[cfg(test)]
mod tests;
