//! The contract of [`WebhookStore`]: subscriptions round-trip, cursors are per
//! `(subscription, partition)`, a dead letter advances the cursor and counts toward the
//! disable rule until a success clears it, disabling is recorded once, replays are queued
//! per partition, and deleting a subscription removes all of its state.
#![allow(clippy::unwrap_used)]

use stockflow_domain::webhook::{Filter, SubscriptionState};

use crate::ports::{Cursor, Subscription, WebhookDeadLetter, WebhookStore};

fn subscription(id: &str, at: i64) -> Subscription {
    Subscription {
        id: id.into(),
        url: "http://127.0.0.1:9/hook".into(),
        types: vec!["dev.stockflow.stock.adjusted.v1".into()],
        filter: Filter {
            skus: ["SKU-1".to_string()].into(),
            ..Filter::default()
        },
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        state: SubscriptionState::Enabled,
        consecutive_dead_letters: 0,
        created_at_ms: at,
        updated_at_ms: at,
    }
}

/// The log every cursor below lives in, except where another is named.
const LOG: &str = "log-a";

fn letter(id: &str, partition: u32, offset: u64) -> WebhookDeadLetter {
    WebhookDeadLetter {
        id: 0,
        subscription_id: id.into(),
        partition,
        offset,
        event_id: format!("SKU-1/dc/{offset}"),
        event_type: "dev.stockflow.stock.adjusted.v1".into(),
        body: "{}".into(),
        attempts: 4,
        last_error: "HTTP 503".into(),
        failed_at_ms: 50,
        replay_requested: false,
    }
}

