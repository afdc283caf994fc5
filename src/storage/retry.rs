/*!
Retries with exponential backoff and jitter, for errors marked transient (timeouts, resets, 5xx,
throttling). Permanent errors (authentication, a missing bucket) return at once: retrying them
only delays the message a person needs to see.

Retries live at the request level of the S3 driver, the only place that can replay a request: a
part upload holds its bytes, a download resumes with a Range request from where it stopped.
*/

use std::time::Duration;

use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, including the first.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `n` (1-based): base * 2^(n-1), capped, with up to 25% jitter
    /// so that parallel part uploads do not retry in lockstep.
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX));
        let capped = exp.min(self.max_delay);
        let mut r = [0u8; 2];
        let _ = getrandom::fill(&mut r);
        let jitter = u16::from_le_bytes(r) as f64 / u16::MAX as f64 * 0.25;
        capped.mul_f64(1.0 + jitter)
    }

    /// Runs `op` until it succeeds, fails permanently, or the attempts run out. `on_retry` hears
    /// about each transient failure (for logs).
    pub fn run<T>(
        &self,
        mut op: impl FnMut() -> Result<T>,
        mut on_retry: impl FnMut(u32, &crate::Error),
    ) -> Result<T> {
        let mut n = 1;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && n < self.attempts => {
                    on_retry(n, &e);
                    std::thread::sleep(self.delay(n));
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn fast(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[test]
    fn retries_transient_errors_until_success() {
        let mut calls = 0;
        let v = fast(5)
            .run(
                || {
                    calls += 1;
                    if calls < 3 {
                        Err(Error::storage("reset").transient())
                    } else {
                        Ok(42)
                    }
                },
                |_, _| {},
            )
            .unwrap();
        assert_eq!((v, calls), (42, 3));
    }

    #[test]
    fn never_retries_permanent_errors() {
        let mut calls = 0;
        let e = fast(5)
            .run::<()>(
                || {
                    calls += 1;
                    Err(Error::storage("SignatureDoesNotMatch"))
                },
                |_, _| {},
            )
            .unwrap_err();
        assert_eq!(calls, 1);
        assert!(e.message().contains("Signature"));
    }

    #[test]
    fn gives_up_after_the_last_attempt() {
        let mut calls = 0;
        let e = fast(4)
            .run::<()>(
                || {
                    calls += 1;
                    Err(Error::storage("503").transient())
                },
                |_, _| {},
            )
            .unwrap_err();
        assert_eq!(calls, 4);
        assert!(e.is_transient());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        assert!(
            p.delay(1) >= Duration::from_millis(500) && p.delay(1) <= Duration::from_millis(625)
        );
        assert!(p.delay(3) >= Duration::from_secs(2));
        assert!(p.delay(30) <= Duration::from_secs(10));
    }
}
