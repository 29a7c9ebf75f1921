//! A partition worker's right to store offsets: held from the partition's
//! assignment until its revocation, so that no offset of a partition that
//! moved is stored by its former owner.

use std::sync::{Arc, Mutex, MutexGuard};

/// A worker's right to store offsets for its partition.
#[derive(Clone)]
pub struct Lease(Arc<Mutex<bool>>);

impl Default for Lease {
    fn default() -> Lease {
        Lease::new()
    }
}

impl Lease {
    pub fn new() -> Lease {
        Lease(Arc::new(Mutex::new(true)))
    }

    fn held(&self) -> MutexGuard<'_, bool> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `store` if the lease is still held; it cannot expire meanwhile.
    pub fn store(&self, store: impl FnOnce()) {
        let held = self.held();
        if *held {
            store();
        }
    }

    /// Whether the lease is still held (it may expire right after).
    pub fn is_held(&self) -> bool {
        *self.held()
    }

    pub fn expire(&self) {
        *self.held() = false;
    }
}
