//! The contract every adapter of a port must honour. Each adapter's tests call these
//! functions on a fresh, empty store; the embedded adapters run them below, and the
//! distributed adapters run the same functions against their real servers. One file per
//! part of a port's behaviour; the helpers below build commands and read answers.

use stockflow_domain::{
    Adjust, AdjustReason, BusEvent, Command, CommandResult, IdempotencyKey, Location,
    LocationGrant, LocationId, LocationKind, OnHandChange, Refusal, Region, Reservation,
    ReservationId, Reserve, ReserveLine, ScopedKey, Sku, StockEvent, StockKey, StockLevel,
};

mod allocations;
mod changes;
mod expire_due;
mod grants;
pub(crate) mod imports;
mod inventory;
mod policies;
mod races;
mod read;
mod rebuild;
mod refusals;
mod sagas;
mod transfers;
pub(crate) mod webhooks;
mod write;

pub(crate) use allocations::allocation_race_contract;
pub(crate) use changes::change_feed_contract;
pub(crate) use expire_due::write_store_expiry_contract;
pub(crate) use grants::write_store_location_grant_contract;
pub(crate) use inventory::{records_facts_contract, states_contract};
pub(crate) use policies::sku_policy_contract;
pub(crate) use races::{write_store_concurrency_contract, write_store_race_contract};
pub(crate) use read::{read_store_contract, stock_event};
pub(crate) use rebuild::rebuild_contract;
pub(crate) use refusals::write_store_refusal_replay_contract;
pub(crate) use sagas::{assert_holds_match, write_store_saga_contract};
pub(crate) use transfers::{
    cancel as cancel_transfer, create as create_transfer, receive as receive_transfer,
    ship as ship_transfer,
};
pub(crate) use transfers::{transfer_contract, transfer_race_contract};
pub(crate) use write::write_store_contract;

use async_trait::async_trait;

use crate::ports::{Batch, CommandRequest, Executed, IdempotencyToken, Outbox, WriteStore};

/// The records of `partition` ending just before `next_offset`, projected by replica `r1`.
pub(crate) fn batch<'a>(
    consumer: &'a str,
    partition: u32,
    events: &'a [BusEvent],
    next_offset: u64,
) -> Batch<'a> {
    Batch {
        consumer,
        replica: "r1",
        partition,
        first_offset: next_offset - events.len() as u64,
        events,
    }
}

fn sku(s: &str) -> Sku {
    Sku::parse(s).expect("valid sku")
}

fn loc(s: &str) -> LocationId {
    LocationId::parse(s).expect("valid location")
}

pub(crate) fn key(s: &str, l: &str) -> StockKey {
    StockKey::new(sku(s), loc(l))
}

pub(crate) fn location(id: &str, region: &str) -> Location {
    Location {
        id: loc(id),
        region: Region::parse(region).expect("valid region"),
        kind: LocationKind::Store,
        name: format!("Store {id}"),
    }
}

pub(crate) fn adjust(s: &str, l: &str, change: OnHandChange, expected: Option<u64>) -> Command {
    Command::Adjust(
        Adjust::new(key(s, l), change, AdjustReason::Receipt, None, expected)
            .expect("valid adjust"),
    )
}

pub(crate) fn reserve(id: &str, lines: &[(&str, &str, i64)], ttl: u64) -> Command {
    let lines = lines
        .iter()
        .map(|(s, l, qty)| ReserveLine {
            sku: sku(s),
            location: loc(l),
            qty: *qty,
        })
        .collect();
    Command::Reserve(
        Reserve::new(
            ReservationId::parse(id).expect("valid id"),
            lines,
            ttl,
            None,
        )
        .expect("valid reserve"),
    )
}

pub(crate) fn plain(command: Command) -> CommandRequest {
    CommandRequest {
        command,
        idempotency: None,
        trace_context: None,
        actor: None,
        grant: LocationGrant::Any,
    }
}

pub(crate) fn keyed(command: Command, k: &str, fingerprint: &str) -> CommandRequest {
    CommandRequest {
        command,
        idempotency: Some(IdempotencyToken {
            key: ScopedKey::new(None, IdempotencyKey::parse(k).expect("valid key")),
            fingerprint: fingerprint.into(),
        }),
        trace_context: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        actor: Some(stockflow_domain::Actor {
            subject: "contract".into(),
            client_id: Some("pos-7".into()),
            store: None,
        }),
        grant: LocationGrant::Any,
    }
}

/// What a command answered, as the contract checks it: a success (its result, whether it
/// was replayed, the events it wrote) or a refusal; a store failure fails the test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub result: CommandResult,
    pub replayed: bool,
    pub events: usize,
}

/// Runs commands as the contract checks them.
#[async_trait]
pub(crate) trait Exec {
    /// Executes `request`: its success, or its refusal; panics on a store failure.
    async fn exec(&self, request: CommandRequest) -> Result<Outcome, Refusal>;
    /// [`Exec::exec`], trying again after a failure the store calls retryable, as a client
    /// does (a store that works key by key may answer one while another request is half-way).
    async fn exec_retrying(&self, request: CommandRequest) -> Result<Outcome, Refusal>;
}

#[async_trait]
impl<S: WriteStore + ?Sized> Exec for S {
    async fn exec(&self, request: CommandRequest) -> Result<Outcome, Refusal> {
        let Executed {
            answer,
            replayed,
            events,
        } = self.execute(request).await.expect("the store answers");
        answer.map(|result| Outcome {
            result,
            replayed,
            events,
        })
    }

    async fn exec_retrying(&self, request: CommandRequest) -> Result<Outcome, Refusal> {
        for _ in 0..100 {
            match self.execute(request.clone()).await {
                Ok(executed) => {
                    let (replayed, events) = (executed.replayed, executed.events);
                    return executed.answer.map(|result| Outcome {
                        result,
                        replayed,
                        events,
                    });
                }
                Err(e) if e.retryable() => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the store failed: {e}"),
            }
        }
        panic!("the store kept answering a retryable failure");
    }
}

fn reservation_of(result: CommandResult) -> Reservation {
    match result {
        CommandResult::Reservation(r) => r,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

fn level_of(result: CommandResult) -> StockLevel {
    match result {
        CommandResult::Stock(l) => l,
        other => panic!("expected a stock level, got {other:?}"),
    }
}

pub(crate) async fn stock_events<S: Outbox + ?Sized>(store: &S) -> Vec<StockEvent> {
    store
        .pending(10_000)
        .await
        .expect("pending")
        .into_iter()
        .filter_map(
            |e| match serde_json::from_slice(&e.payload).expect("outbox payload decodes") {
                BusEvent::Stock(e) => Some(e),
                BusEvent::Catalog(_) | BusEvent::Policy(_) => None,
            },
        )
        .collect()
}
