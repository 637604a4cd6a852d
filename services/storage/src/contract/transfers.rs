//! Transfers through a write store: a shipment is all or nothing over the source and
//! destination keys, receipts come in parts and a close records what never arrived, every
//! applied change is one version and one event per key, a refusal changes nothing, a key
//! applies once, and racing ships, cancels, receipts and sales on two store instances
//! conserve every unit.

use std::sync::Arc;

use stockflow_domain::{
    AdjustReason, Command, CommandResult, CreateTransfer, Date, EventKind, ReceiveLine,
    ReceiveTransfer, Transfer, TransferId, TransferLineRequest, TransferStatus,
};

use super::*;
use crate::ports::{Outbox, WriteStore};

fn tid(id: &str) -> TransferId {
    TransferId::parse(id).expect("valid transfer id")
}

pub(crate) fn create(id: &str, from: &str, to: &str, lines: &[(&str, i64)]) -> Command {
    let lines = lines
        .iter()
        .map(|(s, qty)| TransferLineRequest {
            sku: sku(s),
            qty: *qty,
        })
        .collect();
    let day = Date::parse("expected_arrival", "2026-12-12").expect("valid day");
    Command::CreateTransfer(
        CreateTransfer::new(tid(id), loc(from), loc(to), lines, day, None).expect("valid transfer"),
    )
}

pub(crate) fn ship(id: &str) -> Command {
    Command::ShipTransfer { id: tid(id) }
}

pub(crate) fn cancel(id: &str) -> Command {
    Command::CancelTransfer { id: tid(id) }
}

pub(crate) fn receive(id: &str, lines: &[(&str, i64, i64)], close: bool) -> Command {
    let lines = lines
        .iter()
        .map(|(s, qty, damaged)| ReceiveLine {
            sku: sku(s),
            qty: *qty,
            damaged: *damaged,
        })
        .collect();
    Command::ReceiveTransfer(ReceiveTransfer::new(tid(id), lines, close).expect("valid receipt"))
}

fn sale(s: &str, l: &str) -> Command {
    Command::Adjust(
        Adjust::new(
            key(s, l),
            OnHandChange::Delta(-1),
            AdjustReason::Sale,
            None,
            None,
        )
        .expect("valid sale"),
    )
}

fn transfer_of(result: CommandResult) -> Transfer {
    match result {
        CommandResult::Transfer(t) => t,
        other => panic!("expected a transfer, got {other:?}"),
    }
}

async fn level<S: WriteStore + ?Sized>(store: &S, s: &str, l: &str) -> StockLevel {
    store
        .stock_level(&key(s, l))
        .await
        .expect("read")
        .unwrap_or_else(|| panic!("no level for {s}@{l}"))
}

async fn setup<S: WriteStore + ?Sized>(store: &S, locations: &[&str], stock: &[(&str, &str, i64)]) {
    for l in locations {
        store
            .put_location(location(l, "north"))
            .await
            .expect("store")
            .expect("location");
    }
    for (s, l, qty) in stock {
        store
            .exec(plain(adjust(s, l, OnHandChange::SetOnHand(*qty), None)))
            .await
            .expect("stocked");
    }
}

