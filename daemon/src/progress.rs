//! Progress of puts and gets: the phase each is in and the bytes done. A
//! CLI may ask for one by its caller-chosen op id (`progress`), and every
//! change goes out as a `progress` event (`subscribe_events`), which is
//! what draws the CLI's progress bars.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p2pstore_rpc::{EventKind, PROGRESS_EVENT_MS, TransferKind, TransferPhase};

use crate::events::Events;

/// Ops kept for `progress` lookups at once; more still run and send
/// events, but cannot be looked up by id.
const MAX_OPS: usize = 1024;
/// How long a finished op can still be looked up.
const KEEP_FINISHED: Duration = Duration::from_secs(60);

pub struct Op {
    pub done: AtomicU64,
    pub total: AtomicU64,
    phase: AtomicU8,
    finished: AtomicBool,
    /// Milliseconds after `started` of the last progress event sent.
    last_event_ms: AtomicU64,
    started: Instant,
    transfer_id: u64,
    id: Option<String>,
    transfer: TransferKind,
    file_id: Mutex<Option<String>>,
    events: Events,
}

impl Op {
    /// `n` more bytes done; sends an event if none went out for a while.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_event_ms.load(Ordering::Relaxed);
        // One thread wins the slot; the others leave it to the next add.
        if now.saturating_sub(last) >= PROGRESS_EVENT_MS
            && self
                .last_event_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.emit(None);
        }
    }

    /// Enters `phase`, and says so at once.
    pub fn phase(&self, phase: TransferPhase) {
        let i = TransferPhase::ALL
            .iter()
            .position(|p| *p == phase)
            .unwrap_or(0);
        self.phase.store(i as u8, Ordering::Relaxed);
        self.last_event_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.emit(None);
    }

    /// Names the file once it has an id.
    pub fn file(&self, file_id: &impl ToString) {
        if let Ok(mut f) = self.file_id.lock() {
            *f = Some(file_id.to_string());
        }
    }

    /// The total, once it is known (a get learns it from the manifest).
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    fn current_phase(&self) -> TransferPhase {
        TransferPhase::ALL
            .get(self.phase.load(Ordering::Relaxed) as usize)
            .copied()
            .unwrap_or(TransferPhase::Planning)
    }

    fn emit(&self, error: Option<String>) {
        self.events.emit(EventKind::Progress {
            transfer_id: self.transfer_id,
            op_id: self.id.clone(),
            transfer: self.transfer,
            file_id: self.file_id.lock().ok().and_then(|f| f.clone()),
            phase: self.current_phase(),
            done_bytes: self.done.load(Ordering::Relaxed),
            total_bytes: self.total.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
            error,
        });
    }
}

/// An op and, once it ended, when.
type Entry = (Arc<Op>, Option<Instant>);

#[derive(Clone)]
pub struct Registry {
    ops: Arc<Mutex<HashMap<String, Entry>>>,
    /// Transfers started and not ended, with an op id or not: what a
    /// shutdown waits for.
    running: Arc<AtomicU64>,
    /// The last transfer id given.
    last_id: Arc<AtomicU64>,
    events: Events,
}

/// The running op. Say how it ended with [`Guard::finish`]; dropped
/// without it (a panic, a cancelled call), it ends as failed.
pub struct Guard {
    op: Arc<Op>,
    reg: Registry,
    ended: AtomicBool,
}

impl std::ops::Deref for Guard {
    type Target = Op;
    fn deref(&self) -> &Op {
        &self.op
    }
}

impl Guard {
    /// Ends the op, with the error that ended it if any.
    pub fn finish<T>(&self, result: &crate::error::Result<T>) {
        self.end(result.as_ref().err().map(|e| e.to_string()));
    }

    fn end(&self, error: Option<String>) {
        if self.ended.swap(true, Ordering::Relaxed) {
            return;
        }
        self.op.finished.store(true, Ordering::Relaxed);
        self.reg.running.fetch_sub(1, Ordering::Relaxed);
        self.op.emit(error);
        if let (Some(id), Ok(mut ops)) = (self.op.id.as_ref(), self.reg.ops.lock())
            && let Some(entry) = ops.get_mut(id)
        {
            entry.1 = Some(Instant::now());
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.end(Some("cancelled".into()));
    }
}

impl Registry {
    pub fn new(events: Events) -> Self {
        Registry {
            ops: Default::default(),
            running: Default::default(),
            last_id: Default::default(),
            events,
        }
    }

    /// Puts and gets under way now.
    pub fn running(&self) -> u64 {
        self.running.load(Ordering::Relaxed)
    }

    /// Starts an op in `phase`; `total` may be set later.
    pub fn start(
        &self,
        id: Option<String>,
        transfer: TransferKind,
        phase: TransferPhase,
        total: u64,
    ) -> Guard {
        let op = Arc::new(Op {
            done: AtomicU64::new(0),
            total: AtomicU64::new(total),
            phase: AtomicU8::new(0),
            finished: AtomicBool::new(false),
            last_event_ms: AtomicU64::new(0),
            started: Instant::now(),
            transfer_id: self.last_id.fetch_add(1, Ordering::Relaxed) + 1,
            id: id.clone(),
            transfer,
            file_id: Mutex::new(None),
            events: self.events.clone(),
        });
        if let (Some(id), Ok(mut ops)) = (id, self.ops.lock()) {
            ops.retain(|_, (_, fin)| fin.is_none_or(|t| t.elapsed() < KEEP_FINISHED));
            if ops.len() < MAX_OPS {
                ops.insert(id, (op.clone(), None));
            }
        }
        self.running.fetch_add(1, Ordering::Relaxed);
        op.phase(phase);
        Guard {
            op,
            reg: self.clone(),
            ended: AtomicBool::new(false),
        }
    }

    pub fn get(&self, id: &str) -> Option<p2pstore_rpc::Progress> {
        let ops = self.ops.lock().ok()?;
        let (op, _) = ops.get(id)?;
        Some(p2pstore_rpc::Progress {
            done_bytes: op.done.load(Ordering::Relaxed),
            total_bytes: op.total.load(Ordering::Relaxed),
            finished: op.finished.load(Ordering::Relaxed),
            phase: op.current_phase(),
        })
    }
}
