//! Checks what needs the whole manifest and builds the validated [`Manifest`].
//!
//! Names must be unique, references must resolve, each route must do exactly one
//! thing, and files it names must be regular files within their size caps
//! (a plugin's module may be a built-in instead).
//! Every problem is recorded, not just the first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::access_log::AccessLogPath;
use super::decode::{Diagnostics, Located};
use super::file::{self, MAX_PEM_BYTES, MAX_PLUGIN_BYTES};
use super::model::{
    Certificate, Discovery, FilterRef, FixedResponse, Listener, ListenerId, ListenerTls, Manifest,
    Mirror, PathMatch, PathRewrite, Plugin, PluginId, PluginModule, Redis, Rewrite, Route,
    RouteAction, Split, Upstream, UpstreamId, UpstreamTls,
};
use super::node::Location;
use super::raw::{
    RawFilter, RawListener, RawManifest, RawModule, RawPlugin, RawRoute, RawSplit, RawTarget,
    RawUpstream,
};

/// The only manifest version this build understands.
pub const API_VERSION: &str = "weir/v1";

/// Default time a graceful shutdown waits for in-flight requests.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Validates `raw`; relative file paths are resolved against `base_dir`.
pub fn validate(
    raw: RawManifest,
    source: &Path,
    base_dir: &Path,
    diags: &mut Diagnostics,
) -> Option<Manifest> {
    if let Some(version) = &raw.api_version
        && version.value != API_VERSION
    {
        diags.error(
            version.location,
            format!(
                "unsupported apiVersion `{}`; this Weir reads `{API_VERSION}`",
                version.value
            ),
        );
    }
    let raw_listeners = raw.listeners.unwrap_or_default();
    let listener_ids = index_names(raw_listeners.iter().map(|l| &l.name), "listener", diags);
    let upstream_ids = index_names(raw.upstreams.iter().map(|u| &u.name), "upstream", diags);
    index_names(raw.routes.iter().map(|r| &r.name), "route", diags);
    let plugins_by_name = PluginIndex {
        ids: index_names(raw.plugins.iter().map(|p| &p.name), "plugin", diags),
        root_ids: raw.plugins.iter().map(default_root_id).collect(),
    };
    let redis_ids = index_names(raw.redis.iter().map(|r| &r.name), "Redis service", diags);
    let redis: Vec<Option<Redis>> = raw
        .redis
        .into_iter()
        .map(|r| {
            Some(Redis {
                name: r.name.value,
                url: r.url?,
                timeout: r.timeout,
            })
        })
        .collect();
    let global_filters = filters(raw.global_filters, &plugins_by_name, diags);
    let plugins: Vec<Option<Plugin>> = raw
        .plugins
        .into_iter()
        .map(|p| plugin(p, &redis_ids, base_dir, diags))
        .collect();
    check_shared_vm_ids(&plugins, diags);

    let listeners: Vec<Option<Listener>> = raw_listeners
        .into_iter()
        .map(|l| listener(l, base_dir, diags))
        .collect();
    let upstreams: Vec<Option<Upstream>> = raw
        .upstreams
        .into_iter()
        .map(|u| upstream(u, base_dir, diags))
        .collect();
    let routes: Vec<Option<Route>> = raw
        .routes
        .into_iter()
        .map(|r| route(r, &listener_ids, &upstream_ids, &plugins_by_name, diags))
        .collect();
    let routes: Option<Vec<Route>> = routes.into_iter().collect();
    let admin = raw.admin.map(|admin| {
        admin.resolve(|path, kind| checked_file(path, kind, MAX_PEM_BYTES, base_dir, diags))
    });

    super::consumers::check_unique(&raw.consumers, diags);

    if !diags.is_empty() {
        return None;
    }
    Some(Manifest {
        source: source.to_path_buf(),
        listeners: listeners.into_iter().collect::<Option<_>>()?,
        upstreams: upstreams.into_iter().collect::<Option<_>>()?,
        routes: routes?,
        plugins: plugins.into_iter().collect::<Option<_>>()?,
        global_filters,
        redis: redis.into_iter().collect::<Option<_>>()?,
        shutdown_timeout: raw
            .shutdown_timeout
            .map_or(DEFAULT_SHUTDOWN_TIMEOUT, |d| d.0),
        admin,
        consumers: raw.consumers.into_iter().map(|c| c.value).collect(),
        access_log: raw.access_log.map_or_else(Default::default, |mut log| {
            if let AccessLogPath::File(path) = &mut log.path
                && path.is_relative()
            {
                *path = base_dir.join(&*path);
            }
            log
        }),
        tracing: raw.tracing,
    })
}

