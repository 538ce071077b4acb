//! Live events: what the services report as it happens. One call,
//! [`Events::emit`], counts the event in the metrics and hands it to every
//! `subscribe_events` subscriber, so the counters and the stream can never
//! disagree about what happened.

use std::time::{SystemTime, UNIX_EPOCH};

use p2pstore_rpc::{Event, EventKind};
use tokio::sync::broadcast;

use crate::metrics::Metrics;

/// Events kept for a subscriber that reads slower than they come; one
/// that falls further behind is told how many it missed.
pub const EVENT_BUFFER: usize = 1024;

#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    metrics: Metrics,
}

impl Events {
    pub fn new(metrics: Metrics) -> Self {
        let (tx, _) = broadcast::channel(EVENT_BUFFER);
        Events { tx, metrics }
    }

    /// Counts `kind` and sends it to the subscribers, if any.
    pub fn emit(&self, kind: EventKind) {
        self.metrics.record(&kind);
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // No subscriber is not an error: the metrics counted it.
        let _ = self.tx.send(Event { time_ms, kind });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
