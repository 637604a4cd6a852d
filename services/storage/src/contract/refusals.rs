//! Refusals are answers: a keyed command refused after it ran answers the same to every
//! retry of its key, from any store instance.

use std::sync::Arc;

use stockflow_domain::{Command, OnHandChange, Refusal, ReservationId, ReservationStatus};

use super::*;
use crate::ports::WriteStore;

/// A keyed command refused after it ran answers the same refusal to every retry of its
/// key, from any store instance, even once the state would let it succeed; the same
/// command under a new key runs afresh.
pub(crate) async fn write_store_refusal_replay_contract<S: WriteStore>(a: Arc<S>, b: Arc<S>) {
    a.put_location(location("f1", "north"))
        .await
        .unwrap()
        .unwrap();
    a.put_location(location("f2", "south"))
        .await
        .unwrap()
        .unwrap();
    a.exec(plain(adjust("few", "f1", OnHandChange::Delta(2), None)))
        .await
        .unwrap();
    let confirm_ghost = || Command::Confirm {
        id: ReservationId::parse("ghost").unwrap(),
    };
    let refused: Vec<(&str, Command, &str)> = vec![
        (
            "k-short",
            reserve("short", &[("few", "f1", 5)], 600),
            "insufficient_stock",
        ),
        (
            "k-short-multi",
            reserve("short-multi", &[("few", "f1", 5), ("other", "f2", 1)], 600),
            "insufficient_stock",
        ),
        (
            "k-conflict",
            adjust("few", "f1", OnHandChange::Delta(1), Some(7)),
            "version_conflict",
        ),
        ("k-ghost", confirm_ghost(), "reservation_not_found"),
        (
            "k-nowhere",
            adjust("few", "f3", OnHandChange::Delta(1), None),
            "location_not_found",
        ),
    ];
    for (k, command, code) in &refused {
        let err = a.exec(keyed(command.clone(), k, k)).await.unwrap_err();
        assert_eq!(err.code(), *code, "{k}: first answer");
    }

    // Now every one of them could succeed if it ran again.
    a.exec(plain(adjust("few", "f1", OnHandChange::Delta(100), None)))
        .await
        .unwrap();
    a.exec(plain(adjust("other", "f2", OnHandChange::Delta(100), None)))
        .await
        .unwrap();
    a.put_location(location("f3", "north"))
        .await
        .unwrap()
        .unwrap();
    a.exec(plain(reserve("ghost", &[("other", "f2", 1)], 600)))
        .await
        .unwrap();
    let before = a.stock_level(&key("few", "f1")).await.unwrap().unwrap();

    // Retries of the same keys, both instances at once: the recorded refusal every time.
    let retries: Vec<_> = refused
        .iter()
        .flat_map(|(k, command, code)| {
            [a.clone(), b.clone(), a.clone(), b.clone()]
                .into_iter()
                .map(move |store| {
                    let (k, command, code) = (k.to_string(), command.clone(), *code);
                    tokio::spawn(async move {
                        let answer = store.exec(keyed(command, &k, &k)).await;
                        (k, code, answer)
                    })
                })
        })
        .collect();
    for retry in retries {
        let (k, code, answer) = retry.await.unwrap();
        match answer {
            Err(err) => assert_eq!(err.code(), code, "{k}: retried"),
            Ok(outcome) => panic!("{k}: a retry of a refused command ran again: {outcome:?}"),
        }
    }
    let after = a.stock_level(&key("few", "f1")).await.unwrap().unwrap();
    assert_eq!(after, before, "retries of refused commands changed nothing");
    assert!(
        a.reservation(&ReservationId::parse("short").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let ghost = a
        .reservation(&ReservationId::parse("ghost").unwrap())
        .await
        .unwrap()
        .expect("ghost exists");
    assert_eq!(ghost.status, ReservationStatus::Active);

    // The key stands for its request: another request under it is refused as reuse.
    let err = a
        .exec(keyed(
            reserve("short", &[("few", "f1", 1)], 600),
            "k-short",
            "another-request",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Refusal::IdempotencyKeyReused),
        "reused key: {err}"
    );

    // Under new keys the same commands run afresh.
    let out = a
        .exec(keyed(
            reserve("short", &[("few", "f1", 5)], 600),
            "k-short-2",
            "k-short-2",
        ))
        .await
        .unwrap();
    assert_eq!(reservation_of(out.result).status, ReservationStatus::Active);
    let out = a
        .exec(keyed(confirm_ghost(), "k-ghost-2", "k-ghost-2"))
        .await
        .unwrap();
    assert_eq!(
        reservation_of(out.result).status,
        ReservationStatus::Confirmed
    );
}
