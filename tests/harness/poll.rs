//! Waiting for a state instead of sleeping for it: poll until a check holds,
//! with a deadline; on timeout the test fails printing what the last check saw.

use std::time::{Duration, Instant};

/// Poll `check` every `every` until it returns `Ok`, for at most `timeout`; its
/// value. On timeout, panic naming `what` with the last `Err` (what was seen).
pub(crate) fn until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    let mut polls = 0u32;
    loop {
        polls += 1;
        match check() {
            Ok(v) => return v,
            Err(seen) if started.elapsed() >= timeout => {
                panic!("waited {timeout:?} ({polls} polls) for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}
