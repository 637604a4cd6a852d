//! The agent store: order per key, quarantine leaves the queue, replays, the view.

use serde_json::json;

use super::*;

fn store() -> (tempfile::TempDir, AgentStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AgentStore::open(dir.path()).expect("opens");
    (dir, store)
}

fn sale(key: &str, sku: &str, location: &str, qty: i64) -> NewCommand {
    NewCommand {
        origin_key: key.into(),
        path: "/v1/adjustments".into(),
        body: json!({"sku": sku, "location": location, "delta": -qty, "reason": "sale"}),
        effects: vec![Effect {
            sku: sku.into(),
            location: location.into(),
            on_hand: -qty,
            reserved: 0,
            set_on_hand: None,
        }],
        answer: json!({"ok": key}),
        essential: true,
        reservation: None,
        remember_origin: false,
        refused: None,
    }
}

#[test]
fn a_retried_origin_key_gets_its_first_answer_and_queues_nothing() {
    let (_dir, s) = store();
    let first = s.record(sale("pos-1", "A", "s1", 1), 10).expect("records");
    let again = s.record(sale("pos-1", "A", "s1", 1), 20).expect("replays");
    assert!(again.replayed && !first.replayed);
    assert_eq!((again.seq, again.command_id), (first.seq, first.command_id));
    assert_eq!(s.counts().expect("counts").pending, 1);
}

#[test]
fn one_key_is_sent_in_order_and_a_waiting_key_holds_up_no_other() {
    let (_dir, s) = store();
    let a1 = s.record(sale("1", "A", "s1", 1), 0).expect("a1");
    let a2 = s.record(sale("2", "A", "s1", 1), 0).expect("a2");
    let b1 = s.record(sale("3", "B", "s1", 1), 0).expect("b1");
    let due: Vec<i64> = s.due(0, 10).expect("due").iter().map(|q| q.seq).collect();
    assert_eq!(due, [a1.seq, b1.seq], "a2 waits behind a1; b1 does not");
    // a1 fails and backs off: a2 still waits, b1 is not held up.
    s.retry_at(a1.seq, 1_000, "region down").expect("retry");
    let due: Vec<i64> = s.due(0, 10).expect("due").iter().map(|q| q.seq).collect();
    assert_eq!(due, [b1.seq]);
    s.acknowledge(a1.seq, &json!({}), None, 1_000).expect("ack");
    let due: Vec<i64> = s
        .due(1_000, 10)
        .expect("due")
        .iter()
        .map(|q| q.seq)
        .collect();
    assert_eq!(due, [a2.seq, b1.seq]);
}

#[test]
fn a_command_on_several_keys_waits_for_each_and_holds_each() {
    let (_dir, s) = store();
    let a = s.record(sale("1", "A", "s1", 1), 0).expect("a");
    let mut both = sale("2", "A", "s1", 1);
    both.effects.push(Effect {
        sku: "B".into(),
        location: "s1".into(),
        on_hand: 0,
        reserved: 1,
        set_on_hand: None,
    });
    let ab = s.record(both, 0).expect("ab");
    let b = s.record(sale("3", "B", "s1", 1), 0).expect("b");
    let due: Vec<i64> = s.due(0, 10).expect("due").iter().map(|q| q.seq).collect();
    assert_eq!(due, [a.seq]);
    s.acknowledge(a.seq, &json!({}), None, 0).expect("ack");
    let due: Vec<i64> = s.due(0, 10).expect("due").iter().map(|q| q.seq).collect();
    assert_eq!(due, [ab.seq], "b waits behind the two-key command");
    let _ = b;
}

#[test]
fn a_quarantined_command_leaves_the_queue_and_can_be_resent_or_dropped() {
    let (_dir, s) = store();
    let a1 = s.record(sale("1", "A", "s1", 1), 0).expect("a1");
    let a2 = s.record(sale("2", "A", "s1", 1), 0).expect("a2");
    s.quarantine(a1.seq, &json!({"code": "invalid_request"}), 5)
        .expect("quarantine");
    let due: Vec<i64> = s.due(0, 10).expect("due").iter().map(|q| q.seq).collect();
    assert_eq!(due, [a2.seq], "the rest of the key flows");
    let parked = s.quarantined(10).expect("list");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].problem["code"], "invalid_request");
    assert!(s.requeue(a1.seq, 10).expect("requeue"));
    let due: Vec<i64> = s.due(10, 10).expect("due").iter().map(|q| q.seq).collect();
    assert_eq!(due, [a1.seq], "back at its own place, ahead of a2");
    s.quarantine(a1.seq, &json!({}), 11).expect("again");
    assert!(s.drop_quarantined(a1.seq, 12).expect("drop"));
    assert!(
        !s.requeue(a1.seq, 13)
            .expect("a dropped command stays dropped")
    );
    assert_eq!(s.counts().expect("counts").quarantined, 0);
}

