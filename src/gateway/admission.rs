//! Admission: how many model calls the gateway serves at once, and how many request body bytes
//! it holds at once across all of them. One large request costs several times its size while
//! it is decoded and re-encoded, so without these a few parallel 30 MB requests take the
//! machine's memory; past either bound a call is refused at once with a 503 and
//! `Retry-After`, in the caller's shape, which agents retry.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ir::{ApiError, ErrorKind};

pub struct Admission {
    calls: Arc<Semaphore>,
    /// In KiB, so the largest limits fit a semaphore's count.
    body_kib: Arc<Semaphore>,
    max_calls: usize,
    max_body_bytes: usize,
}

/// What a call holds until it ends: its place, and the body bytes it was let keep.
#[derive(Default)]
pub struct Held {
    _call: Option<OwnedSemaphorePermit>,
    body: Option<OwnedSemaphorePermit>,
    /// Body bytes counted so far; permits cover them rounded up to whole KiB once, so a body
    /// sent in many tiny chunks is not charged a KiB per chunk.
    bytes: usize,
}

impl Admission {
    pub fn new(max_calls: usize, max_body_bytes: usize) -> Admission {
        Admission {
            calls: Arc::new(Semaphore::new(max_calls.clamp(1, Semaphore::MAX_PERMITS))),
            body_kib: Arc::new(Semaphore::new(
                (max_body_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS),
            )),
            max_calls,
            max_body_bytes,
        }
    }

    /// A place for one model call.
    pub fn enter(&self) -> Result<Held, ApiError> {
        match self.calls.clone().try_acquire_owned() {
            Ok(permit) => Ok(Held {
                _call: Some(permit),
                ..Held::default()
            }),
            Err(_) => Err(busy(format!(
                "the gateway is serving its limit of {} model calls at once (gateway.max_in_flight); retry in a moment",
                self.max_calls
            ))),
        }
    }

    /// Let `held` keep `bytes` more of its request body.
    pub fn hold(&self, held: &mut Held, bytes: usize) -> Result<(), ApiError> {
        let total = held.bytes.saturating_add(bytes);
        let more = total.div_ceil(1024) - held.bytes.div_ceil(1024);
        let kib = u32::try_from(more).unwrap_or(u32::MAX);
        if kib == 0 {
            held.bytes = total;
            return Ok(());
        }
        let permit = self
            .body_kib
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| {
                busy(format!(
                    "the gateway is holding its limit of {} MB of request bodies (gateway.max_held_body_bytes); retry in a moment",
                    self.max_body_bytes / (1024 * 1024)
                ))
            })?;
        match &mut held.body {
            Some(existing) => existing.merge(permit),
            None => held.body = Some(permit),
        }
        held.bytes = total;
        Ok(())
    }
}

fn busy(message: String) -> ApiError {
    ApiError {
        status: 503,
        kind: ErrorKind::Overloaded,
        message,
        retry_after: Some(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_body_bytes_past_their_limits_are_refused_and_freed_when_done() {
        let admission = Admission::new(2, 100 * 1024);
        let mut first = admission.enter().unwrap();
        let _second = admission.enter().unwrap();
        assert_eq!(admission.enter().err().unwrap().status, 503);
        admission.hold(&mut first, 60 * 1024).unwrap();
        admission.hold(&mut first, 30 * 1024).unwrap();
        let mut other = Held::default();
        assert!(admission.hold(&mut other, 20 * 1024).is_err());
        drop(first);
        admission.hold(&mut other, 90 * 1024).unwrap();
        assert!(admission.enter().is_ok(), "a place was freed");
        // A body in one-byte chunks is charged its size, not a KiB per chunk.
        drop(other);
        let mut trickle = Held::default();
        for _ in 0..100 * 1024 {
            admission.hold(&mut trickle, 1).unwrap();
        }
    }
}