/// Create → ship → partial receipt → close with a discrepancy, with the refusals on the
/// way: versions and events per key, and the transfer as the store reads it back.
pub(crate) async fn transfer_contract<S: WriteStore + Outbox>(store: Arc<S>) {
    setup(&*store, &["ta", "tb"], &[("t1", "ta", 10), ("t2", "ta", 4)]).await;
    let before = stock_events(&*store).await.len();
    let created = store
        .exec(keyed(
            create("tr-1", "ta", "tb", &[("t1", 6), ("t2", 4)]),
            "c1",
            "c1",
        ))
        .await
        .expect("created");
    assert_eq!(created.events, 0, "creating moves nothing");
    assert_eq!(transfer_of(created.result).status, TransferStatus::Created);
    let again = store
        .exec(keyed(create("tr-1", "ta", "tb", &[("t1", 1)]), "c2", "c2"))
        .await;
    assert_eq!(again.map(|_| ()), Err(Refusal::TransferExists(tid("tr-1"))));

    // Short at the source: nothing moves on either key.
    store
        .exec(plain(create("tr-big", "ta", "tb", &[("t1", 6), ("t2", 5)])))
        .await
        .expect("created");
    let short = store.exec(plain(ship("tr-big"))).await;
    assert!(
        matches!(short, Err(Refusal::InsufficientStock { ref lines }) if lines.len() == 1),
        "{short:?}"
    );
    assert_eq!(level(&*store, "t1", "ta").await.on_hand, 10);
    assert!(
        store
            .stock_level(&key("t1", "tb"))
            .await
            .expect("read")
            .is_none_or(|l| l.version == 0)
    );

    // Ship, twice under one key: applied once, four events (two keys per line).
    let shipped = store
        .exec(keyed(ship("tr-1"), "s1", "s1"))
        .await
        .expect("shipped");
    assert_eq!((shipped.events, shipped.replayed), (4, false));
    let replay = store
        .exec(keyed(ship("tr-1"), "s1", "s1"))
        .await
        .expect("replayed");
    assert_eq!((replay.events, replay.replayed), (0, true));
    assert_eq!(replay.result, shipped.result);
    let src = level(&*store, "t1", "ta").await;
    assert_eq!((src.on_hand, src.version), (4, 2));
    let dst = level(&*store, "t1", "tb").await;
    assert_eq!((dst.on_hand, dst.in_transit(), dst.version), (0, 6, 1));
    for refused in [ship("tr-1"), cancel("tr-1")] {
        let answer = store.exec(plain(refused)).await;
        assert!(
            matches!(
                answer,
                Err(Refusal::TransferStatusConflict {
                    status: TransferStatus::InTransit,
                    ..
                })
            ),
            "{answer:?}"
        );
    }

    // A partial receipt, too much of a line, then the close: 2 units of t1 never came.
    store
        .exec(keyed(receive("tr-1", &[("t1", 3, 1)], false), "r1", "r1"))
        .await
        .expect("received");
    let over = store
        .exec(plain(receive("tr-1", &[("t1", 3, 0)], false)))
        .await;
    assert!(
        matches!(
            over,
            Err(Refusal::TransferQuantityExceeded { outstanding: 2, .. })
        ),
        "{over:?}"
    );
    let closed = store
        .exec(keyed(receive("tr-1", &[("t2", 4, 0)], true), "r2", "r2"))
        .await
        .expect("closed");
    let closed = transfer_of(closed.result);
    assert_eq!(
        (closed.status, closed.receipts),
        (TransferStatus::Received, 2)
    );
    assert_eq!((closed.lines[0].missing, closed.outstanding()), (2, 0));
    let dst = level(&*store, "t1", "tb").await;
    assert_eq!(
        (
            dst.on_hand,
            dst.quantities().damaged,
            dst.in_transit(),
            dst.version
        ),
        (4, 1, 0, 3)
    );
    assert_eq!(level(&*store, "t2", "tb").await.on_hand, 4);
    let read = store
        .transfer(&tid("tr-1"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(read, closed);

    // One event per applied change, one version each per key (the outbox keeps each key's
    // order, not an order across keys).
    let events = stock_events(&*store).await;
    assert_eq!(
        events.len(),
        before + 7,
        "2 ship-outs, 2 in transit, 3 receipts"
    );
    let mut kinds: Vec<(String, EventKind, u64)> = events
        .iter()
        .filter(|e| e.sku.as_str() == "t1" && e.kind != EventKind::StockAdjusted)
        .map(|e| (e.location.to_string(), e.kind, e.version))
        .collect();
    kinds.sort_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
    assert_eq!(
        kinds,
        [
            ("ta".to_string(), EventKind::TransferShipped, 2),
            ("tb".to_string(), EventKind::TransferInTransit, 1),
            ("tb".to_string(), EventKind::TransferReceived, 2),
            ("tb".to_string(), EventKind::TransferDiscrepancy, 3),
        ]
    );

    // Cancelled before shipping: nothing moved, and it never ships.
    store
        .exec(plain(create("tr-c", "ta", "tb", &[("t1", 1)])))
        .await
        .expect("created");
    let cancelled = store.exec(plain(cancel("tr-c"))).await.expect("cancelled");
    assert_eq!(
        transfer_of(cancelled.result).status,
        TransferStatus::Cancelled
    );
    let late = store.exec(plain(ship("tr-c"))).await;
    assert!(
        matches!(late, Err(Refusal::TransferStatusConflict { .. })),
        "{late:?}"
    );
    assert_eq!(level(&*store, "t1", "ta").await.on_hand, 4);
    let unknown = store.exec(plain(ship("nope"))).await;
    assert_eq!(
        unknown.map(|_| ()),
        Err(Refusal::TransferNotFound(tid("nope")))
    );
}

/// Two store instances racing ships and cancels of the same transfers, receipts,
/// reservations on both keys, and sales draining the source: each transfer ships at most once (and then is never
/// cancelled), nothing goes negative, and on-hand plus in-transit over both keys is what
/// was there less what was sold.
pub(crate) async fn transfer_race_contract<S: WriteStore>(a: Arc<S>, b: Arc<S>) {
    const TRANSFERS: usize = 8;
    const QTY: i64 = 4;
    const STOCK: i64 = 24;
    setup(&*a, &["ra", "rb"], &[("rx", "ra", STOCK), ("rx", "rb", 0)]).await;
    for i in 0..TRANSFERS {
        a.exec(plain(create(
            &format!("tr-{i}"),
            "ra",
            "rb",
            &[("rx", QTY)],
        )))
        .await
        .expect("created");
    }
    // (index, what, command), one list per kind, spawned interleaved so every kind meets
    // every other whichever store runs them faster.
    let mut transfers = Vec::new();
    for i in 0..TRANSFERS {
        for n in 0..6 {
            let id = format!("tr-{i}");
            let command = match n {
                0..=2 => ship(&id),
                3 if i % 2 == 0 => cancel(&id),
                _ => receive(&id, &[("rx", 2, 0)], false),
            };
            transfers.push((i, command.name(), command));
        }
    }
    let sales: Vec<_> = (0..10)
        .map(|_| (usize::MAX, "sale", sale("rx", "ra")))
        .collect();
    // Reservations on both keys: one line at the source, or a line at each end (a
    // multi-partition reservation where the store has them).
    let reservations: Vec<_> = (0..12)
        .map(|n| {
            let lines: &[(&str, &str, i64)] = if n % 3 == 0 {
                &[("rx", "ra", 1), ("rx", "rb", 1)]
            } else {
                &[("rx", "ra", 1)]
            };
            (n, "reserve", reserve(&format!("rr-{n}"), lines, 3_600))
        })
        .collect();
    let mut kinds = [
        transfers.into_iter(),
        sales.into_iter(),
        reservations.into_iter(),
    ];
    let mut tasks = Vec::new();
    for n in 0.. {
        // Round robin over the kinds still holding commands.
        let Some((i, name, command)) = kinds.iter_mut().find_map(Iterator::next) else {
            break;
        };
        let store = if n % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            (i, name, store.exec_retrying(plain(command)).await)
        }));
        kinds.rotate_left(1);
    }
    let mut shipped = [0i64; TRANSFERS];
    let mut cancelled = [0i64; TRANSFERS];
    let mut received = [0i64; TRANSFERS];
    let mut sold = 0;
    let (mut held_src, mut held_dst) = (0, 0);
    for task in tasks {
        let (i, name, answer) = task.await.expect("task");
        match (name, answer) {
            ("sale", Ok(_)) => sold += 1,
            ("reserve", Ok(_)) => {
                held_src += 1;
                held_dst += i64::from(i % 3 == 0);
            }
            ("ship_transfer", Ok(_)) => shipped[i] += 1,
            ("cancel_transfer", Ok(_)) => cancelled[i] += 1,
            ("receive_transfer", Ok(_)) => received[i] += 2,
            (
                _,
                Err(
                    Refusal::InsufficientStock { .. }
                    | Refusal::TransferStatusConflict { .. }
                    | Refusal::TransferQuantityExceeded { .. },
                ),
            ) => {}
            (name, other) => panic!("{name} answered {other:?}"),
        }
    }
    let mut in_transit = 0;
    for i in 0..TRANSFERS {
        assert!(
            shipped[i] + cancelled[i] <= 1,
            "tr-{i}: {shipped:?} {cancelled:?}"
        );
        let t = a
            .transfer(&tid(&format!("tr-{i}")))
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(t.lines[0].received, received[i], "tr-{i}");
        in_transit += shipped[i] * QTY - received[i];
    }
    let src = level(&*a, "rx", "ra").await;
    let dst = level(&*b, "rx", "rb").await;
    assert!(src.on_hand >= 0 && dst.on_hand >= 0);
    assert_eq!(
        src.on_hand,
        STOCK - sold - shipped.iter().sum::<i64>() * QTY
    );
    assert_eq!(dst.in_transit(), in_transit);
    assert_eq!(dst.on_hand, received.iter().sum::<i64>());
    assert_eq!(src.on_hand + dst.on_hand + dst.in_transit(), STOCK - sold);
    eprintln!(
        "transfer race: shipped {shipped:?}, received {received:?}, sold {sold}, reservations holding {held_src} at the source and {held_dst} at the destination"
    );
    // Every acknowledged reservation holds its units, and nothing is oversold.
    assert_eq!((src.reserved, dst.reserved), (held_src, held_dst));
    assert!(
        src.available() >= 0 && dst.available() >= 0,
        "{src:?} {dst:?}"
    );
}
