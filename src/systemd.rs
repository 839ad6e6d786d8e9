//! Tells the service manager how the server stands (`Type=notify`): `READY=1`
//! once the store is open, the keyring unlocked and the listener bound (what
//! `/readyz` answers 200 for), `RELOADING=1` … `READY=1` around a SIGHUP
//! reload, `STOPPING=1` when shutdown begins, and a `STATUS=` line with each.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing.
//! The variable survives the re-execution of `crate::startup` (only the secret
//! variables are taken out), and that re-execution keeps the pid, so the
//! notifications come from the unit's main process (`NotifyAccess=main`); the
//! `MAINPID=` sent with the first `READY=1` says so explicitly.

use sd_notify::NotifyState;

/// Startup is finished: the server answers requests from now on.
pub fn ready(status: &str) {
    send(&[
        NotifyState::Ready,
        NotifyState::MainPid(std::process::id()),
        NotifyState::Status(status),
    ]);
}

/// A configuration reload begins (finished by [`reloaded`]).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => tracing::warn!("cannot read the monotonic clock for RELOADING=1: {e}"),
    }
}

/// The reload is over (applied or refused): ready again.
pub fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Shutdown has begun.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
    }
}
