//! Transfers on ScyllaDB: a saga over the source and destination keys, all or nothing,
//! each key's step applied exactly once, every intermediate state recoverable.
//!
//! The header row in `transfers` carries the saga state ([`stockflow_domain::transfer_saga`]
//! has the states and every rule), moved by conditional writes on its `seq`:
//!
//! - **Ship**: look first (every short source is reported and nothing is written), record
//!   a recovery deadline, move `created → shipping` (the attempt), then one `out` step per
//!   source, each after a lease on the header and sent only within half the recovery
//!   window after it (the reservation saga's fence: see [`super::saga`]). A source short
//!   now moves the header to `unshipping` and gives back what this attempt took. Once
//!   every source is out, `shipping → delivering` is the point of no return: the
//!   destination steps cannot be refused, and any run finishes them (the attempt, a later
//!   request, expiry), then `in_transit`.
//! - **Receive**: decided whole against the header, written as `receiving` with its steps,
//!   then applied at the destination and moved to `in_transit` or `received`: forward only.
//! - **Create** and **cancel** change the header alone.
//! - **Recovery** ([`recovery`]): expiry looks at a transfer at its deadline; an attempt
//!   idle for the whole window is abandoned (`shipping → unshipping IF` its lease is still
//!   the one judged) and rolled back; anything that can only go forward is finished.
//!
//! Each step is guarded by its name's applied-command row in the key's partition
//! ([`steps`]). A rollback gives back a source only where the attempt's `out` step is
//! recorded as applied, read through Paxos once no step of the attempt can still be sent,
//! and its own `back` step is guarded too: nothing is given back twice, nor by an attempt
//! that never took it.

mod header;
pub(crate) mod recovery;
mod steps;

use stockflow_domain::decide::transfer as decide;
use stockflow_domain::transfer_saga::{
    self, AfterLostFence, OnCancel, OnReceive, OnShip, TransferHeader, TransferState,
};
use stockflow_domain::{
    CommandResult, CreateTransfer, EventMeta, LocationGrant, ReceiveTransfer, Refusal, StockKey,
    Transfer, TransferId, TransferStatus,
};

use super::coalesce::Keys;
use super::partition::op::CommandId;
#[cfg(test)]
use super::saga::pauses;
use crate::error::Interruption;
use crate::stop::Step;
use crate::{Result, StoreError};
pub(crate) use header::TransferStatements;

/// How many times a request looks at a header that others keep moving before it gives up
/// with a retryable answer.
const LOOKS: usize = 4;

/// What a transfer command runs with.
pub(crate) struct Ctx<'a> {
    pub keys: &'a Keys,
    pub st: &'a TransferStatements,
    pub meta: &'a EventMeta,
}

impl Ctx<'_> {
    fn session(&self) -> &scylla::client::session::Session {
        &self.keys.partitions.session
    }

    async fn read(&self, id: &TransferId) -> Result<Option<TransferHeader>> {
        header::read(self.session(), self.st, id).await
    }

    async fn existing(&self, id: &TransferId) -> Step<TransferHeader> {
        Ok(self
            .read(id)
            .await?
            .ok_or_else(|| Refusal::TransferNotFound(id.clone()))?)
    }

    async fn move_to(&self, seen: &TransferHeader, next: &TransferHeader) -> Result<bool> {
        header::move_to(self.session(), self.st, seen.seq, next).await
    }
}

fn answer(transfer: Transfer, events: usize) -> Step<(CommandResult, usize)> {
    Ok((CommandResult::Transfer(transfer), events))
}

fn interrupted(why: Interruption) -> crate::stop::Stop {
    StoreError::Interrupted(why).into()
}

/// The transfer `id` as clients see it.
pub(crate) async fn lookup(
    keys: &Keys,
    st: &TransferStatements,
    id: &TransferId,
) -> Result<Option<Transfer>> {
    Ok(header::read(&keys.partitions.session, st, id)
        .await?
        .map(|h| h.shown()))
}

