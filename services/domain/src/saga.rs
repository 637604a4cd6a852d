//! The saga of a reservation whose lines lie in several partitions (the ScyllaDB write
//! store makes such a reservation line by line): its states, their stored spelling, and
//! every rule a store follows to move it. The store reads the header, asks here, and
//! writes what it is told.
//!
//! ```text
//! pending ──▶ active ──▶ settling:<status> ──▶ confirmed | released | expired
//!    │
//!    └──▶ aborting ──▶ (deleted: every line given back, the id free again)
//! ```
//!
//! An *attempt* is the header's `(owner, created_at)`. Each line step of a pending saga
//! first takes a lease on the header and is sent only within half the
//! [`RecoveryWindow`] after it; expiry rolls back a pending saga only once it has been
//! idle for the whole window, so a step and the rollback exclude each other.

use std::fmt;

use crate::decide::{self, Settlement};
use crate::event::{EventMeta, StockEvent};
use crate::grant::LocationGrant;
use crate::ids::ReservationId;
use crate::refusal::{Answer, Refusal};
use crate::reservation::{Reservation, ReservationLine, ReservationStatus};
use crate::stock::StockLevel;

/// Prefix of the stored spelling of a settlement under way.
const SETTLING: &str = "settling:";

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaState {
    /// Lines are being held; invisible to clients.
    Pending,
    /// Every line is held.
    Active,
    /// The settlement that won is being applied line by line; it can no longer fail.
    Settling(Settlement),
    /// Being rolled back; invisible to clients.
    Aborting,
    /// Settled: the final status.
    Settled(Settlement),
}

impl SagaState {
    /// Reads the stored spelling back.
    pub fn parse(text: &str) -> Option<Self> {
        let settlement =
            |status: &str| ReservationStatus::parse(status).and_then(Settlement::ending_in);
        match text {
            "pending" => Some(Self::Pending),
            "active" => Some(Self::Active),
            "aborting" => Some(Self::Aborting),
            _ => match text.strip_prefix(SETTLING) {
                Some(status) => settlement(status).map(Self::Settling),
                None => settlement(text).map(Self::Settled),
            },
        }
    }

    /// The status clients are shown: a settlement in progress is reported as its
    /// outcome, since it can no longer fail.
    pub fn shown_status(self) -> ReservationStatus {
        match self {
            Self::Pending | Self::Active | Self::Aborting => ReservationStatus::Active,
            Self::Settling(how) | Self::Settled(how) => how.status(),
        }
    }

    /// Whether the reservation is still being made or unmade: it does not exist for
    /// clients (a confirm or release finds nothing).
    pub fn is_being_made(self) -> bool {
        matches!(self, Self::Pending | Self::Aborting)
    }
}

impl fmt::Display for SagaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pending => f.write_str("pending"),
            Self::Active => f.write_str("active"),
            Self::Aborting => f.write_str("aborting"),
            Self::Settling(how) => write!(f, "{SETTLING}{}", how.status()),
            Self::Settled(how) => write!(f, "{}", how.status()),
        }
    }
}

/// How long a saga may stay `pending` without taking a step's lease, or `aborting` or
/// `settling`, before expiry completes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryWindow {
    /// Its length, milliseconds.
    pub ms: i64,
}

impl RecoveryWindow {
    /// The window of production stores: 30 s, so a crashed saga's holds come back within
    /// half a minute, while a step (bounded by the driver's 10 s timeout) still fits in
    /// its first half with 5 s to spare for clock skew.
    pub const DEFAULT: Self = Self { ms: 30_000 };

    /// The last moment a step whose lease was taken at `leased_at_ms` may still be sent:
    /// half the window, so the step lands before expiry may judge the saga idle.
    pub fn step_deadline(self, leased_at_ms: i64) -> i64 {
        leased_at_ms + self.ms / 2
    }

    /// When a saga last touched at `from_ms` may be completed by expiry.
    pub fn after(self, from_ms: i64) -> i64 {
        from_ms + self.ms
    }

    /// Whether a saga last touched at `since_ms` has been idle for the whole window.
    pub fn is_idle(self, since_ms: i64, now_ms: i64) -> bool {
        now_ms - since_ms >= self.ms
    }
}

/// One attempt at a saga reservation: the request that made the header, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The request (its command id: an idempotency key, or a one-off id).
    pub owner: String,
    /// When the attempt created the header, Unix milliseconds.
    pub created_at_ms: i64,
}

/// A saga as its header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saga {
    /// The reservation, with the status clients are shown.
    pub reservation: Reservation,
    /// Where the saga is.
    pub state: SagaState,
    /// The attempt that made it.
    pub attempt: Attempt,
}

impl Saga {
    /// The saga a header row describes.
    pub fn from_header(reservation: Reservation, state: SagaState, owner: String) -> Self {
        let attempt = Attempt {
            owner,
            created_at_ms: reservation.created_at_ms,
        };
        Self {
            reservation: Reservation {
                status: state.shown_status(),
                ..reservation
            },
            state,
            attempt,
        }
    }

