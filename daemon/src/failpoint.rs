//! Crash injection for tests: `P2PSTORE_FAILPOINT=<name>` makes the daemon
//! abort at the named point, so tests can prove recovery from a crash at the
//! worst moment (e.g. between broadcasting a payment and recording it).
//! Unset in production; a name that matches no point does nothing.

pub fn hit(name: &str) {
    if std::env::var("P2PSTORE_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::error!(failpoint = name, "failpoint hit: aborting");
        std::process::abort();
    }
}