/// Creates a transfer: its header alone, nothing moves.
pub(crate) async fn create(
    ctx: &Ctx<'_>,
    cmd: &CreateTransfer,
    owner: &CommandId,
    grant: &LocationGrant,
) -> Step<(CommandResult, usize)> {
    let p = &*ctx.keys.partitions;
    let existing = ctx.read(&cmd.id).await?;
    if let Some(h) = existing
        .as_ref()
        .filter(|h| transfer_saga::made_by(h, owner.as_str()))
    {
        // This very request made it before (its answer was lost).
        return answer(h.shown(), 0);
    }
    let region = |id| async move {
        Ok::<_, StoreError>(super::catalog::location(p, id).await?.map(|l| l.region))
    };
    let (from, to) = (region(&cmd.from).await?, region(&cmd.to).await?);
    let now = ctx.meta.occurred_at_ms;
    let applied = decide::create(
        existing.map(|h| h.shown()).as_ref(),
        cmd,
        from,
        to,
        grant,
        now,
    )?;
    let transfer = applied.transfer.ok_or_else(|| StoreError::Invariant {
        what: "create a transfer",
        detail: "the decision kept no transfer".into(),
    })?;
    let h = TransferHeader::created(transfer, owner.as_str());
    if !header::insert(ctx.session(), ctx.st, &h).await? {
        // Created meanwhile: by this request's twin, or by another.
        return match ctx.read(&cmd.id).await? {
            Some(now) if transfer_saga::made_by(&now, owner.as_str()) => answer(now.shown(), 0),
            _ => Err(Refusal::TransferExists(cmd.id.clone()).into()),
        };
    }
    answer(h.transfer, 0)
}

/// Cancels a transfer that has not shipped.
pub(crate) async fn cancel(
    ctx: &Ctx<'_>,
    id: &TransferId,
    owner: &CommandId,
    grant: &LocationGrant,
) -> Step<(CommandResult, usize)> {
    let mut events = 0;
    for _ in 0..LOOKS {
        let h = ctx.existing(id).await?;
        match transfer_saga::on_cancel(&h, owner.as_str(), grant)? {
            OnCancel::Decide => {
                let now = ctx.meta.occurred_at_ms;
                let applied = decide::cancel(&h.transfer, grant, now)?;
                let Some(cancelled) = applied.transfer else {
                    return Err(StoreError::Invariant {
                        what: "cancel a transfer",
                        detail: "the decision kept no transfer".into(),
                    }
                    .into());
                };
                let next = h.cancelled(cancelled, owner.as_str(), now);
                if ctx.move_to(&h, &next).await? {
                    return answer(next.transfer, events);
                }
            }
            OnCancel::Busy => return Err(interrupted(Interruption::TransferBusy)),
            OnCancel::FinishRollback => events += roll_back(ctx, &h).await?,
            OnCancel::AnswerAgain => return answer(h.shown(), events),
        }
    }
    Err(interrupted(Interruption::TransferChanged))
}

/// Ships a transfer: all or nothing over its sources and destinations.
pub(crate) async fn ship(
    ctx: &Ctx<'_>,
    id: &TransferId,
    owner: &CommandId,
    grant: &LocationGrant,
) -> Step<(CommandResult, usize)> {
    let p = &*ctx.keys.partitions;
    let mut events = 0;
    for _ in 0..LOOKS {
        let h = ctx.existing(id).await?;
        let now = crate::now_ms();
        match transfer_saga::on_ship(&h, owner.as_str(), grant, now, p.window)? {
            OnShip::Begin => {
                let Some(shipping) = begin(ctx, &h, owner, grant).await? else {
                    continue;
                };
                let (transfer, n) = run_attempt(ctx, shipping, true).await?;
                return answer(transfer, events + n);
            }
            OnShip::Resume => {
                let (transfer, n) = run_attempt(ctx, h, false).await?;
                return answer(transfer, events + n);
            }
            OnShip::Busy => return Err(interrupted(Interruption::TransferBusy)),
            OnShip::Abandon { seen_updated_at_ms } => {
                let next = h.unshipping(now);
                let session = ctx.session();
                if header::abandon(session, ctx.st, h.seq, seen_updated_at_ms, &next).await? {
                    events += roll_back(ctx, &next).await?;
                }
            }
            OnShip::FinishRollback => events += roll_back(ctx, &h).await?,
            OnShip::FinishDelivery => {
                let (done, n) = deliver(ctx, &h).await?;
                // `delivering` names the attempt's owner, whoever finishes it.
                if h.owner != owner.as_str() {
                    // Another request's shipment: this one did not ship it.
                    return Err(Refusal::TransferStatusConflict {
                        id: id.clone(),
                        status: TransferStatus::InTransit,
                    }
                    .into());
                }
                return answer(done.shown(), events + n);
            }
            OnShip::AnswerAgain => return answer(h.shown(), events),
        }
    }
    Err(interrupted(Interruption::TransferChanged))
}

