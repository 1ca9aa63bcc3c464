//! Waiting for something to become true.

use std::future::Future;
use std::time::Duration;

/// How long tests wait for something that should happen "soon".
pub const WAIT: Duration = Duration::from_secs(20);

/// What a probe of [`wait_until`] answers: `true`/`false`, or `Some(value)`/`None`.
pub trait Ready {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// Polls `probe` every 20 ms until it is ready and returns its value; after [`WAIT`]
/// fails the test, saying what it waited for.
///
/// ```ignore
/// let order = wait_until("the order to be cancelled", || async { cancelled(&id).await }).await;
/// ```
#[track_caller]
pub fn wait_until<R, F, Fut>(what: &str, probe: F) -> impl Future<Output = R::Value>
where
    R: Ready,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    wait_at_most(WAIT, what, probe)
}

/// [`wait_until`] with a timeout of its own.
#[track_caller]
pub fn wait_at_most<R, F, Fut>(
    timeout: Duration,
    what: &str,
    mut probe: F,
) -> impl Future<Output = R::Value>
where
    R: Ready,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    let caller = std::panic::Location::caller();
    let what = what.to_owned();
    async move {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(value) = probe().await.ready() {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what} (at {caller})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
