//! Sagas and reservation expiry on a real CQL server: half-way sagas recovered, the
//! deadline index tidied and kept until its reservation lands, finished headers expiring
//! whole, and a stalled saga excluded by its rollback.

use super::*;

/// Sagas abandoned half-way (their process died) are completed by expiry: a `pending` one
/// is rolled back and its id freed, a `settling` one is finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_recovers_sagas_left_half_way() {
    use stockflow_domain::decide::Settlement;
    use stockflow_domain::saga::SagaState;
    use stockflow_domain::{
        Command, EventMeta, LocationGrant, LocationId, Reservation, ReservationId, ReservationLine,
        ReservationStatus, Sku, StockKey,
    };

    use crate::ports::{CommandRequest, WriteStore};

    let b = backend("recover").await;
    let w = b.write.clone();
    let p = w.keys.partitions.clone();
    let plain = |command| CommandRequest {
        command,
        idempotency: None,
        trace_context: None,
        actor: None,
        grant: LocationGrant::Any,
    };
    let key = |s: &str| StockKey::new(Sku::parse(s).unwrap(), LocationId::parse("x1").unwrap());
    let reserved = |s: &'static str| {
        let w = w.clone();
        async move { w.stock_level(&key(s)).await.unwrap().unwrap().reserved }
    };
    w.put_location(stockflow_domain::Location {
        id: LocationId::parse("x1").unwrap(),
        region: stockflow_domain::Region::parse("north").unwrap(),
        kind: stockflow_domain::LocationKind::Store,
        name: "X1".into(),
    })
    .await
    .unwrap()
    .unwrap();
    for s in ["a", "b"] {
        let adjust = stockflow_domain::Adjust::new(
            key(s),
            stockflow_domain::OnHandChange::Delta(10),
            stockflow_domain::AdjustReason::Receipt,
            None,
            None,
        )
        .unwrap();
        w.exec(plain(Command::Adjust(adjust))).await.unwrap();
    }
    let line = |s: &str, qty| ReservationLine {
        sku: Sku::parse(s).unwrap(),
        location: LocationId::parse("x1").unwrap(),
        qty,
        backordered: 0,
        channel: None,
    };

    // A reservation whose process died after holding its first line, 31 s ago.
    let old = crate::now_ms() - 31_000;
    let meta = EventMeta {
        actor: None,
        idempotency_key: None,
        trace_context: None,
        occurred_at_ms: old,
    };
    let crashed = Reservation {
        id: ReservationId::parse("crashed").unwrap(),
        status: ReservationStatus::Active,
        lines: vec![line("a", 2), line("b", 3)],
        reference: None,
        created_at_ms: old,
        expires_at_ms: old + 600_000,
        updated_at_ms: old,
    };
    deadlines::index_with_deadlines(&p, &crashed.id, &[key("a"), key("b")], &[], None)
        .await
        .unwrap();
    let lines = serde_json::to_string(&crashed.lines).unwrap();
    let pending = SagaState::Pending.to_string();
    let header = HeaderWrite {
        id: crashed.id.as_str(),
        status: &pending,
        owner: "k:gone",
        lines: &lines,
        reference: None,
        created_at: old,
        expires_at: crashed.expires_at_ms,
        updated_at: old,
    };
    p.session
        .execute_unpaged(&p.st.create_header, header)
        .await
        .unwrap();
    w.keys
        .apply(
            &key("a"),
            saga::reserve_step(
                &crashed,
                &crashed.lines[0],
                &LocationGrant::Any,
                i64::MAX,
                &meta,
            ),
        )
        .await
        .unwrap();
    assert_eq!(reserved("a").await, 2, "the dead saga holds its first line");
    assert!(w.reservation(&crashed.id).await.unwrap().is_none());
    let _ = w
        .exec(plain(Command::Expire {
            id: crashed.id.clone(),
        }))
        .await;
    assert_eq!((reserved("a").await, reserved("b").await), (0, 0));
    assert!(saga::header(&p, &crashed.id).await.unwrap().is_none());
    let again = stockflow_domain::Reserve::new(
        crashed.id.clone(),
        vec![
            stockflow_domain::ReserveLine {
                sku: Sku::parse("a").unwrap(),
                location: LocationId::parse("x1").unwrap(),
                qty: 1,
            },
            stockflow_domain::ReserveLine {
                sku: Sku::parse("b").unwrap(),
                location: LocationId::parse("x1").unwrap(),
                qty: 1,
            },
        ],
        600,
        None,
    )
    .unwrap();
    w.exec(plain(Command::Reserve(again)))
        .await
        .expect("the id is free again");
    assert_eq!((reserved("a").await, reserved("b").await), (1, 1));

    // A confirmation whose process died after settling one line of two.
    let half = w.reservation(&crashed.id).await.unwrap().unwrap();
    let (settling, active) = (
        SagaState::Settling(Settlement::Confirm).to_string(),
        SagaState::Active.to_string(),
    );
    let settle = HeaderMove {
        new_status: &settling,
        moved_at: old,
        id: half.id.as_str(),
        old_status: &active,
    };
    p.session
        .execute_unpaged(&p.st.move_header, settle)
        .await
        .unwrap();
    w.keys
        .apply(
            &key("a"),
            saga::settle_step(Settlement::Confirm, &half, &LocationGrant::Any, &meta),
        )
        .await
        .unwrap();
    let done = w
        .exec(plain(Command::Expire {
            id: half.id.clone(),
        }))
        .await
        .unwrap();
    assert_eq!(done.events, 1, "only the unsettled line moves");
    let status = match done.result {
        stockflow_domain::CommandResult::Reservation(r) => r.status,
        other => panic!("{other:?}"),
    };
    assert_eq!(status, ReservationStatus::Confirmed);
    for s in ["a", "b"] {
        let level = w.stock_level(&key(s)).await.unwrap().unwrap();
        assert_eq!((level.on_hand, level.reserved), (9, 0), "{s}");
    }
}

