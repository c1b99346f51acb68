//! The text `weir plugin test` prints: each phase with its flow, a diff of
//! its headers, its body change, the local reply, the log lines, the host
//! calls and any failure with its backtrace; then a one-line summary.

use std::fmt::Write;

use super::{FlowReport, HeaderList, PhaseReport, Report};
use crate::exchange::LocalReply;
use crate::wasm::Event;

/// The most bytes of a body shown.
const BODY_SHOWN: usize = 256;

/// The whole report as text.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for phase in &report.phases {
        phase_text(&mut out, phase);
    }
    let _ = writeln!(out, "summary: {}", report.summary());
    out
}

fn phase_text(out: &mut String, phase: &PhaseReport) {
    let label = phase.stage.label();
    if let Some(why) = phase.skipped {
        let _ = writeln!(out, "== {label}: not run ({why})");
        return;
    }
    match &phase.flow {
        Some(flow) => {
            let _ = writeln!(out, "== {label}: {}", flow_text(flow));
        }
        None => {
            let _ = writeln!(out, "== {label}");
        }
    }
    if let Some((before, after)) = &phase.headers {
        let diff = diff(before, after);
        if diff.is_empty() {
            let _ = writeln!(out, "  headers: unchanged");
        } else {
            let _ = writeln!(out, "  headers:");
            for line in diff {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    if let Some((before, after)) = &phase.body {
        if before == after {
            let _ = writeln!(out, "  body: unchanged ({} bytes)", before.len());
        } else {
            let _ = writeln!(
                out,
                "  body: changed, {} → {} bytes\n    - {}\n    + {}",
                before.len(),
                after.len(),
                shown(before),
                shown(after)
            );
        }
    }
    if let Some(reply) = &phase.local_reply {
        reply_text(out, reply);
    }
    let logs: Vec<_> = phase
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Log { level, message } => Some((level, message)),
            _ => None,
        })
        .collect();
    if !logs.is_empty() {
        let _ = writeln!(out, "  log:");
        for (level, message) in logs {
            let _ = writeln!(out, "    [{level}] {message}");
        }
    }
    let calls: Vec<_> = phase
        .events
        .iter()
        .filter(|e| matches!(e, Event::Call { .. } | Event::Truncated))
        .collect();
    if !calls.is_empty() {
        let _ = writeln!(out, "  host calls:");
        for call in calls {
            match call {
                Event::Call {
                    name,
                    arguments,
                    result,
                } => {
                    let _ = writeln!(out, "    {name}({arguments}) → {result}");
                }
                _ => {
                    let _ = writeln!(out, "    … (too many events; the rest were dropped)");
                }
            }
        }
    }
    for event in &phase.events {
        if let Event::Failure(description) = event {
            let _ = writeln!(out, "  failure:");
            for line in description.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
}

fn flow_text(flow: &FlowReport) -> String {
    match flow {
        FlowReport::Continue => "continue".into(),
        FlowReport::Pause { woken: true } => "pause, then resumed by the filter".into(),
        FlowReport::Pause { woken: false } => "pause, not resumed in time".into(),
        FlowReport::Buffer => "buffer".into(),
        FlowReport::LocalReply => "local reply".into(),
        FlowReport::Closed => "closed the stream".into(),
        FlowReport::Failed(reason) => format!("failure: {reason}"),
    }
}

fn reply_text(out: &mut String, reply: &LocalReply) {
    let _ = writeln!(out, "  local reply: {}", reply.status);
    for (name, value) in &reply.headers {
        let _ = writeln!(out, "    {name}: {}", String::from_utf8_lossy(value));
    }
    if !reply.details.is_empty() {
        let _ = writeln!(out, "    details: {}", reply.details);
    }
    let _ = writeln!(out, "    body: {}", shown(&reply.body));
}

/// A body as quoted text, cut at [`BODY_SHOWN`] bytes.
fn shown(body: &[u8]) -> String {
    let cut = &body[..body.len().min(BODY_SHOWN)];
    let text = format!("{:?}", String::from_utf8_lossy(cut));
    if cut.len() < body.len() {
        format!("{text}… ({} bytes)", body.len())
    } else {
        text
    }
}

/// `+ name: value` for each header added, `- name: value` for each removed,
/// `~ name: old → new` for a single value replaced; in the order of `after`,
/// then the removed ones in the order of `before`.
fn diff(before: &HeaderList, after: &HeaderList) -> Vec<String> {
    let mut removed: Vec<&(String, String)> =
        before.iter().filter(|h| !after.contains(h)).collect();
    let added: Vec<&(String, String)> = after.iter().filter(|h| !before.contains(h)).collect();
    let count =
        |list: &[&(String, String)], name: &str| list.iter().filter(|h| h.0 == name).count();
    let mut lines = Vec::new();
    for (name, value) in &added {
        if count(&added, name) == 1 && count(&removed, name) == 1 {
            let old = removed
                .iter()
                .position(|h| &h.0 == name)
                .map(|at| removed.remove(at).1.clone())
                .unwrap_or_default();
            lines.push(format!("~ {name}: {old} → {value}"));
        } else {
            lines.push(format!("+ {name}: {value}"));
        }
    }
    lines.extend(
        removed
            .iter()
            .map(|(name, value)| format!("- {name}: {value}")),
    );
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, &str)]) -> HeaderList {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_header_diff_shows_added_removed_and_changed_lines() {
        let before = list(&[(":path", "/a"), ("x-user", "ann"), ("accept", "*/*")]);
        let after = list(&[(":path", "/b"), ("accept", "*/*"), ("x-checked", "yes")]);
        assert_eq!(
            diff(&before, &after),
            ["~ :path: /a → /b", "+ x-checked: yes", "- x-user: ann"]
        );
        assert!(diff(&before, &before).is_empty());
    }
}
