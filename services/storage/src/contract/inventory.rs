//! The inventory model of issue 31 through a store: facts a store records (applied below
//! zero, flagged `stock_oversold`, shown to channels as zero), moves between quantity
//! states, counts guarded by the on-hand they started from, and a location's policy.

use std::sync::Arc;

use stockflow_domain::{
    AdjustReason, BusEvent, Command, EventKind, LocationGrant, Move, OnHandChange, Oversell,
    Refusal, ReservationId, SetPolicy, Settings, State, Target,
};

use super::*;
use crate::ports::{CommandRequest, Outbox, ReadStore, WriteStore};

fn sale(s: &str, l: &str, qty: i64) -> Command {
    let cmd = Adjust::new(
        key(s, l),
        OnHandChange::Delta(-qty),
        AdjustReason::Sale,
        None,
        None,
    )
    .expect("valid sale");
    Command::Adjust(cmd)
}

fn recorded(command: Command) -> Command {
    match command {
        Command::Adjust(a) => Command::Adjust(a.recorded()),
        other => other,
    }
}

/// Projects every stock event the store has written so far.
async fn project_all<S: Outbox + ?Sized, R: ReadStore>(store: &S, read: &R, consumer: &str) {
    let events: Vec<BusEvent> = stock_events(store)
        .await
        .into_iter()
        .map(BusEvent::Stock)
        .collect();
    read.project(batch(consumer, 0, &events, events.len() as u64))
        .await
        .expect("projected");
}

/// A store records sales that already happened: applied even when they take `available`
/// below zero (a fact), flagged `stock_oversold` with the shortfall and the reservations at
/// risk; only a store's token records, and only at its own locations; channels see zero
/// while the location's row shows the true on-hand.
pub(crate) async fn records_facts_contract<S: WriteStore + Outbox, R: ReadStore>(
    store: Arc<S>,
    read: Arc<R>,
) {
    for l in ["f1", "f2", "f3"] {
        store
            .put_location(location(l, "north"))
            .await
            .unwrap()
            .unwrap();
    }
    store
        .exec(plain(adjust("fa", "f1", OnHandChange::SetOnHand(2), None)))
        .await
        .unwrap();
    store
        .exec(plain(adjust("fa", "f2", OnHandChange::SetOnHand(5), None)))
        .await
        .unwrap();
    store
        .exec(keyed(
            reserve("web-1", &[("fa", "f1", 1)], 600),
            "web-1",
            "web-1",
        ))
        .await
        .unwrap();
    let store_1 = LocationGrant::only([loc("f1"), loc("f3")]);
    let as_grant = |command: Command, k: &str, grant: &LocationGrant| CommandRequest {
        grant: grant.clone(),
        ..keyed(command, k, k)
    };
    // Checked, the store's sale beyond what is available is refused as for anyone.
    assert!(matches!(
        store
            .exec(as_grant(sale("fa", "f1", 2), "chk", &store_1))
            .await,
        Err(Refusal::InsufficientStock { .. })
    ));
    // Only a store records, and only at its locations.
    assert_eq!(
        store
            .exec(keyed(recorded(sale("fa", "f1", 1)), "central", "central"))
            .await,
        Err(Refusal::RecordModeForbidden)
    );
    assert_eq!(
        store
            .exec(as_grant(recorded(sale("fa", "f2", 1)), "other", &store_1))
            .await,
        Err(Refusal::LocationForbidden {
            location: loc("f2")
        })
    );
    // Three sales at f1, which has two units and holds one for the web: facts.
    let mut levels = Vec::new();
    for n in 0..3 {
        let k = format!("till-{n}");
        let done = store
            .exec(as_grant(recorded(sale("fa", "f1", 1)), &k, &store_1))
            .await
            .expect("a recorded sale is applied");
        levels.push(level_of(done.result));
    }
    let last = levels.last().expect("three sales");
    assert_eq!((last.on_hand, last.reserved), (-1, 1));
    assert_eq!((last.available(), last.channel_available()), (-2, 0));
    assert_eq!(last.shortfall(), 2);
    // A retry of a recorded sale applies nothing again.
    let again = store
        .exec(as_grant(recorded(sale("fa", "f1", 1)), "till-2", &store_1))
        .await
        .unwrap();
    assert!(again.replayed);
    // The outbox hands events out in no particular order across versions: by version.
    let mut events: Vec<_> = stock_events(&*store)
        .await
        .into_iter()
        .filter(|e| e.sku.as_str() == "fa" && e.location.as_str() == "f1")
        .collect();
    events.sort_by_key(|e| e.version);
    let sales = &events[events.len() - 3..];
    let kinds: Vec<EventKind> = sales.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::StockAdjusted,
            EventKind::StockOversold,
            EventKind::StockOversold
        ],
        "the first sale left none available, the next two oversold"
    );
    let oversold = &sales[2];
    assert_eq!(oversold.shortfall, Some(2));
    assert_eq!(
        oversold.reservations_at_risk,
        [ReservationId::parse("web-1").unwrap()]
    );
    assert_eq!(oversold.reason, Some(AdjustReason::Sale));
    // Channels see zero at f1 and f2's five in the region; f1's row shows the truth.
    project_all(&*store, &*read, "facts").await;
    let row = read.stock_at("fa", "f1").await.unwrap().expect("f1 row");
    assert_eq!((row.on_hand, row.reserved, row.available), (-1, 1, 0));
    let north = read.availability("fa", Some("north")).await.unwrap();
    assert_eq!(
        north[0].available, 5,
        "an oversold location takes nothing from others"
    );
    assert_eq!(north[0].quantities.on_hand, 4);
    let history = read.movements("fa", "f1", 0, 10).await.unwrap();
    let flagged = history
        .iter()
        .find(|m| m.version == oversold.version)
        .expect("the oversold movement");
    assert_eq!(flagged.kind, "stock_oversold");
    assert_eq!(flagged.detail.shortfall, Some(2));
    assert_eq!(flagged.detail.reservations_at_risk, ["web-1".to_string()]);
    // Every new reason is a reason of record.
    for (n, reason) in AdjustReason::ALL.into_iter().enumerate() {
        let cmd = Adjust::new(key("fr", "f3"), OnHandChange::Delta(1), reason, None, None)
            .expect("valid");
        let k = format!("reason-{n}");
        store
            .exec(as_grant(Command::Adjust(cmd.recorded()), &k, &store_1))
            .await
            .expect("recorded");
    }
    let mut fr: Vec<_> = stock_events(&*store)
        .await
        .into_iter()
        .filter(|e| e.sku.as_str() == "fr")
        .collect();
    fr.sort_by_key(|e| e.version);
    let reasons: Vec<AdjustReason> = fr.into_iter().filter_map(|e| e.reason).collect();
    assert_eq!(reasons, AdjustReason::ALL);
}

