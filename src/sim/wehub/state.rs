//! The shared handle every route holds: one store behind a mutex that is never held across an
//! `.await`.

use std::sync::{Arc, Mutex, MutexGuard};

use super::mode::Mode;
use super::store::Store;

/// The reference control plane's state. Cheap to clone (an `Arc` inside).
#[derive(Clone, Default)]
pub struct WehubState {
    store: Arc<Mutex<Store>>,
}

impl std::fmt::Debug for WehubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WehubState").finish_non_exhaustive()
    }
}

impl WehubState {
    pub fn new() -> WehubState {
        WehubState::default()
    }

    /// A state that starts with `mode` (e.g. the secret from the demo's config).
    pub fn with_mode(mode: Mode) -> WehubState {
        let state = WehubState::new();
        state.set_mode(mode);
        state
    }

    /// The current behaviour switches.
    pub fn mode(&self) -> Mode {
        self.lock().mode.clone()
    }

    /// Replaces the behaviour switches (the whole mode, unlike `POST /__cp/mode`).
    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the store half-updated in a way that
        // matters more than losing the whole simulator, so keep serving.
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
