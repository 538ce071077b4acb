//! Runs blocking work (sled flushes, fsyncs, whole-tree scans, wallet
//! persistence) without stalling the async workers.
//!
//! Most of that work sits deep in synchronous code (a `Tree::insert` that
//! must be durable before it returns), so it cannot move to
//! `spawn_blocking` without making every caller async. Tokio's
//! `block_in_place` is made for exactly this: it hands the worker's other
//! tasks to a fresh thread before the call blocks, so a slow disk delays
//! only the task that waits on it. On a runtime where that is not allowed
//! (a current-thread runtime, as unit tests use) or outside any runtime,
//! the work runs inline, which is all such a caller could do anyway.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f`, which may block, without holding up other tasks.
pub fn run<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// With one worker, a task that blocks through [`super::run`] must
    /// leave the other tasks running; a plain blocking call stops them.
    fn ticks_while_blocked(through_run: bool) -> u64 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async move {
            let ticks = Arc::new(AtomicU64::new(0));
            let t = ticks.clone();
            let ticker = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    t.fetch_add(1, Ordering::Relaxed);
                }
            });
            // Let the ticker start on the only worker.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let during = tokio::spawn(async move {
                let before = ticks.load(Ordering::Relaxed);
                let block = || std::thread::sleep(Duration::from_millis(300));
                if through_run {
                    super::run(block);
                } else {
                    block();
                }
                ticks.load(Ordering::Relaxed) - before
            })
            .await
            .unwrap();
            ticker.abort();
            during
        })
    }

    #[test]
    fn blocking_work_leaves_the_workers_free() {
        let free = ticks_while_blocked(true);
        let stalled = ticks_while_blocked(false);
        assert!(free >= 20, "only {free} ticks while blocked through run");
        assert!(stalled <= 1, "{stalled} ticks while the only worker slept");
    }

    #[tokio::test]
    async fn runs_inline_on_a_current_thread_runtime() {
        assert_eq!(super::run(|| 7), 7);
    }

    #[test]
    fn runs_outside_a_runtime() {
        assert_eq!(super::run(|| 8), 8);
    }
}
