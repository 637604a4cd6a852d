//! Expiry at scale, for every adapter of [`WriteStore`]: a burst of due reservations
//! expires in bounded rounds, each exactly once even with two store instances racing,
//! beside reservations that were settled first and reservations that are not due.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use stockflow_domain::{Command, EventKind, OnHandChange, ReservationId, ReservationStatus};

use super::{adjust, key, location, plain, reserve, stock_events};
use crate::now_ms;
use crate::ports::{Outbox, WriteStore};

const SKUS: usize = 20;
const SHORT: usize = 300;
const MULTI_LINE: usize = 20;
const SETTLED: usize = 20;
const LONG: usize = 5;
const ROUND: usize = 40;

fn sku_of(i: usize) -> String {
    format!("e-{}", i % SKUS)
}

/// Every 1-second reservation expires once, in rounds of at most [`ROUND`] run by `a` and
/// `b` at once; the settled ones and the long-lived ones are left alone.
pub(crate) async fn write_store_expiry_contract<S: WriteStore + Outbox>(a: Arc<S>, b: Arc<S>) {
    a.put_location(location("x", "north"))
        .await
        .unwrap()
        .unwrap();
    for i in 0..SKUS {
        a.execute(plain(adjust(
            &sku_of(i),
            "x",
            OnHandChange::Delta(100),
            None,
        )))
        .await
        .unwrap();
    }
    let mut commands = Vec::new();
    for i in 0..SHORT {
        // The ones settled below get time to be settled before their deadline.
        let ttl = if i < SETTLED { 600 } else { 1 };
        commands.push(reserve(&format!("short-{i}"), &[(&sku_of(i), "x", 1)], ttl));
    }
    for i in 0..MULTI_LINE {
        let (first, second) = (sku_of(i), sku_of(i + 1));
        commands.push(reserve(
            &format!("multi-{i}"),
            &[(&first, "x", 1), (&second, "x", 1)],
            1,
        ));
    }
    for i in 0..LONG {
        commands.push(reserve(&format!("long-{i}"), &[(&sku_of(i), "x", 2)], 600));
    }
    let made: Vec<_> = futures::stream::iter(commands)
        .map(|c| {
            let a = a.clone();
            async move { a.execute(plain(c)).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(made.iter().all(Result::is_ok), "every reservation is made");
    // Settled before their deadline: half confirmed, half released.
    for i in 0..SETTLED {
        let id = ReservationId::parse(format!("short-{i}")).unwrap();
        let command = if i % 2 == 0 {
            Command::Confirm { id }
        } else {
            Command::Release { id }
        };
        a.execute(plain(command)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    // Both instances run rounds until neither finds anything due.
    let run = |store: Arc<S>| async move {
        let (mut expired, mut rounds, mut full) = (0, 0, 0);
        loop {
            let round = store.expire_due(now_ms(), ROUND).await.unwrap();
            assert_eq!(round.failed, 0, "{:?}", round.last_error);
            assert!(round.expired <= ROUND);
            expired += round.expired;
            rounds += 1;
            full += usize::from(round.full);
            if !round.full && round.expired + round.already_final == 0 {
                return (expired, rounds, full, round.next_deadline_ms);
            }
            assert!(rounds < 200, "expiry makes progress");
        }
    };
    let ((ea, _, fa, next_a), (eb, _, fb, next_b)) = tokio::join!(run(a.clone()), run(b.clone()));
    let due = SHORT - SETTLED + MULTI_LINE;
    // A multi-line reservation that both instances expire at once is finished by both
    // (its saga lets whoever asks complete it) and counted by each.
    assert!(
        (due..=due + MULTI_LINE).contains(&(ea + eb)),
        "{} expiries counted for {due} due reservations",
        ea + eb
    );
    assert!(fa + fb > 0, "a burst larger than a round fills rounds");
    // Exactly once where it counts: one `reservation_expired` event per line.
    let mut expired_lines: BTreeMap<String, usize> = BTreeMap::new();
    for e in stock_events(&*a).await {
        if e.kind == EventKind::ReservationExpired {
            let id = e.reservation_id.map(|r| r.to_string()).unwrap_or_default();
            *expired_lines.entry(id).or_default() += 1;
        }
    }
    assert_eq!(expired_lines.len(), due, "{expired_lines:?}");
    for (id, lines) in &expired_lines {
        let expected = if id.starts_with("multi-") { 2 } else { 1 };
        assert_eq!(*lines, expected, "{id}");
        assert!(!id.starts_with("long-"));
    }

    // What is left: the long-lived reservations, whose first deadline is the next one.
    let mut first_long = i64::MAX;
    for i in 0..LONG {
        let r = a
            .reservation(&ReservationId::parse(format!("long-{i}")).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, ReservationStatus::Active);
        first_long = first_long.min(r.expires_at_ms);
    }
    // The next deadline is the first long-lived one, or earlier only where a row outlived
    // its reservation: deleting a settled saga's recovery row is best effort (a timed-out
    // delete leaves it), and the round that reaches it finds nothing due and removes it.
    for next in [next_a, next_b] {
        assert!(
            next.is_some_and(|at| at <= first_long && at > now_ms() - 60_000),
            "next deadline {next:?}, first long-lived one {first_long}"
        );
    }
    for (prefix, n, settled) in [("short", SHORT, SETTLED), ("multi", MULTI_LINE, 0)] {
        for i in 0..n {
            let r = b
                .reservation(&ReservationId::parse(format!("{prefix}-{i}")).unwrap())
                .await
                .unwrap()
                .unwrap();
            let expected = match i {
                i if i >= settled => ReservationStatus::Expired,
                i if i % 2 == 0 => ReservationStatus::Confirmed,
                _ => ReservationStatus::Released,
            };
            assert_eq!(r.status, expected, "{prefix}-{i}");
        }
    }
    // Each key holds exactly what its active reservations hold, and sold what was confirmed.
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    let mut sold: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..LONG {
        *held.entry(sku_of(i)).or_default() += 2;
    }
    for i in (0..SETTLED).step_by(2) {
        *sold.entry(sku_of(i)).or_default() += 1;
    }
    for i in 0..SKUS {
        let sku = sku_of(i);
        let level = a.stock_level(&key(&sku, "x")).await.unwrap().unwrap();
        assert_eq!(
            level.reserved,
            held.get(&sku).copied().unwrap_or(0),
            "{sku}"
        );
        assert_eq!(
            level.on_hand,
            100 - sold.get(&sku).copied().unwrap_or(0),
            "{sku}"
        );
    }
}