/// Plugins that share a `vm_id` share one store of shared data, which can be
/// tiered onto one Redis service only.
fn check_shared_vm_ids(plugins: &[Option<Plugin>], diags: &mut Diagnostics) {
    let mut tiers: HashMap<&str, (&str, Option<&str>)> = HashMap::new();
    for plugin in plugins.iter().flatten() {
        let tier = plugin.shared_data_tier.as_deref();
        match tiers.get(plugin.vm_id.as_str()) {
            Some(&(first, first_tier)) if first_tier != tier => diags.error(
                plugin.location,
                format!(
                    "plugin `{}` shares vm_id `{}` with plugin `{first}` but not its \
                     shared_data_tier; plugins of one vm_id share one store",
                    plugin.name, plugin.vm_id
                ),
            ),
            Some(_) => {}
            None => {
                tiers.insert(&plugin.vm_id, (&plugin.name, tier));
            }
        }
    }
}

/// Maps each name to its index, recording duplicates.
fn index_names<'a>(
    names: impl Iterator<Item = &'a Located<String>>,
    kind: &str,
    diags: &mut Diagnostics,
) -> HashMap<String, usize> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut first_seen: HashMap<&str, u64> = HashMap::new();
    for (i, name) in names.enumerate() {
        if name.value.is_empty() {
            diags.error(name.location, format!("a {kind} name must not be empty"));
        } else if let Some(line) = first_seen.get(name.value.as_str()) {
            diags.error(
                name.location,
                format!(
                    "duplicate {kind} name `{}` (first defined on line {line})",
                    name.value
                ),
            );
        } else {
            first_seen.insert(&name.value, name.location.line);
            index.insert(name.value.clone(), i);
        }
    }
    index
}

fn listener(raw: RawListener, base_dir: &Path, diags: &mut Diagnostics) -> Option<Listener> {
    let tls = raw.tls.map(|tls| {
        let certificates = tls
            .certificates
            .into_iter()
            .map(|c| Certificate {
                cert: checked_file(&c.cert, "certificate", MAX_PEM_BYTES, base_dir, diags),
                key: checked_file(&c.key, "key", MAX_PEM_BYTES, base_dir, diags),
                server_names: c
                    .server_names
                    .into_iter()
                    .map(|n| n.value.to_ascii_lowercase())
                    .collect(),
            })
            .collect();
        ListenerTls { certificates }
    });
    Some(Listener {
        name: raw.name.value,
        address: raw.address?,
        tls,
        limits: raw.limits,
        paths: raw.paths,
    })
}

/// Resolves `path` against `base_dir`, recording it when it is not a regular
/// file of at most `cap` bytes (checked without opening it).
fn checked_file(
    path: &Located<String>,
    kind: &str,
    cap: u64,
    base_dir: &Path,
    diags: &mut Diagnostics,
) -> PathBuf {
    let resolved = base_dir.join(&path.value);
    if let Err(reason) = file::check(&resolved, cap) {
        diags.error(
            path.location,
            format!("{kind} file `{}` {reason}", resolved.display()),
        );
    }
    resolved
}

fn upstream(raw: RawUpstream, base_dir: &Path, diags: &mut Diagnostics) -> Option<Upstream> {
    let mut pem =
        |path: &Located<String>, kind| checked_file(path, kind, MAX_PEM_BYTES, base_dir, diags);
    let tls = raw.tls.map(|tls| UpstreamTls {
        server_name: tls.server_name.map(|n| n.value.to_ascii_lowercase()),
        ca: tls.ca.as_ref().map(|ca| pem(ca, "CA")),
        client: tls
            .cert
            .as_ref()
            .zip(tls.key.as_ref())
            .map(|(cert, key)| (pem(cert, "certificate"), pem(key, "key"))),
    });
    let targets = raw.targets?;
    let mut discovery = raw.discovery;
    if let Some(Discovery::File(file)) = &mut discovery {
        file.path = base_dir.join(&file.path);
    }
    Some(Upstream {
        name: raw.name.value,
        targets: targets.into_iter().map(RawTarget::into_target).collect(),
        lb: raw.lb,
        timeouts: raw.timeouts,
        retries: raw.retries,
        metadata: raw.metadata,
        tls,
        health: raw.health,
        slow_start: raw.slow_start.map(|d| d.0),
        circuit_breaker: raw.circuit_breaker,
        protocol: raw.protocol,
        discovery,
    })
}