/// Refuses to move a header out of rest once half the recovery window has passed since
/// its reminder's time was chosen at `since_ms`: the move (bounded by the driver's
/// timeout) must land before expiry looks at the reminder, or a crash after it would leave
/// nothing to bring expiry back.
fn in_time(p: &super::partition::Partitions, since_ms: i64) -> Step<()> {
    if crate::now_ms() > p.window.step_deadline(since_ms) {
        return Err(interrupted(Interruption::LeaseRunOut));
    }
    Ok(())
}

/// A new attempt's first moves: look first (every short source reported, nothing
/// written), record the recovery deadline, then `created → shipping`. `None`: the header
/// moved meanwhile.
async fn begin(
    ctx: &Ctx<'_>,
    h: &TransferHeader,
    owner: &CommandId,
    grant: &LocationGrant,
) -> Step<Option<TransferHeader>> {
    let p = &*ctx.keys.partitions;
    let t = &h.transfer;
    let mut sources = Vec::with_capacity(t.lines.len());
    let mut destinations = Vec::with_capacity(t.lines.len());
    for line in &t.lines {
        sources.push(p.level_or_empty(&t.source_key(line)).await??);
        destinations.push(p.level_or_empty(&t.destination_key(line)).await??);
    }
    decide::ship(t, &sources, &destinations, grant, ctx.meta)?;
    let now = crate::now_ms();
    let next = h.begin_shipping(owner.as_str(), now);
    recovery::remind(ctx, &t.id, p.window.after(now)).await?;
    in_time(p, now)?;
    Ok(ctx.move_to(h, &next).await?.then_some(next))
}

/// Runs attempt `h` (`shipping`) to the end: every source out, then delivered. `fresh`:
/// the header was just written, which is the first step's lease.
async fn run_attempt(ctx: &Ctx<'_>, h: TransferHeader, fresh: bool) -> Step<(Transfer, usize)> {
    let p = &*ctx.keys.partitions;
    let t = &h.transfer;
    let mut lease = fresh.then_some(h.updated_at_ms);
    let mut events = 0;
    for (i, line) in t.lines.iter().enumerate() {
        #[cfg(not(test))]
        let _ = i; // names the test pauses only
        #[cfg(test)]
        pauses::pass(t.id.as_str(), pauses::Point::BeforeLease(i)).await;
        let leased_at = match lease.take() {
            Some(at) => at,
            None => {
                let at = crate::now_ms();
                if !header::lease(ctx.session(), ctx.st, &t.id, h.seq, at).await? {
                    return lost_fence(ctx, &h, events).await;
                }
                at
            }
        };
        let op = steps::out(
            t,
            line,
            h.attempt,
            p.window.step_deadline(leased_at),
            ctx.meta,
        );
        match steps::apply(ctx.keys, &t.source_key(line), op).await {
            Ok(n) => events += n,
            Err(crate::stop::Stop::Refused(refusal)) => {
                // Short now (it was not when we looked): give back what this attempt took.
                let next = h.unshipping(crate::now_ms());
                if !ctx.move_to(&h, &next).await? {
                    return lost_fence(ctx, &h, events).await;
                }
                roll_back(ctx, &next).await?;
                return Err(refusal.into());
            }
            // Left `shipping`: a retry resumes it, or expiry rolls it back once idle.
            Err(e) => return Err(e),
        }
    }
    #[cfg(test)]
    pauses::pass(t.id.as_str(), pauses::Point::BeforeActive).await;
    let next = h.delivering(crate::now_ms());
    if !ctx.move_to(&h, &next).await? {
        return lost_fence(ctx, &h, events).await;
    }
    #[cfg(test)]
    pauses::pass(t.id.as_str(), pauses::Point::Delivering).await;
    let (done, n) = deliver(ctx, &next).await?;
    Ok((done.shown(), events + n))
}

/// What attempt `h` answers once one of its fenced writes was refused.
async fn lost_fence(ctx: &Ctx<'_>, h: &TransferHeader, events: usize) -> Step<(Transfer, usize)> {
    let now = ctx.existing(&h.transfer.id).await?;
    match transfer_saga::after_lost_fence(&now, h.attempt) {
        AfterLostFence::Made => {
            let (done, n) = if now.state == TransferState::Delivering {
                deliver(ctx, &now).await?
            } else {
                (now, 0)
            };
            Ok((done.shown(), events + n))
        }
        AfterLostFence::HelpRollBack => {
            roll_back(ctx, &now).await?;
            Err(interrupted(Interruption::RolledBack))
        }
        AfterLostFence::GiveBack => {
            give_back(ctx, &h.transfer, h.attempt).await?;
            Err(interrupted(Interruption::RolledBack))
        }
    }
}

