//! Purchase-order lines through real HTTP on the embedded backend: a line expected on a
//! day, received in parts by receipts that name it (the rest stays incoming), received in
//! full (the line closes), and the refusals: a line not open here, a count naming a line.

mod common;

use common::{DAY, Platform, answered, problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn receipt(delta: i64, line: u32) -> Value {
    json!({
        "sku": "P1", "location": "a", "delta": delta, "reason": "receipt",
        "purchase_order_line": {"purchase_order": "po-1", "line": line},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_that_name_a_purchase_order_line_draw_it_down_until_it_closes() {
    let p = Platform::start().await;
    p.location("a", "north").await;
    let expected = json!({
        "sku": "P1", "location": "a", "purchase_order": "po-1", "line": 1, "qty": 50,
        "expected_date": DAY,
    });
    answered(
        p.post("/v1/incoming", "po-1-1", expected).await,
        StatusCode::OK,
    )
    .await;

    // 30 of 50 arrive: on hand, and the other 20 still expected on the day.
    let level = answered(
        p.post("/v1/adjustments", "rcv-1", receipt(30, 1)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(level["on_hand"], 30);
    let stock = p.eventually_stock("P1", "a", |v| v["on_hand"] == 30).await;
    assert_eq!(stock["incoming"], json!([{"date": DAY, "qty": 20}]));

    // A line that is not open here, and a count naming a line: refused, nothing changes.
    let (status, body) = problem(p.post("/v1/adjustments", "rcv-2", receipt(5, 2)).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("incoming_not_found"))
    );
    let count = json!({
        "sku": "P1", "location": "a", "set_on_hand": 99, "reason": "receipt",
        "purchase_order_line": {"purchase_order": "po-1", "line": 1},
    });
    let (status, body) = problem(p.post("/v1/adjustments", "rcv-3", count).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = problem(p.post("/v1/adjustments", "rcv-4", receipt(-5, 1)).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let level = p.write_level("P1", "a").await;
    assert_eq!((level.on_hand, level.version), (30, 2));

    // The rest arrives, and more than was ordered: all on hand, the line closed.
    answered(
        p.post("/v1/adjustments", "rcv-5", receipt(25, 1)).await,
        StatusCode::OK,
    )
    .await;
    let stock = p.eventually_stock("P1", "a", |v| v["on_hand"] == 55).await;
    assert_eq!(stock["incoming"], json!([]));
    // The same receipt retried under its key applies once.
    answered(
        p.post("/v1/adjustments", "rcv-5", receipt(25, 1)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(p.write_level("P1", "a").await.on_hand, 55);

    // Each receipt's movement names its line.
    let movements: Value = p
        .get("/v1/movements?sku=P1&location=a")
        .await
        .json()
        .await
        .expect("json");
    let lines: Vec<&Value> = movements["movements"]
        .as_array()
        .expect("movements")
        .iter()
        .filter(|m| m["reason"] == "receipt")
        .map(|m| &m["purchase_order"])
        .collect();
    let po = json!({"purchase_order": "po-1", "line": 1});
    assert_eq!(lines, [&po, &po], "{movements}");
    assert_eq!(
        movements["movements"][0]["purchase_order"], po,
        "the expectation too"
    );
}