fn plugin(
    raw: RawPlugin,
    redis_ids: &HashMap<String, usize>,
    base_dir: &Path,
    diags: &mut Diagnostics,
) -> Option<Plugin> {
    if let Some(tier) = &raw.shared_data_tier
        && !redis_ids.contains_key(&tier.value)
    {
        diags.error(
            tier.location,
            format!(
                "plugin `{}` tiers its shared data onto unknown Redis service `{}`",
                raw.name.value, tier.value
            ),
        );
    }
    let module = match raw.module? {
        RawModule::File(file) => PluginModule::File(checked_file(
            &file,
            "plugin",
            MAX_PLUGIN_BYTES,
            base_dir,
            diags,
        )),
        RawModule::Builtin(builtin) => PluginModule::Builtin(builtin),
    };
    let vm_id = raw
        .vm_id
        .map_or_else(|| raw.name.value.clone(), |id| id.value);
    Some(Plugin {
        vm_id,
        name: raw.name.value,
        module,
        memory_bytes: raw.memory,
        callback_deadline: raw.callback_deadline,
        quotas: raw.quotas,
        on_error: raw.on_error,
        vms: raw.vms,
        shared_data_tier: raw.shared_data_tier.map(|t| t.value),
        vm_config: raw.vm_config,
        location: raw.name.location,
    })
}

/// The plugins filters can name: each one's index, and the root id its
/// filters use when they name none.
struct PluginIndex {
    ids: HashMap<String, usize>,
    root_ids: Vec<String>,
}

/// A plugin's `root_id`, else its name. Envoy's default is the empty root id;
/// Weir's is the name, so a module whose root context is registered under its
/// plugin's name (as plugins were named before `root_id` existed) keeps it.
fn default_root_id(plugin: &RawPlugin) -> String {
    plugin
        .root_id
        .as_ref()
        .map_or_else(|| plugin.name.value.clone(), |r| r.value.clone())
}

/// Resolves filters' plugin names and root ids.
fn filters(raw: Vec<RawFilter>, plugins: &PluginIndex, diags: &mut Diagnostics) -> Vec<FilterRef> {
    raw.into_iter()
        .filter_map(|f| match plugins.ids.get(&f.plugin.value) {
            Some(&i) => Some(FilterRef {
                plugin: PluginId(i),
                config: f.config,
                root_id: f.root_id.map_or_else(
                    || plugins.root_ids.get(i).cloned().unwrap_or_default(),
                    |r| r.value,
                ),
                location: f.plugin.location,
                config_places: f.config_places,
            }),
            None => {
                diags.error(
                    f.plugin.location,
                    format!("filter names unknown plugin `{}`", f.plugin.value),
                );
                None
            }
        })
        .collect()
}

fn route(
    raw: RawRoute,
    listener_ids: &HashMap<String, usize>,
    upstream_ids: &HashMap<String, usize>,
    plugins: &PluginIndex,
    diags: &mut Diagnostics,
) -> Option<Route> {
    let route_filters = filters(raw.filters, plugins, diags);
    let mut listeners = Vec::with_capacity(raw.listeners.len());
    for name in &raw.listeners {
        match listener_ids.get(&name.value) {
            Some(&i) => listeners.push(ListenerId(i)),
            None => diags.error(
                name.location,
                format!(
                    "route `{}` names unknown listener `{}`",
                    raw.name.value, name.value
                ),
            ),
        }
    }
    let action = action(
        &raw.name.value,
        raw.location,
        raw.upstream,
        raw.split,
        raw.respond,
        upstream_ids,
        diags,
    );
    let action = match (action, raw.sticky) {
        (Some(RouteAction::Split(mut split)), Some(sticky)) => {
            split.sticky = Some(sticky.value);
            Some(RouteAction::Split(split))
        }
        (action, Some(sticky)) => {
            diags.error(
                sticky.location,
                format!(
                    "route `{}` has `sticky` but no `split`; stickiness chooses among a split's upstreams",
                    raw.name.value
                ),
            );
            action
        }
        (action, None) => action,
    };
    let mirror = raw.mirror.and_then(|m| {
        if matches!(action, Some(RouteAction::Respond(_))) {
            diags.error(
                m.upstream.location,
                format!(
                    "route `{}` answers by itself (`respond`); only a forwarding route can be mirrored",
                    raw.name.value
                ),
            );
        }
        let upstream = known_upstream(&raw.name.value, &m.upstream, upstream_ids, diags)?;
        Some(Mirror {
            upstream,
            percent: m.percent,
            max_body_bytes: m.max_body_bytes,
            timeout: m.timeout,
            max_in_flight: m.max_in_flight,
        })
    });
    if let Some(path) = &raw.rewrite.path
        && matches!(path.value, PathRewrite::ReplacePrefix(_))
        && !matches!(raw.matcher.path, PathMatch::Prefix(_))
    {
        diags.error(
            path.location,
            format!(
                "route `{}` uses `replace_prefix` but matches its path with `{}`; \
                 `replace_prefix` needs a path `prefix` match",
                raw.name.value,
                match raw.matcher.path {
                    PathMatch::Exact(_) => "exact",
                    PathMatch::Regex(_) => "regex",
                    PathMatch::Prefix(_) => "prefix",
                }
            ),
        );
    }
    if matches!(action, Some(RouteAction::Respond(_)))
        && (raw.retry.is_some() || raw.fallback.is_some())
    {
        diags.error(
            raw.location,
            format!(
                "route `{}` answers by itself: `retry` and `fallback` only apply to an `upstream`",
                raw.name.value
            ),
        );
    }
    Some(Route {
        name: raw.name.value,
        listeners,
        matcher: raw.matcher,
        action: action?,
        rewrite: Rewrite {
            path: raw.rewrite.path.map(|p| p.value),
            host: raw.rewrite.host,
        },
        timeout: raw.timeout.map(|d| d.0),
        retry: raw.retry,
        fallback: raw.fallback,
        filters: route_filters,
        metadata: raw.metadata,
        mirror,
        websocket: raw.websocket,
    })
}

