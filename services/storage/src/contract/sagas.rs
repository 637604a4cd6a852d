//! Reservations over several keys: racing for scarce stock and retried, every hold is
//! owned by exactly one active reservation.

use std::collections::BTreeMap;
use std::sync::Arc;

use stockflow_domain::{
    Command, OnHandChange, Refusal, ReservationId, ReservationStatus, StockKey,
};

use super::*;
use crate::ports::WriteStore;

/// Multi-line reservations racing for a scarce key, then retried with the same ids (the
/// client retries a refused id after a restock): every line held is owned by exactly one
/// active reservation, so `reserved` always equals what the active reservations hold.
pub(crate) async fn write_store_saga_contract<S: WriteStore>(store: Arc<S>) {
    store
        .put_location(location("m1", "north"))
        .await
        .unwrap()
        .unwrap();
    store
        .put_location(location("m2", "south"))
        .await
        .unwrap()
        .unwrap();
    store
        .exec(plain(adjust(
            "plenty",
            "m1",
            OnHandChange::Delta(100),
            None,
        )))
        .await
        .unwrap();
    store
        .exec(plain(adjust("scarce", "m2", OnHandChange::Delta(2), None)))
        .await
        .unwrap();
    let ids: Vec<String> = (0..12).map(|i| format!("saga-{i}")).collect();
    let attempt = |round: usize| {
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let (store, id) = (store.clone(), id.clone());
                tokio::spawn(async move {
                    let command = reserve(&id, &[("plenty", "m1", 1), ("scarce", "m2", 1)], 600);
                    let k = format!("{id}-try-{round}");
                    (id, store.exec(keyed(command, &k, &k)).await)
                })
            })
            .collect();
        tasks
    };
    let mut active = std::collections::BTreeSet::new();
    for t in attempt(0) {
        let (id, result) = t.await.unwrap();
        match result {
            Ok(_) => {
                active.insert(id);
            }
            Err(Refusal::InsufficientStock { .. }) => {}
            Err(e) => panic!("{id}: {e}"),
        }
    }
    assert_eq!(active.len(), 2, "two units of the scarce key");
    let held = |s: &str, l: &str| {
        let store = store.clone();
        let k = key(s, l);
        async move { store.stock_level(&k).await.unwrap().unwrap().reserved }
    };
    assert_eq!(
        (held("plenty", "m1").await, held("scarce", "m2").await),
        (2, 2)
    );

    // Restock and retry every refused id with a new key: each now holds both lines.
    store
        .exec(plain(adjust("scarce", "m2", OnHandChange::Delta(20), None)))
        .await
        .unwrap();
    for t in attempt(1) {
        let (id, result) = t.await.unwrap();
        match result {
            Ok(_) => assert!(active.insert(id.clone()), "{id} reserved twice"),
            Err(Refusal::ReservationExists(_)) => {
                assert!(active.contains(&id), "{id} refused as existing");
            }
            Err(e) => panic!("{id}: {e}"),
        }
    }
    assert_eq!(active.len(), 12);
    assert_eq!(
        (held("plenty", "m1").await, held("scarce", "m2").await),
        (12, 12)
    );
    for id in &ids {
        let r = store
            .reservation(&ReservationId::parse(id.as_str()).unwrap())
            .await
            .unwrap()
            .expect("reservation exists");
        assert_eq!((r.status, r.lines.len()), (ReservationStatus::Active, 2));
    }
    // Confirming every one consumes exactly what each held.
    for id in &ids {
        store
            .exec(plain(Command::Confirm {
                id: ReservationId::parse(id.as_str()).unwrap(),
            }))
            .await
            .unwrap();
    }
    let plenty = store
        .stock_level(&key("plenty", "m1"))
        .await
        .unwrap()
        .unwrap();
    let scarce = store
        .stock_level(&key("scarce", "m2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((plenty.on_hand, plenty.reserved), (88, 0));
    assert_eq!((scarce.on_hand, scarce.reserved), (10, 0));
}

/// Checks that every key's `reserved` equals what the active reservations among `ids` hold
/// there: no hold outlives its reservation, none is missing. `ids` must name every
/// reservation the test made on the store.
pub(crate) async fn assert_holds_match<S: WriteStore + ?Sized>(store: &S, ids: &[&str]) {
    let mut held: BTreeMap<StockKey, i64> = BTreeMap::new();
    for id in ids {
        let id = ReservationId::parse(*id).expect("valid id");
        if let Some(r) = store.reservation(&id).await.expect("read reservation")
            && r.status == ReservationStatus::Active
        {
            for line in &r.lines {
                *held.entry(line.key()).or_default() += line.qty;
            }
        }
    }
    for level in store.all_stock_levels().await.expect("levels") {
        assert_eq!(
            level.reserved,
            held.get(&level.key()).copied().unwrap_or(0),
            "reserved at {}@{} equals what active reservations hold there",
            level.sku,
            level.location
        );
    }
}