/// The deadline index lives apart from the reservations, so an expiry round tidies it: a row
/// left by a reservation that settled is removed, and a recovery row of a reservation that
/// is active again gives way to that reservation's own deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_rounds_tidy_the_deadline_index() {
    use stockflow_domain::{Command, OnHandChange, ReservationId};

    use crate::contract::{Exec, adjust, location, plain, reserve};
    use crate::ports::WriteStore;

    let b = backend("tidy").await;
    let w = b.write.clone();
    let p = w.keys.partitions.clone();
    let rows_of = |id: &'static str| deadline_rows(&p, id);
    w.put_location(location("x", "north"))
        .await
        .unwrap()
        .unwrap();
    w.exec(plain(adjust("t", "x", OnHandChange::Delta(10), None)))
        .await
        .unwrap();
    let settled = ReservationId::parse("settled").unwrap();
    let live = ReservationId::parse("live").unwrap();
    w.exec(plain(reserve("settled", &[("t", "x", 1)], 600)))
        .await
        .unwrap();
    w.exec(plain(Command::Confirm {
        id: settled.clone(),
    }))
    .await
    .unwrap();
    w.exec(plain(reserve("live", &[("t", "x", 1)], 600)))
        .await
        .unwrap();
    let live_deadline = w.reservation(&live).await.unwrap().unwrap().expires_at_ms;
    assert_eq!(rows_of("settled").await, Vec::<i64>::new());
    // What a crash leaves: a row whose delete was lost, and a recovery row now past.
    let now = crate::now_ms();
    deadlines::deadline(&p, &settled, now - 5_000)
        .await
        .unwrap();
    deadlines::deadline(&p, &live, now - 3_000).await.unwrap();

    let round = w.expire_due(crate::now_ms(), 10).await.unwrap();
    assert_eq!(
        (round.expired, round.already_final, round.failed),
        (0, 1, 0),
        "{:?}",
        round.last_error
    );
    assert_eq!(round.next_deadline_ms, Some(live_deadline));
    assert_eq!(rows_of("settled").await, Vec::<i64>::new());
    assert_eq!(rows_of("live").await, vec![live_deadline]);
    let round = w.expire_due(crate::now_ms(), 10).await.unwrap();
    assert_eq!((round.expired, round.already_final), (0, 0));
    assert_eq!(round.next_deadline_ms, Some(live_deadline));
}