/// The upstream group `name` names, recording an unknown one.
fn known_upstream(
    route: &str,
    name: &Located<String>,
    upstream_ids: &HashMap<String, usize>,
    diags: &mut Diagnostics,
) -> Option<UpstreamId> {
    if let Some(&i) = upstream_ids.get(&name.value) {
        return Some(UpstreamId(i));
    }
    diags.error(
        name.location,
        format!("route `{route}` names unknown upstream `{}`", name.value),
    );
    None
}

/// What a route does: exactly one of `upstream`, `split` and `respond`.
fn action(
    route: &str,
    location: Location,
    upstream: Option<Located<String>>,
    split: Option<Option<RawSplit>>,
    respond: Option<Option<FixedResponse>>,
    upstream_ids: &HashMap<String, usize>,
    diags: &mut Diagnostics,
) -> Option<RouteAction> {
    let given: Vec<&'static str> = [
        upstream.is_some().then_some("`upstream`"),
        split.is_some().then_some("`split`"),
        respond.is_some().then_some("`respond`"),
    ]
    .into_iter()
    .flatten()
    .collect();
    match (upstream, split, respond) {
        (Some(upstream), None, None) => {
            known_upstream(route, &upstream, upstream_ids, diags).map(RouteAction::Forward)
        }
        (None, Some(split), None) => {
            weighted_split(route, split?, upstream_ids, diags).map(RouteAction::Split)
        }
        (None, None, Some(response)) => response.map(RouteAction::Respond),
        (None, None, None) => {
            diags.error(
                location,
                format!("route `{route}` needs `upstream`, `split` or `respond`"),
            );
            None
        }
        _ => {
            let both = match given.as_slice() {
                [first, second] => format!("both {first} and {second}"),
                _ => "`upstream`, `split` and `respond`".to_owned(),
            };
            diags.error(location, format!("route `{route}` has {both}; pick one"));
            None
        }
    }
}

/// A route's split: every upstream known and named once, weights with a
/// positive sum.
fn weighted_split(
    route: &str,
    raw: RawSplit,
    upstream_ids: &HashMap<String, usize>,
    diags: &mut Diagnostics,
) -> Option<Split> {
    let mut groups = Vec::with_capacity(raw.groups.len());
    let mut valid = raw.complete;
    for entry in &raw.groups {
        let Some(id) = known_upstream(route, &entry.upstream, upstream_ids, diags) else {
            valid = false;
            continue;
        };
        if groups.iter().any(|&(seen, _)| seen == id) {
            diags.error(
                entry.upstream.location,
                format!(
                    "route `{route}` names upstream `{}` twice in its split",
                    entry.upstream.value
                ),
            );
            valid = false;
        }
        groups.push((id, entry.weight));
    }
    if valid && groups.iter().all(|&(_, weight)| weight == 0) {
        diags.error(
            raw.location,
            format!("route `{route}` splits by weights that are all 0; give one a weight above 0"),
        );
        valid = false;
    }
    valid.then_some(Split {
        groups,
        sticky: None,
    })
}
