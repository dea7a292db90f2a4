//! Which connection currently speaks for each terminal.
//!
//! A tracker that lost its link (or a cloned SIM) connects again while the old TCP connection may
//! still look alive. The newest authenticated connection wins: registering it signals the old
//! one's control, and that connection closes itself.
use std::collections::HashMap;
use std::sync::Mutex;

use super::control::{ControlRef, REPLACED};

/// The connected terminals. Only live connections have an entry: what outlives a connection (the
/// platform's serial, when the terminal was last heard from) is in the store's session facts.
#[derive(Default)]
pub struct Sessions {
    by_terminal: Mutex<HashMap<String, (u64, ControlRef)>>,
}

impl Sessions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `conn_id` the connection of `terminal_id`, closing the previous one if any.
    /// Returns true when an older connection was replaced.
    pub fn claim(&self, terminal_id: &str, conn_id: u64, close: ControlRef) -> bool {
        let old = self
            .by_terminal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(terminal_id.to_string(), (conn_id, close));
        match old {
            Some((old_id, control)) if old_id != conn_id => {
                control.control().signal(REPLACED);
                true
            }
            _ => false,
        }
    }

    /// Forgets `terminal_id` if `conn_id` still owns it (a replaced connection must not remove
    /// its successor).
    pub fn release(&self, terminal_id: &str, conn_id: u64) {
        let mut map = self.by_terminal.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(terminal_id).is_some_and(|(id, _)| *id == conn_id) {
            map.remove(terminal_id);
        }
    }

    pub fn len(&self) -> usize {
        self.by_terminal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::control::Control;
    use std::sync::Arc;

    #[test]
    fn a_new_connection_replaces_the_old_one() {
        let s = Sessions::new();
        let first = Arc::new(Control::default());
        let second = Arc::new(Control::default());
        assert!(!s.claim("1", 1, first.clone()));
        assert!(s.claim("1", 2, second.clone()));
        assert_eq!(first.bits(), REPLACED);
        assert_eq!(second.bits(), 0);
        // The replaced connection's cleanup must not evict its successor.
        s.release("1", 1);
        assert_eq!(s.len(), 1);
        s.release("1", 2);
        assert!(s.is_empty());
    }
}
