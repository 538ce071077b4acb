//! Crash injection for tests: `P2PSTORE_FAILPOINT=<name>` makes the daemon
//! abort at the named point, so tests can prove recovery from a crash at the
//! worst moment (e.g. between broadcasting a payment and recording it).
//!
//! Only with the cargo feature `failpoints` (the end-to-end tests turn it on
//! through the tests crate's dependency): without it `hit` is empty and
//! inlined away, so release binaries neither read the environment on hot
//! paths nor can be made to abort by it. A name that matches no point does
//! nothing.

/// Environment variable naming the failpoint to abort at.
pub const ENV: &str = "P2PSTORE_FAILPOINT";

#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    if std::env::var(ENV).is_ok_and(|v| v == name) {
        tracing::error!(failpoint = name, "failpoint hit: aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    const POINT: &str = "failpoint-unit-test";

    /// Runs this test again in a child process with the failpoint set: with
    /// the feature the child must die by SIGABRT at `hit`, without it it
    /// must run past it.
    #[test]
    fn aborts_only_with_the_feature() {
        if std::env::var(ENV).is_ok_and(|v| v == POINT) {
            hit(POINT);
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "failpoint::tests::aborts_only_with_the_feature"])
            .args(["--test-threads", "1"])
            .env(ENV, POINT)
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        if cfg!(feature = "failpoints") {
            assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
        } else {
            assert!(out.status.success(), "{out:?}");
        }
    }
}