/// A finished saga's header expires as a whole: were only the cells its last write set to
/// expire, the rest of the row would stay behind with no status, which reads as active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_saga_header_expires_with_every_column() {
    use stockflow_domain::{Command, OnHandChange, ReservationId, ReservationStatus};

    use crate::contract::{Exec, adjust, location, plain, reserve};
    use crate::ports::WriteStore;

    let b = backend("header_ttl").await;
    let w = b.write.clone();
    let p = w.keys.partitions.clone();
    w.put_location(location("x", "north"))
        .await
        .unwrap()
        .unwrap();
    for sku in ["a", "b"] {
        w.exec(plain(adjust(sku, "x", OnHandChange::Delta(10), None)))
            .await
            .unwrap();
    }
    let id = ReservationId::parse("two-lines").unwrap();
    w.exec(plain(reserve(
        "two-lines",
        &[("a", "x", 1), ("b", "x", 2)],
        600,
    )))
    .await
    .unwrap();
    assert!(
        matches!(saga::locate(&p, &id).await.unwrap(), saga::Located::Saga(_)),
        "a reservation over two keys is found through its header"
    );
    w.exec(plain(Command::Confirm { id: id.clone() }))
        .await
        .unwrap();
    let ttl_of = |column: &'static str| {
        let session = p.session.clone();
        let keyspace = format!("t_header_ttl_{}", std::process::id());
        async move {
            let rows = session
                .query_unpaged(
                    format!("SELECT TTL({column}) AS ttl FROM {keyspace}.reservations WHERE id = 'two-lines'"),
                    (),
                )
                .await
                .unwrap()
                .into_rows_result()
                .unwrap();
            rows.maybe_first_row::<(Option<i32>,)>().unwrap().unwrap().0
        }
    };
    for column in [
        "status",
        "owner",
        "lines",
        "created_at",
        "expires_at",
        "updated_at",
    ] {
        let ttl = ttl_of(column).await;
        assert!(
            ttl.is_some_and(|t| t > 0 && t <= cql::write_statements::RECORD_TTL),
            "{column} of a confirmed saga carries the record TTL, found {ttl:?}"
        );
    }
    let confirmed = w.reservation(&id).await.unwrap().unwrap();
    assert_eq!(confirmed.status, ReservationStatus::Confirmed);
    assert_eq!(confirmed.lines.len(), 2);
}

/// The times of `id`'s rows in the deadline index, from two minutes ago to well ahead.
async fn deadline_rows(p: &partition::Partitions, id: &str) -> Vec<i64> {
    let now = crate::now_ms();
    let mut at = Vec::new();
    for minute in deadlines::minute_of(now - 240_000)..=deadlines::minute_of(now + 700_000) {
        let rows: Vec<DeadlineRow> = query::rows(
            &p.session,
            "scan deadlines",
            &p.st.deadlines_from,
            (minute, 0i64, 1000i32),
        )
        .await
        .unwrap();
        at.extend(
            rows.into_iter()
                .filter(|r| r.id == id)
                .map(|r| r.expires_at),
        );
    }
    at
}