    /// Whether `attempt` made this header.
    pub fn made_by(&self, attempt: &Attempt) -> bool {
        self.attempt == *attempt
    }

    /// The reservation exactly as its attempt built it (what it writes to every line).
    pub fn attempt_record(&self) -> Reservation {
        Reservation {
            status: ReservationStatus::Active,
            updated_at_ms: self.reservation.created_at_ms,
            ..self.reservation.clone()
        }
    }

    /// Expiry's answer for a saga still being made: the reservation as active, due at
    /// `at_ms`, when its deadline is looked at again. (No client sees it: a client's
    /// confirm or release of a pending saga finds nothing.)
    pub fn due_again(&self, at_ms: i64) -> Reservation {
        Reservation {
            status: ReservationStatus::Active,
            expires_at_ms: at_ms,
            ..self.reservation.clone()
        }
    }
}

/// What a reserve request does about the header it finds under its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReserve {
    /// Another request's reservation: `reservation_exists`.
    Exists,
    /// The request's own attempt, left pending: resume it.
    Resume,
    /// The request's own attempt, being rolled back: retry later.
    RollingBack,
    /// The request's own attempt, finished before (its answer was lost): answer again.
    AnswerAgain,
}

/// What a reserve request by `owner` does about `saga`.
pub fn on_reserve(saga: &Saga, owner: &str) -> OnReserve {
    if saga.attempt.owner != owner {
        return OnReserve::Exists;
    }
    match saga.state {
        SagaState::Pending => OnReserve::Resume,
        SagaState::Aborting => OnReserve::RollingBack,
        _ => OnReserve::AnswerAgain,
    }
}

/// What a settlement request does about a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSettle {
    /// Still being made (or unmade): `reservation_not_found`.
    NotFound,
    /// Expiry of a pending saga not idle for the whole window: look again at this time.
    LookAgain(i64),
    /// Expiry of a pending saga idle for the window: claim it (`pending → aborting` if its
    /// lease is still the one seen), then roll it back.
    Abandon {
        /// The lease (`updated_at`) judged idle.
        seen_updated_at_ms: i64,
    },
    /// Expiry of a saga being rolled back: finish the rollback.
    FinishRollback,
    /// Active: decide the settlement ([`decide::settlement`]), and win `active →
    /// settling` before settling the lines.
    Decide,
    /// A settlement left half-way: finish it (for a caller who may act at its lines).
    Resume(Settlement),
    /// Settled already, with this status (for a caller who may act at its lines).
    Final(ReservationStatus),
}

/// What a request to settle `saga` as `how` does at `now_ms`.
pub fn on_settle(saga: &Saga, how: Settlement, now_ms: i64, window: RecoveryWindow) -> OnSettle {
    match saga.state {
        SagaState::Pending | SagaState::Aborting if how != Settlement::Expire => OnSettle::NotFound,
        SagaState::Pending => {
            let seen = saga.reservation.updated_at_ms;
            if window.is_idle(seen, now_ms) {
                OnSettle::Abandon {
                    seen_updated_at_ms: seen,
                }
            } else {
                OnSettle::LookAgain(window.after(seen))
            }
        }
        SagaState::Aborting => OnSettle::FinishRollback,
        SagaState::Active => OnSettle::Decide,
        SagaState::Settling(started) => OnSettle::Resume(started),
        SagaState::Settled(how) => OnSettle::Final(how.status()),
    }
}

/// The refusal of a settlement that lost `active → settling` to another: the reservation
/// is no longer active, as the header now says (gone: its TTL passed after a release).
pub fn settled_by_another(id: ReservationId, now: Option<&Saga>) -> Refusal {
    let status = now.map_or(ReservationStatus::Released, |s| s.reservation.status);
    Refusal::ReservationNotActive { id, status }
}

/// What an attempt does once one of its fenced writes was refused (the header left
/// `pending` without it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterLostFence {
    /// A concurrent run of this same attempt (the client's retry) made it active, holding
    /// every line first: answer that.
    Made(Reservation),
    /// Expiry is rolling this attempt back: help it finish, then tell the client to retry.
    HelpRollBack,
    /// Still this attempt's and pending: the refused write met a state now gone; nothing
    /// to give back, the client retries.
    RetryLater,
    /// Rolled back and gone, or another attempt's: give back exactly what this attempt
    /// holds, then tell the client to retry.
    GiveBack,
}

/// What `attempt` does after a lost fence, with the header as it is `now`.
pub fn after_lost_fence(now: Option<&Saga>, attempt: &Attempt) -> AfterLostFence {
    match now {
        Some(saga) if saga.made_by(attempt) => match saga.state {
            SagaState::Aborting => AfterLostFence::HelpRollBack,
            SagaState::Pending => AfterLostFence::RetryLater,
            _ => AfterLostFence::Made(saga.reservation.clone()),
        },
        _ => AfterLostFence::GiveBack,
    }
}

