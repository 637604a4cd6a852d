//! Channel allocations through a store: a ring-fence and a cap set as key changes, and
//! reservations for several channels racing over one key from two store instances (one-line
//! reservations and two-line ones, which a distributed store makes key by key). No fence or
//! cap is overdrawn, the fenced channel always gets its fenced units, and the key's count of
//! each channel's holds equals that channel's active lines, before and after settlement.

use std::collections::BTreeMap;
use std::sync::Arc;

use stockflow_domain::{
    Allocation, Cap, ChannelId, Command, OnHandChange, Refusal, ReservationId, SetAllocation,
};

use super::*;
use crate::ports::WriteStore;

fn channel(name: &str) -> ChannelId {
    ChannelId::parse(name).expect("valid channel")
}

fn allocate(s: &str, l: &str, c: &str, fence: i64, cap: Option<Cap>) -> Command {
    let allocation = Allocation::new(fence, cap).expect("valid allocation");
    Command::SetAllocation(
        SetAllocation::new(key(s, l), channel(c), Some(allocation), None, None)
            .expect("valid command"),
    )
}

fn for_channel(command: Command, c: Option<&str>) -> Command {
    match command {
        Command::Reserve(r) => Command::Reserve(r.for_channel(c.map(channel))),
        other => other,
    }
}

/// The level of `(s, l)` as the store holds it now.
async fn level<S: WriteStore + ?Sized>(store: &S, s: &str, l: &str) -> StockLevel {
    store
        .stock_level(&key(s, l))
        .await
        .expect("loaded")
        .expect("written")
}

/// Who raced: (channel, lines per reservation, reservations).
const RACERS: [(Option<&str>, usize, usize); 4] = [
    (None, 1, 20),
    (Some("web"), 2, 12),
    (Some("market"), 1, 16),
    (Some("store"), 1, 14),
];

pub(crate) async fn allocation_race_contract<S: WriteStore + 'static>(a: Arc<S>, b: Arc<S>) {
    for l in ["al1", "al2"] {
        a.put_location(location(l, "north")).await.unwrap().unwrap();
    }
    a.exec(plain(adjust(
        "fenced",
        "al1",
        OnHandChange::Delta(30),
        None,
    )))
    .await
    .unwrap();
    a.exec(plain(adjust(
        "fenced",
        "al2",
        OnHandChange::Delta(100),
        None,
    )))
    .await
    .unwrap();
    a.exec(plain(allocate("fenced", "al1", "store", 10, None)))
        .await
        .unwrap();
    let capped = a
        .exec(plain(allocate(
            "fenced",
            "al1",
            "market",
            0,
            Some(Cap::Units(6)),
        )))
        .await
        .unwrap();
    let after = level_of(capped.result);
    assert_eq!(after.version, 3, "each allocation is one version");
    assert_eq!(after.available_to(None), 20);
    assert_eq!(after.available_to(Some(&channel("store"))), 30);
    assert_eq!(after.available_to(Some(&channel("market"))), 6);

    let mut tasks = Vec::new();
    for (c, lines, count) in RACERS {
        for i in 0..count {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = format!("al-{}-{i}", c.unwrap_or("none"));
            let mut at = vec![("fenced", "al1", 1)];
            if lines == 2 {
                at.push(("fenced", "al2", 1));
            }
            let command = for_channel(reserve(&id, &at, 600), c);
            tasks.push(tokio::spawn(async move {
                (c, id, store.exec(plain(command)).await)
            }));
        }
    }
    let mut won: BTreeMap<Option<&str>, Vec<String>> = BTreeMap::new();
    for task in tasks {
        let (c, id, outcome) = task.await.expect("joined");
        match outcome {
            Ok(_) => won.entry(c).or_default().push(id),
            Err(Refusal::InsufficientStock { .. }) => {}
            Err(other) => panic!("{id}: unexpected refusal {other:?}"),
        }
    }
    let count = |c: Option<&str>| won.get(&c).map_or(0, Vec::len) as i64;
    let l = level(&*a, "fenced", "al1").await;
    let others = count(None) + count(Some("web")) + count(Some("market"));
    assert!(others <= 20, "others took fenced units: {won:?}");
    assert!(count(Some("market")) <= 6, "the cap was passed: {won:?}");
    assert!(
        count(Some("store")) >= 10,
        "the fence was not kept: {won:?}"
    );
    assert_eq!(l.reserved, others + count(Some("store")));
    // Demand beyond what the key holds for every channel: the key ends full.
    assert_eq!(l.reserved, 30, "{won:?}");
    let expected: BTreeMap<ChannelId, i64> = ["web", "market", "store"]
        .into_iter()
        .filter(|c| count(Some(c)) > 0)
        .map(|c| (channel(c), count(Some(c))))
        .collect();
    assert_eq!(l.extras.channel_held, expected);
    let second = level(&*a, "fenced", "al2").await;
    assert_eq!(second.held_for(&channel("web")), count(Some("web")));

    // Settled from the other instance: holds drop with the lines they counted.
    let store_ids = won.get(&Some("store")).cloned().unwrap_or_default();
    for id in &store_ids {
        let id = ReservationId::parse(id.as_str()).expect("id");
        b.exec(plain(Command::Release { id })).await.unwrap();
    }
    let market_ids = won.get(&Some("market")).cloned().unwrap_or_default();
    for id in &market_ids {
        let id = ReservationId::parse(id.as_str()).expect("id");
        a.exec(plain(Command::Confirm { id })).await.unwrap();
    }
    let l = level(&*a, "fenced", "al1").await;
    assert_eq!(l.held_for(&channel("store")), 0);
    assert_eq!(l.held_for(&channel("market")), 0);
    assert_eq!(l.held_for(&channel("web")), count(Some("web")));
    assert_eq!(l.on_hand, 30 - count(Some("market")));
    assert!(l.invariant_holds());
    // Released, the store's fence is back: no other channel may take it.
    assert_eq!(l.fenced_from(None), 10);
    assert!(l.available_to(None) <= l.available() - 10);
}
