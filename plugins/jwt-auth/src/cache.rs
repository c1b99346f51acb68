//! Verified tokens remembered per VM, as Envoy's `jwt_authn` does: a client
//! that sends the same token again skips the signature check, while the
//! time window is still checked on every request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::{Map, Value};

use crate::token::Window;

/// A token whose signature and claims checked out.
pub struct Verified {
    /// Its claims.
    pub claims: Map<String, Value>,
    /// Its `exp` and `nbf`.
    pub window: Window,
}

/// Up to `capacity` verified tokens, by their exact text.
pub struct Cache {
    capacity: usize,
    tokens: RefCell<HashMap<String, Rc<Verified>>>,
}

impl Cache {
    /// A cache of `capacity` tokens (0: none are remembered).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            tokens: RefCell::new(HashMap::new()),
        }
    }

    /// The verification of `token`, if remembered.
    pub fn get(&self, token: &str) -> Option<Rc<Verified>> {
        self.tokens.borrow().get(token).cloned()
    }

    /// Forgets `token` (its window has closed).
    pub fn forget(&self, token: &str) {
        self.tokens.borrow_mut().remove(token);
    }

    /// Remembers `token`; when full, an arbitrary entry makes room.
    pub fn remember(&self, token: &str, verified: Rc<Verified>) {
        if self.capacity == 0 {
            return;
        }
        let mut tokens = self.tokens.borrow_mut();
        if tokens.len() >= self.capacity
            && let Some(evicted) = tokens.keys().next().cloned()
        {
            tokens.remove(&evicted);
        }
        tokens.insert(token.to_owned(), verified);
    }
}