/// Runs the whole contract on an empty store.
pub(crate) async fn run(store: &dyn WebhookStore) {
    let a = subscription("sub_a", 10);
    store.create_subscription(&a).await.unwrap();
    store
        .create_subscription(&subscription("sub_b", 20))
        .await
        .unwrap();
    assert_eq!(store.subscription("sub_a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.subscription("sub_x").await.unwrap(), None);
    let ids: Vec<String> = store
        .subscriptions()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["sub_a", "sub_b"]);

    // Cursors: none until stored, then per partition.
    assert_eq!(store.cursor("sub_a", LOG, 0).await.unwrap(), None);
    let failing = Cursor {
        next_offset: 7,
        attempts: 2,
        first_attempt_ms: Some(100),
        retry_at_ms: 300,
        last_error: Some("connection refused".into()),
    };
    store
        .save_cursor("sub_a", LOG, 0, &failing, false)
        .await
        .unwrap();
    assert_eq!(
        store.cursor("sub_a", LOG, 0).await.unwrap(),
        Some(failing.clone())
    );
    assert_eq!(store.cursor("sub_a", LOG, 1).await.unwrap(), None);
    // Another log (a new topic) has cursors of its own: offsets never carry over.
    assert_eq!(store.cursor("sub_a", "log-b", 0).await.unwrap(), None);
    assert_eq!(store.cursor("sub_b", LOG, 0).await.unwrap(), None);
    // A cursor of a subscription that is gone is not stored.
    store
        .save_cursor("sub_x", LOG, 0, &failing, true)
        .await
        .unwrap();
    assert_eq!(store.cursor("sub_x", LOG, 0).await.unwrap(), None);

    // Dead letters advance the cursor and count until a success.
    let past = Cursor {
        next_offset: 8,
        ..Cursor::default()
    };
    assert_eq!(
        store
            .dead_letter(&letter("sub_a", 0, 7), LOG, &past)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.cursor("sub_a", LOG, 0).await.unwrap(),
        Some(past.clone())
    );
    assert_eq!(
        store
            .dead_letter(
                &letter("sub_a", 0, 8),
                LOG,
                &Cursor {
                    next_offset: 9,
                    ..past.clone()
                }
            )
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .subscription("sub_a")
            .await
            .unwrap()
            .unwrap()
            .consecutive_dead_letters,
        2
    );
    store
        .save_cursor(
            "sub_a",
            LOG,
            0,
            &Cursor {
                next_offset: 10,
                ..Cursor::default()
            },
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .subscription("sub_a")
            .await
            .unwrap()
            .unwrap()
            .consecutive_dead_letters,
        0
    );
    assert_eq!(
        store
            .dead_letter(&letter("sub_x", 0, 1), LOG, &past)
            .await
            .unwrap(),
        0,
        "no such subscription"
    );
    let letters = store.dead_letters("sub_a").await.unwrap();
    assert_eq!(letters.iter().map(|l| l.offset).collect::<Vec<_>>(), [7, 8]);
    assert_eq!(letters[0].last_error, "HTTP 503");
    assert!(!letters[0].replay_requested);
    assert!(store.dead_letters("sub_b").await.unwrap().is_empty());

    // Replays: queued per partition, removed when delivered, kept when failing again.
    assert!(store.replays(0, 10).await.unwrap().is_empty());
    assert_eq!(store.request_replay("sub_a").await.unwrap(), 2);
    let queued = store.replays(0, 10).await.unwrap();
    assert_eq!(queued.len(), 2);
    assert!(store.replays(1, 10).await.unwrap().is_empty());
    store.replayed(queued[0].id, Ok(()), 60).await.unwrap();
    store
        .replayed(queued[1].id, Err("HTTP 500".into()), 61)
        .await
        .unwrap();
    let left = store.dead_letters("sub_a").await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (
            left[0].offset,
            left[0].attempts,
            left[0].last_error.as_str()
        ),
        (8, 5, "HTTP 500")
    );
    assert!(!left[0].replay_requested);
    assert!(store.replays(0, 10).await.unwrap().is_empty());

    // Disabling is recorded once; enabling clears the count.
    let kind = stockflow_domain::webhook::SUBSCRIPTION_DISABLED_TYPE;
    assert!(
        store
            .disable("sub_a", kind, "3 dead letters", 70)
            .await
            .unwrap()
    );
    assert!(!store.disable("sub_a", kind, "again", 71).await.unwrap());
    assert!(!store.disable("sub_x", kind, "none", 71).await.unwrap());
    let disabled = store.subscription("sub_a").await.unwrap().unwrap();
    assert_eq!(
        (disabled.state, disabled.updated_at_ms),
        (SubscriptionState::Disabled, 70)
    );
    let events = store.subscription_events("sub_a").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0].event_type.as_str(),
            events[0].reason.as_str(),
            events[0].at_ms
        ),
        (kind, "3 dead letters", 70)
    );
    assert!(store.enable("sub_a", 80).await.unwrap());
    assert!(!store.enable("sub_x", 80).await.unwrap());
    let enabled = store.subscription("sub_a").await.unwrap().unwrap();
    assert_eq!(
        (enabled.state, enabled.consecutive_dead_letters),
        (SubscriptionState::Enabled, 0)
    );
    // A failing cursor of the re-enabled subscription starts a fresh window.
    store
        .save_cursor("sub_a", LOG, 2, &failing, false)
        .await
        .unwrap();
    assert!(store.enable("sub_a", 81).await.unwrap());
    let fresh = store.cursor("sub_a", LOG, 2).await.unwrap().unwrap();
    assert_eq!(
        (
            fresh.next_offset,
            fresh.attempts,
            fresh.first_attempt_ms,
            fresh.retry_at_ms
        ),
        (7, 0, None, 0)
    );

    // Deleting removes everything of the subscription, nothing of the others.
    store
        .save_cursor("sub_b", LOG, 0, &past, false)
        .await
        .unwrap();
    assert!(store.delete_subscription("sub_a").await.unwrap());
    assert!(!store.delete_subscription("sub_a").await.unwrap());
    assert_eq!(store.subscription("sub_a").await.unwrap(), None);
    assert_eq!(store.cursor("sub_a", LOG, 0).await.unwrap(), None);
    assert!(store.dead_letters("sub_a").await.unwrap().is_empty());
    assert!(store.subscription_events("sub_a").await.unwrap().is_empty());
    assert_eq!(store.cursor("sub_b", LOG, 0).await.unwrap(), Some(past));
}
