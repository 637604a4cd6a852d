//! Races: concurrent reservations never oversell, and two store instances running the
//! same commands at once apply each once.

use std::sync::Arc;
use std::time::Duration;

use stockflow_domain::{Command, OnHandChange, Refusal, StockLevel};

use super::*;
use crate::ports::WriteStore;

/// Concurrent reservations never oversell.
pub(crate) async fn write_store_concurrency_contract<S: WriteStore>(store: Arc<S>) {
    store
        .put_location(location("c1", "north"))
        .await
        .unwrap()
        .unwrap();
    store
        .exec(plain(adjust("hot", "c1", OnHandChange::Delta(20), None)))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .exec(plain(reserve(&format!("c-{i}"), &[("hot", "c1", 1)], 600)))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code(), "insufficient_stock"),
        }
    }
    assert_eq!(ok, 20);
    let level = store.stock_level(&key("hot", "c1")).await.unwrap().unwrap();
    assert_eq!((level.reserved, level.version), (20, 21));
}

/// Two store instances (two command-API replicas) running the same commands at once: each
/// command applies once, and both callers get its one answer.
pub(crate) async fn write_store_race_contract<S: WriteStore>(a: Arc<S>, b: Arc<S>) {
    a.put_location(location("d1", "north"))
        .await
        .unwrap()
        .unwrap();
    a.exec(plain(adjust("dup", "d1", OnHandChange::Delta(100), None)))
        .await
        .unwrap();
    // The same keyed adjustment, twenty times on each instance at once, queued behind
    // another change of the key (so a coalescing store sees duplicates in one group).
    let other = {
        let a = a.clone();
        tokio::spawn(async move {
            a.exec(plain(adjust("dup", "d1", OnHandChange::Delta(1), None)))
                .await
        })
    };
    let runs: Vec<_> = (0..40)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                store
                    .exec(keyed(
                        adjust("dup", "d1", OnHandChange::Delta(-3), None),
                        "same-adjust",
                        "fp-adjust",
                    ))
                    .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for run in runs {
        match run.await.unwrap() {
            Ok(out) => answers.push(out),
            // A duplicate may be told the first is still running; never anything else.
            Err(Refusal::RequestInProgress) => {}
            Err(e) => panic!("a duplicate failed: {e}"),
        }
    }
    other.await.unwrap().unwrap();
    assert_eq!(answers.iter().filter(|o| !o.replayed).count(), 1);
    assert!(answers.iter().all(|o| o.result == answers[0].result));
    let level = a.stock_level(&key("dup", "d1")).await.unwrap().unwrap();
    assert_eq!(
        (level.on_hand, level.version),
        (98, 3),
        "applied exactly once"
    );

    // Reservations (one line, and two lines) settled at once from both instances by
    // expiry, release and confirm: one settlement wins, each line moves once. A long-lived
    // reservation on the same keys shows any second move (it would eat that one's hold).
    a.exec(plain(adjust("dup2", "d1", OnHandChange::Delta(100), None)))
        .await
        .unwrap();
    a.exec(plain(reserve(
        "keep",
        &[("dup", "d1", 5), ("dup2", "d1", 5)],
        600,
    )))
    .await
    .unwrap();
    for (victim, lines) in [
        ("one-line", vec![("dup", "d1", 7)]),
        ("two-lines", vec![("dup", "d1", 7), ("dup2", "d1", 7)]),
    ] {
        let before = (
            a.stock_level(&key("dup", "d1")).await.unwrap().unwrap(),
            a.stock_level(&key("dup2", "d1")).await.unwrap().unwrap(),
        );
        let r = reservation_of(
            a.exec(plain(reserve(victim, &lines, 1)))
                .await
                .unwrap()
                .result,
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let settles: Vec<_> = (0..24)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let command = match i % 6 {
                    4 => Command::Release { id: r.id.clone() },
                    5 => Command::Confirm { id: r.id.clone() },
                    _ => Command::Expire { id: r.id.clone() },
                };
                tokio::spawn(async move { store.exec(plain(command)).await })
            })
            .collect();
        let mut events = 0;
        for s in settles {
            match s.await.unwrap() {
                Ok(out) => events += out.events,
                Err(e) => assert!(
                    matches!(e, Refusal::ReservationNotActive { .. }),
                    "{victim}: {e}"
                ),
            }
        }
        assert_eq!(events, lines.len(), "{victim}: each line settles once");
        let after = (
            a.stock_level(&key("dup", "d1")).await.unwrap().unwrap(),
            a.stock_level(&key("dup2", "d1")).await.unwrap().unwrap(),
        );
        assert_eq!(
            (after.0.reserved, after.1.reserved),
            (5, 5),
            "{victim}: only the long-lived reservation still holds stock"
        );
        let moved = |b: &StockLevel, a: &StockLevel| a.version - b.version;
        assert_eq!(
            moved(&before.0, &after.0) + moved(&before.1, &after.1),
            2 * lines.len() as u64,
            "{victim}: a reserve and a settlement per line"
        );
    }
}