/// A one-line reserve writes its deadline before its conditional batch; while the batch is
/// still retrying, expiry must not take the missing reservation for a settled one and drop
/// the row (the reservation would then land with no deadline and hold its stock forever).
/// A row whose reservation never came is dropped once no batch can still be on its way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_written_before_its_reservation_is_kept_until_it_lands() {
    use stockflow_domain::{
        LocationId, OnHandChange, ReservationId, ReservationStatus, Sku, StockKey,
    };

    use crate::contract::{Exec, adjust, location, plain, reserve};
    use crate::ports::WriteStore;

    let b = backend("late").await;
    let w = b.write.clone();
    let p = w.keys.partitions.clone();
    w.put_location(location("x", "north"))
        .await
        .unwrap()
        .unwrap();
    w.exec(plain(adjust("t", "x", OnHandChange::Delta(10), None)))
        .await
        .unwrap();
    let late = ReservationId::parse("late").unwrap();
    let orphan = ReservationId::parse("orphan").unwrap();
    let now = crate::now_ms();
    let key = StockKey::new(Sku::parse("t").unwrap(), LocationId::parse("x").unwrap());
    deadlines::index_with_deadlines(&p, &late, std::slice::from_ref(&key), &[now - 1_000], None)
        .await
        .unwrap();
    deadlines::deadline(&p, &orphan, now - 200_000)
        .await
        .unwrap();

    let round = w.expire_due(crate::now_ms(), 10).await.unwrap();
    assert_eq!(
        (round.expired, round.already_final, round.failed),
        (0, 1, 0),
        "only the orphan is dropped: {:?}",
        round.last_error
    );
    assert!(
        round
            .next_deadline_ms
            .is_some_and(|t| t <= crate::now_ms() + 5_000),
        "the kept row is looked at again soon: {:?}",
        round.next_deadline_ms
    );
    assert_eq!(deadline_rows(&p, "late").await, vec![now - 1_000]);
    assert_eq!(deadline_rows(&p, "orphan").await, Vec::<i64>::new());

    // The batch lands, with a one-second TTL; expiry then expires the reservation.
    w.exec(plain(reserve("late", &[("t", "x", 1)], 1)))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let round = w.expire_due(crate::now_ms(), 10).await.unwrap();
    assert_eq!(round.expired, 1, "{:?}", round.last_error);
    let held = w.reservation(&late).await.unwrap().unwrap();
    assert_eq!(held.status, ReservationStatus::Expired);
    assert_eq!(deadline_rows(&p, "late").await, Vec::<i64>::new());
    let level = w.stock_level(&key).await.unwrap().unwrap();
    assert_eq!(
        level.reserved, 0,
        "the expired reservation gave its unit back"
    );
}

