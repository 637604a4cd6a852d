//! A SKU's own policy: one version and one event per change, replayed under its key,
//! refused to stores and to a stale `expected_version`, won by exactly one of racing
//! changes, and seen by every later decision on the SKU's keys (written before or not,
//! with a location's override winning).

use std::sync::Arc;

use stockflow_domain::{
    BusEvent, Command, CommandResult, LocationGrant, Oversell, Refusal, SetPolicy, Settings,
    Signal, SkuPolicy,
};

use super::{
    Exec, adjust, keyed, level_of, loc, location, plain, reservation_of, reserve, sku, stock_events,
};
use crate::ports::{Outbox, WriteStore};

fn set(
    location: Option<&str>,
    oversell: Oversell,
    threshold: Option<i64>,
    expected: Option<u64>,
) -> Command {
    let settings = Settings::new(Some(oversell), threshold).expect("settings");
    Command::SetPolicy(
        SetPolicy::new(sku("sp"), location.map(loc), settings, expected, None).expect("policy"),
    )
}

fn policy_of(result: CommandResult) -> SkuPolicy {
    match result {
        CommandResult::Policy(p) => p,
        other => panic!("expected a SKU policy, got {other:?}"),
    }
}

pub(crate) async fn sku_policy_contract<S: WriteStore + Outbox>(store: Arc<S>) {
    for id in ["p1", "p2", "p3"] {
        store
            .put_location(location(id, "north"))
            .await
            .unwrap()
            .unwrap();
    }
    // Written before the policy exists: a store that remembers the key must still see it.
    store
        .exec(plain(adjust(
            "sp",
            "p1",
            stockflow_domain::OnHandChange::SetOnHand(5),
            None,
        )))
        .await
        .unwrap();
    store
        .exec(plain(adjust(
            "sp",
            "p3",
            stockflow_domain::OnHandChange::SetOnHand(10),
            None,
        )))
        .await
        .unwrap();

    let backorder = Oversell::Backorder { limit: 10 };
    let first = keyed(set(None, backorder, Some(3), Some(0)), "pol-1", "f1");
    let set_once = store.exec(first.clone()).await.unwrap();
    let policy = policy_of(set_once.result.clone());
    assert_eq!(
        (policy.version, policy.settings.oversell),
        (1, Some(backorder))
    );
    assert_eq!((set_once.events, set_once.replayed), (1, false));
    let again = store.exec(first).await.unwrap();
    assert_eq!(
        (again.result, again.events, again.replayed),
        (set_once.result, 0, true)
    );
    assert_eq!(
        store
            .exec(keyed(set(None, Oversell::Deny, None, None), "pol-1", "f2"))
            .await,
        Err(Refusal::IdempotencyKeyReused),
        "a key names one request"
    );
    assert_eq!(
        store
            .exec(plain(set(None, Oversell::Deny, None, Some(0))))
            .await,
        Err(Refusal::PolicyVersionConflict {
            sku: sku("sp"),
            expected: 0,
            current: 1,
        })
    );
    let mut store_grant = plain(set(None, Oversell::Deny, None, None));
    store_grant.grant = LocationGrant::only([loc("p1")]);
    assert_eq!(
        store.exec(store_grant).await,
        Err(Refusal::SkuWideForbidden)
    );

    // Keys inherit it: the one written before, and one never written.
    let r1 = reservation_of(
        store
            .exec(plain(reserve("sp-r1", &[("sp", "p1", 8)], 60)))
            .await
            .unwrap()
            .result,
    );
    assert_eq!(r1.lines[0].backordered, 3, "5 on hand, 3 backordered");
    let r2 = reservation_of(
        store
            .exec(plain(reserve("sp-r2", &[("sp", "p2", 2)], 60)))
            .await
            .unwrap()
            .result,
    );
    assert_eq!(r2.lines[0].backordered, 2);
    // Its threshold too: 10 on hand, 7 reserved leaves 3.
    store
        .exec(plain(reserve("sp-r3", &[("sp", "p3", 7)], 60)))
        .await
        .unwrap();
    let p3_last = stock_events(&*store)
        .await
        .into_iter()
        .filter(|e| e.sku.as_str() == "sp" && e.location.as_str() == "p3")
        .max_by_key(|e| e.version)
        .expect("p3 events");
    assert_eq!(p3_last.signal, Some(Signal::LowStock));
    // A location's override wins over it.
    let over = level_of(
        store
            .exec(plain(set(Some("p2"), Oversell::Deny, None, None)))
            .await
            .unwrap()
            .result,
    );
    assert_eq!(over.extras.policy.oversell, Some(Oversell::Deny));
    assert!(matches!(
        store
            .exec(plain(reserve("sp-r4", &[("sp", "p2", 1)], 60)))
            .await,
        Err(Refusal::InsufficientStock { .. })
    ));

    // Racing changes from the same version: exactly one applies.
    let racers = (0..6).map(|i| {
        let store = store.clone();
        let mode = if i % 2 == 0 {
            Oversell::Deny
        } else {
            Oversell::TrackOnly
        };
        tokio::spawn(async move {
            store
                .exec_retrying(plain(set(None, mode, None, Some(1))))
                .await
        })
    });
    let mut won = Vec::new();
    for racer in racers {
        match racer.await.expect("racer") {
            Ok(outcome) => won.push(policy_of(outcome.result)),
            Err(Refusal::PolicyVersionConflict { current: 2, .. }) => {}
            Err(other) => panic!("a racing change was refused with {other:?}"),
        }
    }
    assert_eq!(won.len(), 1, "one change per version: {won:?}");
    assert_eq!(won[0].version, 2);

    // Later decisions see the winner, on the key the store remembers too.
    let refused_or_not = store
        .exec(plain(reserve("sp-r5", &[("sp", "p1", 1)], 60)))
        .await;
    match won[0].settings.oversell {
        Some(Oversell::Deny) => assert!(
            matches!(refused_or_not, Err(Refusal::InsufficientStock { .. })),
            "deny refuses past the shelf: {refused_or_not:?}"
        ),
        _ => assert!(
            refused_or_not.is_ok(),
            "track_only never refuses: {refused_or_not:?}"
        ),
    }

    // One event per change, in version order.
    let mut versions: Vec<u64> = store
        .pending(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(
            |e| match serde_json::from_slice(&e.payload).expect("outbox payload") {
                BusEvent::Policy(p) if p.sku.as_str() == "sp" => Some(p.version),
                _ => None,
            },
        )
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, vec![1, 2]);
}