#[test]
fn the_view_only_moves_forward_and_keeps_its_cursor_with_it() {
    let (_dir, s) = store();
    let row = |version, on_hand| ViewRow {
        sku: "A".into(),
        location: "s1".into(),
        on_hand,
        reserved: 0,
        version,
        as_of_ms: 0,
    };
    s.apply_changes(&[row(3, 30)], "c3").expect("apply");
    s.apply_changes(&[row(2, 20)], "c4").expect("older");
    assert_eq!(
        s.view("A", "s1").expect("view").map(|r| r.on_hand),
        Some(30)
    );
    assert_eq!(s.cursor().expect("cursor").as_deref(), Some("c4"));
    let pending = s.record(sale("1", "A", "s1", 2), 0).expect("sale");
    assert_eq!(s.pending_effects("A", "s1").expect("effects").len(), 1);
    s.acknowledge(pending.seq, &json!({}), Some(row(4, 28)), 1)
        .expect("ack");
    assert!(s.pending_effects("A", "s1").expect("effects").is_empty());
    assert_eq!(s.view("A", "s1").expect("view").map(|r| r.version), Some(4));
    s.reset_view(&[row(1, 5)], "snap").expect("reset");
    assert_eq!(s.view("A", "s1").expect("view").map(|r| r.on_hand), Some(5));
}

#[test]
fn compaction_removes_only_settled_commands() {
    let (_dir, s) = store();
    let a = s.record(sale("1", "A", "s1", 1), 0).expect("a");
    let _b = s.record(sale("2", "B", "s1", 1), 0).expect("b");
    s.acknowledge(a.seq, &json!({}), None, 100).expect("ack");
    assert_eq!(s.compact(50, 100).expect("nothing old enough"), 0);
    assert_eq!(s.compact(200, 100).expect("compacts"), 1);
    let counts = s.counts().expect("counts");
    assert_eq!((counts.pending, counts.acknowledged), (1, 0));
}

#[test]
fn a_captured_row_is_recognised_after_its_command_is_compacted() {
    let (_dir, s) = store();
    let mut row = sale("capture:line-7", "A", "s1", 1);
    row.remember_origin = true;
    let first = s.record(row.clone(), 0).expect("records");
    s.acknowledge(first.seq, &json!({}), None, 10).expect("ack");
    assert_eq!(s.compact(100, 10).expect("compacts"), 1);
    // A rebuilt capture reads the row again: nothing is queued.
    let again = s.record(row, 200).expect("recognised");
    assert!(again.replayed);
    assert_eq!(again.seq, first.seq);
    assert_eq!(s.counts().expect("counts").pending, 0);
    // Rows the region already had are remembered without being queued.
    s.remember_origins(&["capture:old-1".into()])
        .expect("remembers");
    let mut old = sale("capture:old-1", "A", "s1", 1);
    old.remember_origin = true;
    assert!(s.record(old, 300).expect("recognised").replayed);
    assert_eq!(s.counts().expect("counts").pending, 0);
}

#[test]
fn a_row_the_agent_refuses_goes_straight_to_the_quarantine() {
    let (_dir, s) = store();
    let mut bad = sale("capture:line-9", "A", "s1", 1);
    bad.refused = Some(json!({"code": "capture_row_invalid"}));
    let recorded = s.record(bad, 0).expect("records");
    let next = s.record(sale("pos-2", "A", "s1", 1), 0).expect("records");
    let counts = s.counts().expect("counts");
    assert_eq!((counts.pending, counts.quarantined), (1, 1));
    let held = s.quarantined(10).expect("quarantine");
    assert_eq!(held[0].seq, recorded.seq);
    assert_eq!(held[0].problem["code"], "capture_row_invalid");
    // It holds up nothing on its key.
    let due: Vec<i64> = s.due(0, 10).expect("due").iter().map(|q| q.seq).collect();
    assert_eq!(due, [next.seq]);
}

#[test]
fn a_refused_command_is_resent_under_a_new_key_and_an_outlived_one_under_its_own() {
    let refused = r#"{"code":"location_not_found","status":404}"#;
    let id = "0190f3c2-7a1b-7c3d-8e4f-123456789abc";
    assert_eq!(queue::resent_key(id, Some(refused)), format!("{id}.r1"));
    assert_eq!(
        queue::resent_key(&format!("{id}.r1"), Some(refused)),
        format!("{id}.r2")
    );
    assert_eq!(queue::resent_key(id, None), format!("{id}.r1"));
    let outlived = r#"{"code":"outlived_idempotency_key"}"#;
    assert_eq!(queue::resent_key(id, Some(outlived)), id);
    // Every key stays within the region's Idempotency-Key limit (64 of [A-Za-z0-9._:-]).
    let key = queue::resent_key(&format!("{id}.r999"), Some(refused));
    assert!(
        key.len() <= 64
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
    );
}