/// A multi-line reservation whose saga stalls between its lines past the recovery window
/// is rolled back by expiry, and its lines and that rollback exclude each other: woken, the
/// stalled attempt holds nothing more; the client's retry (same key) makes a new, whole
/// reservation that the stale attempt never touches; a step whose lease ran out is not
/// sent; a line that lands after the header left `pending` is given back by its writer.
/// After each case, every key's `reserved` equals what active reservations hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_saga_and_its_rollback_exclude_each_other() {
    use std::time::Duration;

    use stockflow_domain::{LocationId, OnHandChange, ReservationId, Sku, StockKey};

    use crate::contract::{Exec, adjust, assert_holds_match, keyed, location, plain, reserve};
    use crate::ports::WriteStore;
    use saga::pauses::{Point, stall};

    /// The recovery window of this test's store (30 s in production).
    const WINDOW: i64 = 3_000;
    let (_, config) = backend_and_config("stall").await;
    let session = Arc::new(connect(&config).await.expect("connect"));
    let w = Arc::new(
        ScyllaWriteStore::with_recovery(session, &config.keyspace, WINDOW)
            .await
            .expect("store"),
    );
    let p = w.keys.partitions.clone();
    w.put_location(location("sx", "north"))
        .await
        .unwrap()
        .unwrap();
    w.put_location(location("sy", "south"))
        .await
        .unwrap()
        .unwrap();
    for (s, l) in [("a", "sx"), ("b", "sy")] {
        w.exec(plain(adjust(s, l, OnHandChange::Delta(10), None)))
            .await
            .unwrap();
    }
    let key =
        |s: &str, l: &str| StockKey::new(Sku::parse(s).unwrap(), LocationId::parse(l).unwrap());
    let reserved = |s: &'static str, l: &'static str| {
        let w = w.clone();
        async move { w.stock_level(&key(s, l)).await.unwrap().unwrap().reserved }
    };
    let start = |id: &'static str, k: &'static str| {
        let w = w.clone();
        tokio::spawn(async move {
            w.execute(keyed(
                reserve(id, &[("a", "sx", 2), ("b", "sy", 3)], 600),
                k,
                k,
            ))
            .await
        })
    };
    let past_window = || tokio::time::sleep(Duration::from_millis(WINDOW as u64 + 500));
    let expire = || {
        let w = w.clone();
        async move {
            let round = w.expire_due(crate::now_ms(), 100).await.unwrap();
            assert_eq!(round.failed, 0, "{:?}", round.last_error);
        }
    };
    let unavailable = |r: crate::Result<crate::ports::Executed>, case: &str| match r {
        Err(e) if e.retryable() => {}
        other => panic!("{case}: expected a retryable failure, got {other:?}"),
    };
    let all = ["st-1", "st-2", "st-3", "st-4"];

    // 1. Stalled between its lines: expiry leaves it alone while it is within its window,
    //    then rolls it back; woken, it takes no lease and holds nothing. (Had it gone on to
    //    write its second line, its request would be cut off before its move to `active`,
    //    as the HTTP timeout drops it: nothing may stay held then either.)
    let gate = stall("st-1", Point::BeforeLease(1));
    let late = stall("st-1", Point::BeforeActive);
    let mut run = start("st-1", "k-st-1");
    gate.reached().await;
    assert_eq!(reserved("a", "sx").await, 2, "its first line is held");
    expire().await;
    assert_eq!(reserved("a", "sx").await, 2, "not idle long enough");
    past_window().await;
    expire().await;
    assert_eq!(reserved("a", "sx").await, 0, "rolled back");
    assert!(
        saga::header(&p, &ReservationId::parse("st-1").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    gate.open();
    tokio::select! {
        answer = &mut run => unavailable(answer.unwrap(), "st-1"),
        () = late.reached() => run.abort(),
    }
    assert_eq!(
        (reserved("a", "sx").await, reserved("b", "sy").await),
        (0, 0)
    );
    assert_holds_match(&*w, &all).await;

    // 2. Rolled back, then retried by the client with the same key: a new attempt, which
    //    the stale one — woken while the new one is half-way — leaves alone.
    let gate = stall("st-2", Point::BeforeLease(1));
    let stale = start("st-2", "k-st-2");
    gate.reached().await;
    past_window().await;
    expire().await;
    assert_eq!(reserved("a", "sx").await, 0, "rolled back");
    let gate_retry = stall("st-2", Point::BeforeLease(1));
    let retry = start("st-2", "k-st-2");
    gate_retry.reached().await;
    assert_eq!(
        reserved("a", "sx").await,
        2,
        "the retry holds its first line"
    );
    gate.open();
    unavailable(stale.await.unwrap(), "st-2 stale");
    assert_eq!(
        reserved("a", "sx").await,
        2,
        "the stale attempt gave back nothing of the new one"
    );
    gate_retry.open();
    let made = retry
        .await
        .unwrap()
        .expect("the retry makes the reservation");
    assert!(!made.replayed && made.answer.is_ok());
    assert_eq!(
        (reserved("a", "sx").await, reserved("b", "sy").await),
        (2, 3)
    );
    let again = w
        .exec(keyed(
            reserve("st-2", &[("a", "sx", 2), ("b", "sy", 3)], 600),
            "k-st-2",
            "k-st-2",
        ))
        .await
        .unwrap();
    assert!(again.replayed, "its answer is kept under the key");
    assert_holds_match(&*w, &all).await;

    // 3. Stalled after its second line's lease, past the window: expiry rolls it back, and
    //    the step whose lease ran out is never sent (were it sent, the request would again
    //    be cut off before its move to `active`).
    let gate = stall("st-3", Point::AfterLease(1));
    let late = stall("st-3", Point::BeforeActive);
    let mut run = start("st-3", "k-st-3");
    gate.reached().await;
    past_window().await;
    expire().await;
    gate.open();
    tokio::select! {
        answer = &mut run => unavailable(answer.unwrap(), "st-3"),
        () = late.reached() => run.abort(),
    }
    assert_eq!(
        (reserved("a", "sx").await, reserved("b", "sy").await),
        (2, 3),
        "only st-2 holds stock"
    );
    assert_holds_match(&*w, &all).await;

    // 4. Every line held, then the header leaves `pending` under it — as when a rollback
    //    looked at a partition before the last step landed there: the writer, refused its
    //    move to `active`, gives back what it holds.
    let gate = stall("st-4", Point::BeforeActive);
    let run = start("st-4", "k-st-4");
    gate.reached().await;
    assert_eq!(
        (reserved("a", "sx").await, reserved("b", "sy").await),
        (4, 6)
    );
    p.session
        .query_unpaged(
            format!(
                "DELETE FROM {}.reservations WHERE id = 'st-4'",
                config.keyspace
            ),
            (),
        )
        .await
        .unwrap();
    gate.open();
    unavailable(run.await.unwrap(), "st-4");
    assert_eq!(
        (reserved("a", "sx").await, reserved("b", "sy").await),
        (2, 3)
    );
    assert_holds_match(&*w, &all).await;
}
