//! Pauses a test puts in sagas, to stall one between its steps (tests only: the module
//! is not compiled otherwise).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::Semaphore;

/// Where in a reservation's saga a pause sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Point {
    /// Before the lease of line `n` (0-based) is taken: between two lines.
    BeforeLease(usize),
    /// After line `n`'s lease, before its step is decided and sent.
    AfterLease(usize),
    /// After every line's step, before the header moves to `active` (`delivering` for a
    /// transfer).
    BeforeActive,
    /// A transfer's: after its move to `delivering`, before its destinations are told.
    Delivering,
}

/// One pause: the saga signals when it reaches it, and waits until opened.
#[derive(Debug)]
pub(crate) struct Gate {
    reached: Semaphore,
    open: Semaphore,
}

impl Gate {
    /// Waits until a saga stands at the gate.
    pub(crate) async fn reached(&self) {
        if let Ok(permit) = self.reached.acquire().await {
            permit.forget();
        }
    }

    /// Lets the saga go on.
    pub(crate) fn open(&self) {
        self.open.add_permits(1);
    }
}

type Gates = HashMap<(String, Point), Arc<Gate>>;
static GATES: LazyLock<Mutex<Gates>> = LazyLock::new(Mutex::default);

/// Puts a pause at `point` of the saga of reservation or transfer `id` (taken by its next
/// run).
pub(crate) fn stall(id: &str, point: Point) -> Arc<Gate> {
    let gate = Arc::new(Gate {
        reached: Semaphore::new(0),
        open: Semaphore::new(0),
    });
    if let Ok(mut gates) = GATES.lock() {
        gates.insert((id.to_string(), point), gate.clone());
    }
    gate
}

/// Called by the saga at `point`: waits there if a test put a pause.
pub(crate) async fn pass(id: &str, point: Point) {
    let gate = GATES
        .lock()
        .ok()
        .and_then(|mut gates| gates.remove(&(id.to_string(), point)));
    if let Some(gate) = gate {
        gate.reached.add_permits(1);
        if let Ok(permit) = gate.open.acquire().await {
            permit.forget();
        }
    }
}
