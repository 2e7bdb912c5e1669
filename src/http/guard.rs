//! The deadline guard: whatever happens inside a request (a panic, a broker that never answers),
//! the provider gets an answer before `ack_deadline`.

use std::time::{Duration, Instant};

/// How much earlier than `ack_deadline` the safety net answers, and how much earlier again the
/// body read and the delivery must give up: a tenth of the deadline, at most 100 ms each.
pub(super) fn guard_margin(ack_deadline: Duration) -> Duration {
    (ack_deadline / 10).min(Duration::from_millis(100))
}

/// Why a guarded handler produced no answer of its own.
#[derive(Debug, PartialEq, Eq)]
pub enum GuardError {
    /// The handler panicked; the panic was caught.
    Panicked,
    /// The handler was still running at the answer deadline; it was dropped.
    Overran,
}

/// Run `work` until `answer_by`. A panic inside it, or an overrun, becomes an error instead of a
/// lost answer; an overrun is dropped on the spot so it holds no resources past the deadline.
/// The caller already runs in a task of its own per request (see `serve_providers`), so a
/// client hanging up does not cancel the work; this adds no second task.
pub async fn guarded<T, F>(answer_by: Instant, work: F) -> Result<T, GuardError>
where
    F: std::future::Future<Output = T>,
{
    use futures_util::FutureExt;
    let work = std::panic::AssertUnwindSafe(work).catch_unwind();
    match tokio::time::timeout_at(answer_by.into(), work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(GuardError::Panicked),
        Err(_) => Err(GuardError::Overran),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn guarded_turns_a_panic_into_an_error_and_keeps_running() {
        let soon = Instant::now() + Duration::from_secs(5);
        let r = guarded(soon, async {
            let v: Vec<u8> = Vec::new();
            v[std::hint::black_box(3)]
        })
        .await;
        assert_eq!(r, Err(GuardError::Panicked));
        assert_eq!(guarded(soon, async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn guarded_answers_at_the_deadline_and_aborts_the_work() {
        let finished = Arc::new(AtomicUsize::new(0));
        let f = Arc::clone(&finished);
        let started = Instant::now();
        let r = guarded(started + Duration::from_millis(200), async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            f.store(1, Ordering::SeqCst);
        })
        .await;
        assert_eq!(r, Err(GuardError::Overran));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_millis(400),
            "{took:?}"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "overrun work was aborted"
        );
    }

    #[test]
    fn guard_margin_is_a_tenth_capped_at_100ms() {
        assert_eq!(
            guard_margin(Duration::from_secs(4)),
            Duration::from_millis(100)
        );
        assert_eq!(
            guard_margin(Duration::from_millis(500)),
            Duration::from_millis(50)
        );
    }
}