/// Gives back every source `attempt` took out of `transfer`; the events written.
async fn give_back(ctx: &Ctx<'_>, transfer: &Transfer, attempt: i64) -> Step<usize> {
    let mut events = 0;
    for line in &transfer.lines {
        let key = transfer.source_key(line);
        if steps::out_applied(ctx.keys, transfer, &key, attempt).await? {
            events += steps::apply(
                ctx.keys,
                &key,
                steps::back(transfer, line, attempt, ctx.meta),
            )
            .await?;
        }
    }
    metrics::counter!("stockflow_transfer_compensations_total").increment(events as u64);
    Ok(events)
}

/// Finishes the rollback of `h` (`unshipping`): its attempt's sources given back, then
/// `created` again. Idempotent; safe beside the attempt itself (which can no longer take
/// a lease). The events written.
async fn roll_back(ctx: &Ctx<'_>, h: &TransferHeader) -> Step<usize> {
    let events = give_back(ctx, &h.transfer, h.attempt).await?;
    let next = h.unshipped(crate::now_ms());
    // Lost: another run finished it first.
    ctx.move_to(h, &next).await?;
    Ok(events)
}

/// Finishes the delivery of `h` (`delivering`): every destination told, then
/// `in_transit`. Returns the header at rest and the events written.
async fn deliver(ctx: &Ctx<'_>, h: &TransferHeader) -> Step<(TransferHeader, usize)> {
    let t = &h.transfer;
    let mut events = 0;
    for line in &t.lines {
        let op = steps::arrive_in_transit(t, line, h.attempt, ctx.meta);
        events += steps::apply(ctx.keys, &t.destination_key(line), op).await?;
    }
    let next = h.delivered(crate::now_ms());
    if !ctx.move_to(h, &next).await? {
        // Finished by another run meanwhile: what it left.
        return Ok((ctx.existing(&t.id).await?, events));
    }
    Ok((next, events))
}

/// Receives units of a transfer at its destination.
pub(crate) async fn receive(
    ctx: &Ctx<'_>,
    cmd: &ReceiveTransfer,
    owner: &CommandId,
    grant: &LocationGrant,
) -> Step<(CommandResult, usize)> {
    let p = &*ctx.keys.partitions;
    let mut events = 0;
    for _ in 0..LOOKS {
        let h = ctx.existing(&cmd.id).await?;
        match transfer_saga::on_receive(&h, owner.as_str(), grant)? {
            OnReceive::Begin => {
                let now = crate::now_ms();
                let (steps, after) = decide::receive_steps(&h.transfer, cmd, grant, now)?;
                let next = h.begin_receiving(steps, after, owner.as_str(), now);
                recovery::remind(ctx, &cmd.id, p.window.after(now)).await?;
                in_time(p, now)?;
                if ctx.move_to(&h, &next).await? {
                    let (done, n) = finish_receipt(ctx, &next).await?;
                    return answer(done.shown(), events + n);
                }
            }
            OnReceive::Resume => {
                let (done, n) = finish_receipt(ctx, &h).await?;
                return answer(done.shown(), events + n);
            }
            OnReceive::FinishFirst => {
                events += if h.state == TransferState::Delivering {
                    deliver(ctx, &h).await?.1
                } else {
                    finish_receipt(ctx, &h).await?.1
                };
            }
            OnReceive::AnswerAgain => return answer(h.shown(), events),
        }
    }
    Err(interrupted(Interruption::TransferChanged))
}

/// Finishes the receipt of `h` (`receiving`): its steps applied at the destination, then
/// at rest. Returns the header at rest and the events written.
async fn finish_receipt(ctx: &Ctx<'_>, h: &TransferHeader) -> Step<(TransferHeader, usize)> {
    let t = &h.transfer;
    let Some((receipt, next)) = h.receipt.as_ref().zip(h.received(crate::now_ms())) else {
        return Err(StoreError::Invariant {
            what: "finish a transfer receipt",
            detail: format!("transfer {} is receiving with no receipt", t.id),
        }
        .into());
    };
    let mut events = 0;
    for (n, step) in receipt.steps.iter().enumerate() {
        let key = StockKey::new(step.sku().clone(), t.to.clone());
        let op = steps::receipt(t, step, receipt.attempt, n, ctx.meta);
        events += steps::apply(ctx.keys, &key, op).await?;
    }
    if !ctx.move_to(h, &next).await? {
        return Ok((ctx.existing(&t.id).await?, events));
    }
    Ok((next, events))
}
