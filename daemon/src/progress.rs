//! Progress of long transfers, keyed by a caller-chosen op id, so a CLI can
//! draw a progress bar while its put or get call is still running.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAX_OPS: usize = 1024;
const KEEP_FINISHED: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Op {
    pub done: AtomicU64,
    pub total: AtomicU64,
    finished: AtomicBool,
}

impl Op {
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

/// An op and, once it ended, when.
type Entry = (Arc<Op>, Option<Instant>);

#[derive(Clone, Default)]
pub struct Registry {
    ops: Arc<Mutex<HashMap<String, Entry>>>,
}

/// Marks the op finished when the transfer ends, however it ends.
pub struct Guard {
    op: Arc<Op>,
    id: Option<String>,
    reg: Registry,
}

impl std::ops::Deref for Guard {
    type Target = Op;
    fn deref(&self) -> &Op {
        &self.op
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.op.finished.store(true, Ordering::Relaxed);
        if let (Some(id), Ok(mut ops)) = (self.id.take(), self.reg.ops.lock())
            && let Some(entry) = ops.get_mut(&id)
        {
            entry.1 = Some(Instant::now());
        }
    }
}

impl Registry {
    pub fn start(&self, id: Option<String>, total: u64) -> Guard {
        let op = Arc::new(Op::default());
        op.total.store(total, Ordering::Relaxed);
        if let (Some(id), Ok(mut ops)) = (id.as_ref(), self.ops.lock()) {
            ops.retain(|_, (_, fin)| fin.is_none_or(|t| t.elapsed() < KEEP_FINISHED));
            if ops.len() < MAX_OPS {
                ops.insert(id.clone(), (op.clone(), None));
            }
        }
        Guard {
            op,
            id,
            reg: self.clone(),
        }
    }

    pub fn get(&self, id: &str) -> Option<p2pstore_rpc::Progress> {
        let ops = self.ops.lock().ok()?;
        let (op, _) = ops.get(id)?;
        Some(p2pstore_rpc::Progress {
            done_bytes: op.done.load(Ordering::Relaxed),
            total_bytes: op.total.load(Ordering::Relaxed),
            finished: op.finished.load(Ordering::Relaxed),
        })
    }
}
