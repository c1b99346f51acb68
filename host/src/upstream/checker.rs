//! Active health checks: every interval, each target of a group is probed
//! (a TCP connect, or an HTTP `GET` whose status must be one the check
//! accepts) on a connection of its own, and its health records the result.
//! The task ends when its group is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Request, header};
use tokio::task::JoinSet;

use super::UpstreamGroup;
use super::health::Transition;
use super::pool::connect_tcp;
use super::target::TargetState;
use crate::body;
use crate::config::model::{ActiveCheck, ProbeKind};

/// Probes `group`'s targets every `check.interval` until the group is gone.
pub async fn run(group: Weak<UpstreamGroup>, check: ActiveCheck) {
    let mut interval = tokio::time::interval(check.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let check = Arc::new(check);
    loop {
        interval.tick().await;
        let Some(group) = group.upgrade() else {
            return;
        };
        let name: Arc<str> = group.name().into();
        let targets = group.targets.load_full();
        drop(group);
        let mut probes = JoinSet::new();
        for target in &targets.targets {
            let (target, check, name) = (Arc::clone(target), Arc::clone(&check), name.clone());
            probes.spawn(async move {
                let passed = probe(&target, &check).await;
                report(
                    &name,
                    &target,
                    target.health.record_probe(passed.is_ok(), &check),
                    passed,
                );
            });
        }
        while probes.join_next().await.is_some() {}
    }
}

/// Logs a target going out of rotation or coming back.
fn report(
    group: &str,
    target: &TargetState,
    transition: Option<Transition>,
    probe: Result<(), String>,
) {
    match transition {
        Some(Transition::ProbedDown) => tracing::warn!(
            upstream = group,
            target = %target.address,
            reason = probe.err().unwrap_or_default(),
            "target failed its health checks: out of rotation"
        ),
        Some(Transition::ProbedUp) => tracing::info!(
            upstream = group,
            target = %target.address,
            "target passed its health checks: back in rotation"
        ),
        _ => {}
    }
}

/// One probe of `target`, within the check's timeout: why it failed, if it did.
async fn probe(target: &TargetState, check: &ActiveCheck) -> Result<(), String> {
    let attempt = async {
        match &check.kind {
            ProbeKind::Tcp => connect_tcp(target.connections.target(), check.timeout)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            ProbeKind::Http { path, .. } => {
                let request = Request::get(path.as_str())
                    .header(header::HOST, target.connections.target().as_str())
                    .header(header::USER_AGENT, "weir-health-check")
                    .body(body::empty())
                    .map_err(|e| e.to_string())?;
                let status = (target.connections.probe(request).await)
                    .map_err(|e| e.to_string())?
                    .as_u16();
                if check.kind.accepts(status) {
                    Ok(())
                } else {
                    Err(format!("it answered {status}"))
                }
            }
        }
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer within {}ms",
            Duration::as_millis(&check.timeout)
        )),
    }
}
