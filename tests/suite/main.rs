//! End-to-end tests: the real gateway on port 0 against real upstream servers.

mod balancing;
mod compat;
mod edge;
mod envoy;
mod examples;
mod filters;
mod forwarding;
mod grpc;
mod guards;
mod hostile;
mod limits;
mod oauth2;
mod plugins;
mod pooling;
mod rate_limit;
mod redis;
mod reload;
mod resilience;
mod routing;
mod sdk;
mod sdk_examples;
mod services;
mod shutdown;
mod slots;
mod tls;
mod workers;
