//! End-to-end tests: the real gateway on port 0 against real upstream servers.

mod balancing;
mod forwarding;
mod limits;
mod resilience;
mod routing;
mod shutdown;
mod tls;