/// The step holding `line` for the attempt whose record is `record`, given the line of
/// this id `held` in its partition now: `None` when this attempt holds it already (a
/// resumed saga holds once), a refusal when another attempt does (never adopted).
pub fn hold_line(
    record: &Reservation,
    line: &ReservationLine,
    held: Option<&Reservation>,
    level: &StockLevel,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Answer<Option<(StockLevel, StockEvent)>> {
    match held {
        Some(held) if *held == record.line_record(line) => Ok(None),
        Some(_) => Err(Refusal::ReservationExists(record.id.clone())),
        None => decide::reserve_line(
            level,
            decide::Hold::of_line(&record.id, line),
            grant,
            record.reference.clone(),
            meta,
        )
        .map(Some),
    }
}

/// The step giving back what the attempt whose record is `record` holds at `line`'s
/// partition: only a line that is exactly that attempt's (never another attempt's).
pub fn give_back_line(
    record: &Reservation,
    line: &ReservationLine,
    held: Option<&Reservation>,
    level: &StockLevel,
    meta: &EventMeta,
) -> Option<(StockLevel, StockEvent)> {
    let held = held.filter(|held| **held == record.line_record(line))?;
    let first = held.lines.first();
    let hold = decide::Hold {
        id: &record.id,
        qty: first.map_or(0, |l| l.qty),
        channel: first.and_then(|l| l.channel.as_ref()),
    };
    Some(decide::compensate_line(
        level,
        hold,
        held.reference.clone(),
        meta,
    ))
}

/// The step settling one held line `how` (the header already says so): the new level,
/// its event and the line's record afterwards; `None` when the line is settled already
/// (an earlier run of the step) or was never held (a line of an aborted attempt).
pub fn settle_held_line(
    how: Settlement,
    reservation: &Reservation,
    held: Option<&Reservation>,
    level: &StockLevel,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Answer<Option<(StockLevel, StockEvent, Reservation)>> {
    let Some(held) = held.filter(|held| held.is_active()) else {
        return Ok(None);
    };
    let Some(line) = held.lines.first() else {
        return Ok(None);
    };
    let (level, event) = decide::settle_line(how, reservation, line, level, grant, meta)?;
    let record = Reservation {
        status: how.status(),
        updated_at_ms: meta.occurred_at_ms,
        ..held.clone()
    };
    Ok(Some((level, event, record)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saga(state: SagaState, updated_at_ms: i64) -> Saga {
        let reservation = Reservation {
            id: ReservationId::parse("r").expect("id"),
            status: ReservationStatus::Active,
            lines: Vec::new(),
            reference: None,
            created_at_ms: 0,
            expires_at_ms: 600_000,
            updated_at_ms,
        };
        Saga::from_header(reservation, state, "k:1".into())
    }

    #[test]
    fn states_keep_their_stored_spelling() {
        let all = [
            SagaState::Pending,
            SagaState::Active,
            SagaState::Aborting,
            SagaState::Settling(Settlement::Confirm),
            SagaState::Settled(Settlement::Expire),
        ];
        for state in all {
            assert_eq!(SagaState::parse(&state.to_string()), Some(state));
        }
        assert_eq!(
            SagaState::Settling(Settlement::Release).to_string(),
            "settling:released"
        );
        assert_eq!(SagaState::parse("settling:active"), None);
        assert_eq!(SagaState::parse("bogus"), None);
    }

    #[test]
    fn expiry_rolls_back_a_pending_saga_only_once_idle_for_the_window() {
        let window = RecoveryWindow { ms: 1_000 };
        let pending = saga(SagaState::Pending, 5_000);
        assert_eq!(
            on_settle(&pending, Settlement::Expire, 5_999, window),
            OnSettle::LookAgain(6_000)
        );
        assert_eq!(
            on_settle(&pending, Settlement::Expire, 6_000, window),
            OnSettle::Abandon {
                seen_updated_at_ms: 5_000
            }
        );
        assert_eq!(
            on_settle(&pending, Settlement::Confirm, 9_000, window),
            OnSettle::NotFound
        );
        assert_eq!(window.step_deadline(5_000), 5_500);
    }

    #[test]
    fn a_lost_fence_gives_back_only_what_its_own_attempt_holds() {
        let made = saga(SagaState::Active, 0);
        let other = Attempt {
            owner: "k:2".into(),
            created_at_ms: 0,
        };
        assert!(matches!(
            after_lost_fence(Some(&made), &made.attempt),
            AfterLostFence::Made(_)
        ));
        assert_eq!(
            after_lost_fence(Some(&made), &other),
            AfterLostFence::GiveBack
        );
        assert_eq!(after_lost_fence(None, &other), AfterLostFence::GiveBack);
        assert_eq!(on_reserve(&made, "k:2"), OnReserve::Exists);
        assert_eq!(on_reserve(&made, "k:1"), OnReserve::AnswerAgain);
    }
}
