//! Checks what needs the whole manifest and builds the validated [`Manifest`].
//!
//! Names must be unique, references must resolve, each route must do exactly one
//! thing, and files it names must be regular files within their size caps
//! (a plugin's module may be a built-in instead).
//! Every problem is recorded, not just the first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::decode::{Diagnostics, Located};
use super::file::{self, MAX_PEM_BYTES, MAX_PLUGIN_BYTES};
use super::model::{
    Certificate, FilterRef, Listener, ListenerId, ListenerTls, Manifest, PathMatch, PathRewrite,
    Plugin, PluginId, PluginModule, Redis, Rewrite, Route, RouteAction, Target, Upstream,
    UpstreamId, UpstreamTls,
};
use super::raw::{
    RawFilter, RawListener, RawManifest, RawModule, RawPlugin, RawRoute, RawUpstream,
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
    Some(Upstream {
        name: raw.name.value,
        targets: targets
            .into_iter()
            .map(|t| Target {
                address: t.address,
                weight: t.weight,
            })
            .collect(),
        lb: raw.lb,
        timeouts: raw.timeouts,
        retries: raw.retries,
        metadata: raw.metadata,
        tls,
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
    let action = match (raw.upstream, raw.respond) {
        (Some(upstream), None) => match upstream_ids.get(&upstream.value) {
            Some(&i) => Some(RouteAction::Forward(UpstreamId(i))),
            None => {
                diags.error(
                    upstream.location,
                    format!(
                        "route `{}` names unknown upstream `{}`",
                        raw.name.value, upstream.value
                    ),
                );
                None
            }
        },
        (None, Some(response)) => response.map(RouteAction::Respond),
        (Some(_), Some(_)) => {
            diags.error(
                raw.location,
                format!(
                    "route `{}` has both `upstream` and `respond`; pick one",
                    raw.name.value
                ),
            );
            None
        }
        (None, None) => {
            diags.error(
                raw.location,
                format!("route `{}` needs `upstream` or `respond`", raw.name.value),
            );
            None
        }
    };
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
        filters: route_filters,
        metadata: raw.metadata,
    })
}
