//! A one-value, latest-wins hand-off between two threads: the camera's frames to the loop, the
//! catalog jobs to the catalog thread. A value nobody took is replaced, and the replacement said.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A one-value, latest-wins hand-off between two threads.
pub struct Slot<T> {
    value: Mutex<Option<T>>,
    ready: Condvar,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot { value: Mutex::new(None), ready: Condvar::new() }
    }
}

impl<T> Slot<T> {
    /// Puts `v`; returns true when it replaced a value nobody took (a drop).
    pub fn put(&self, v: T) -> bool {
        let replaced = self.value.lock().unwrap_or_else(|e| e.into_inner()).replace(v).is_some();
        self.ready.notify_one();
        replaced
    }

    /// Takes the value, waiting at most `timeout`.
    pub fn take(&self, timeout: Duration) -> Option<T> {
        let guard = self.value.lock().unwrap_or_else(|e| e.into_inner());
        let (mut guard, _) =
            self.ready.wait_timeout_while(guard, timeout, |v| v.is_none()).unwrap_or_else(|e| e.into_inner());
        guard.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_keeps_only_the_latest_and_counts_replacements() {
        let slot = Slot::default();
        assert!(!slot.put(1));
        assert!(slot.put(2));
        assert_eq!(slot.take(Duration::ZERO), Some(2));
        assert_eq!(slot.take(Duration::from_millis(5)), None);
    }
}