/// Moves between states, counts guarded by the on-hand they started from, and a
/// location's oversell policy: one version and one event per applied change; refusals
/// change nothing.
pub(crate) async fn states_contract<S: WriteStore + Outbox>(store: Arc<S>) {
    store
        .put_location(location("m1", "north"))
        .await
        .unwrap()
        .unwrap();
    let start = store
        .exec(plain(adjust("ma", "m1", OnHandChange::SetOnHand(10), None)))
        .await
        .unwrap();
    let v0 = level_of(start.result).version;
    let mv = |from, to, qty| {
        Command::Move(
            Move::new(key("ma", "m1"), from, to, qty, AdjustReason::Damage, None).expect("move"),
        )
    };
    let broke = store
        .exec(plain(mv(
            State::Available,
            Target::State(State::Damaged),
            3,
        )))
        .await
        .unwrap();
    let l = level_of(broke.result);
    assert_eq!((l.on_hand, l.extras.damaged, l.available()), (10, 3, 7));
    assert_eq!((l.version, broke.events), (v0 + 1, 1));
    let gone = store
        .exec(plain(mv(State::Damaged, Target::Gone, 1)))
        .await
        .unwrap();
    let l = level_of(gone.result);
    assert_eq!((l.on_hand, l.extras.damaged, l.available()), (9, 2, 7));
    assert!(matches!(
        store
            .exec(plain(mv(
                State::QualityHold,
                Target::State(State::Available),
                1
            )))
            .await,
        Err(Refusal::StateShort { held: 0, .. })
    ));
    // A count started from a value on-hand has moved away from is refused, naming it.
    let count = |n, expected| {
        let a = Adjust::new(
            key("ma", "m1"),
            OnHandChange::SetOnHand(n),
            AdjustReason::CycleCount,
            None,
            None,
        )
        .expect("count");
        Command::Adjust(a.expecting_on_hand(expected).expect("guard"))
    };
    assert_eq!(
        store.exec(plain(count(20, 10))).await,
        Err(Refusal::OnHandConflict {
            sku: sku("ma"),
            location: loc("m1"),
            expected: 10,
            current: 9,
        })
    );
    let counted = store.exec(plain(count(20, 9))).await.unwrap();
    let l = level_of(counted.result);
    assert_eq!((l.on_hand, l.extras.damaged, l.version), (20, 2, v0 + 3));
    // The location's override: track_only never refuses, and is kept with the key.
    let policy = SetPolicy::new(
        sku("ma"),
        Some(loc("m1")),
        Settings::new(Some(Oversell::TrackOnly), Some(2)).expect("settings"),
        None,
        None,
    )
    .expect("policy");
    let set = store.exec(plain(Command::SetPolicy(policy))).await.unwrap();
    let l = level_of(set.result);
    assert_eq!(l.version, v0 + 4);
    assert_eq!(l.extras.policy.oversell, Some(Oversell::TrackOnly));
    let oversold = store
        .exec(plain(adjust("ma", "m1", OnHandChange::Delta(-25), None)))
        .await
        .expect("track_only never refuses");
    let l = level_of(oversold.result);
    assert_eq!((l.on_hand, l.available(), l.version), (-5, -7, v0 + 5));
    let events = stock_events(&*store).await;
    let mut ma: Vec<_> = events.iter().filter(|e| e.sku.as_str() == "ma").collect();
    ma.sort_by_key(|e| e.version);
    let versions: Vec<u64> = ma.iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        (1..=v0 + 5).collect::<Vec<_>>(),
        "one event per change"
    );
    let last = ma.last().expect("events");
    assert_eq!(last.damaged, 2);
    assert_eq!(
        last.signal.map(|s| s.as_str()),
        Some("out_of_stock"),
        "what channels see fell to zero"
    );
}
