//! Service registries for the discovery tests, each on a free loopback port:
//! a DNS server (hickory-server) whose records a test changes, a real
//! `etcd`, and servers speaking Consul's and Eureka's documented HTTP APIs
//! (their real servers cannot be installed on the CI machines).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use hickory_server::Server;
use hickory_server::proto::rr::rdata::{A, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{eventually, serve};

/// The zone every record of a [`DnsServer`] lives in.
pub const DNS_ZONE: &str = "weir.test.";

/// An authoritative DNS server (UDP and TCP) for [`DNS_ZONE`] whose records
/// a test sets and changes while it runs.
pub struct DnsServer {
    /// Its address (the same port for UDP and TCP).
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    serial: AtomicUsize,
    _server: Server<Catalog>,
}

impl DnsServer {
    /// Starts the server with an empty zone.
    pub async fn start() -> anyhow::Result<Self> {
        let origin = Name::from_str(DNS_ZONE)?;
        let mut zone =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_str(&format!("ns.{DNS_ZONE}"))?,
            Name::from_str(&format!("admin.{DNS_ZONE}"))?,
            1,
            60,
            60,
            600,
            0,
        );
        zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1);
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);
        let (udp, tcp) = udp_and_tcp_on_one_port().await?;
        let addr = udp.local_addr()?;
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 16);
        Ok(Self {
            addr,
            zone,
            serial: AtomicUsize::new(1),
            _server: server,
        })
    }

    /// Makes `name` (relative to the zone) answer A records of `ips` with `ttl` seconds.
    pub async fn set_a(&self, name: &str, ips: &[Ipv4Addr], ttl: u32) -> anyhow::Result<()> {
        let name = self.name(name)?;
        let records = ips
            .iter()
            .map(|ip| Record::from_rdata(name.clone(), ttl, RData::A(A(*ip))))
            .collect();
        self.replace(name, RecordType::A, records).await
    }

    /// Makes `name` answer SRV records `(priority, weight, port, target)`,
    /// the targets relative to the zone.
    pub async fn set_srv(
        &self,
        name: &str,
        records: &[(u16, u16, u16, &str)],
        ttl: u32,
    ) -> anyhow::Result<()> {
        let name = self.name(name)?;
        let mut built = Vec::new();
        for (priority, weight, port, target) in records {
            let srv = SRV::new(*priority, *weight, *port, self.name(target)?);
            built.push(Record::from_rdata(name.clone(), ttl, RData::SRV(srv)));
        }
        self.replace(name, RecordType::SRV, built).await
    }

    fn name(&self, relative: &str) -> anyhow::Result<Name> {
        Ok(Name::from_str(&format!("{relative}.{DNS_ZONE}"))?)
    }

    async fn replace(
        &self,
        name: Name,
        kind: RecordType,
        records: Vec<Record>,
    ) -> anyhow::Result<()> {
        let serial = self.serial.fetch_add(1, Ordering::SeqCst) as u32 + 1;
        self.zone
            .records_mut()
            .await
            .remove(&RrKey::new(LowerName::new(&name), kind));
        for record in records {
            anyhow::ensure!(self.zone.upsert(record, serial).await, "record refused");
        }
        Ok(())
    }
}

/// A UDP socket and a TCP listener on the same free loopback port (a
/// port free for UDP may be taken for TCP: then another is tried).
async fn udp_and_tcp_on_one_port() -> anyhow::Result<(UdpSocket, TcpListener)> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        if let Ok(tcp) = TcpListener::bind(udp.local_addr()?).await {
            return Ok((udp, tcp));
        }
    }
    anyhow::bail!("no loopback port free for both UDP and TCP")
}

/// A real `etcd` (Debian's `etcd-server`) on free loopback ports with its
/// data in a temporary directory, stopped on drop.
pub struct EtcdServer {
    /// Its client URL, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    args: Vec<String>,
    child: Option<std::process::Child>,
    _data: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts `etcd` (installed by `scripts/test`) and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let client_port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
        let peer_port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let args = [
            "--name",
            "weir-test",
            "--data-dir",
            &data.path().display().to_string(),
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("weir-test={peer}"),
            "--log-level",
            "error",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut server = Self {
            endpoint,
            args,
            child: None,
            _data: data,
        };
        server.restart().await?;
        Ok(server)
    }

    /// Starts the server again (after [`EtcdServer::stop`]) on the same
    /// ports and data, and waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let child = std::process::Command::new("etcd")
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context(
                "cannot start etcd (on a fresh machine `scripts/test` installs etcd-server)",
            )?;
        self.child = Some(child);
        let up = eventually(Duration::from_secs(20), async || {
            self.put("weir-test/ready", "1").await.is_ok()
        })
        .await;
        if !up {
            self.stop();
            anyhow::bail!("etcd did not answer at {}", self.endpoint);
        }
        Ok(())
    }

    async fn client(&self) -> anyhow::Result<etcd_client::Client> {
        let options =
            etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        Ok(etcd_client::Client::connect([self.endpoint.as_str()], Some(options)).await?)
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.client().await?.put(key, value, None).await?;
        Ok(())
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.client().await?.delete(key, None).await?;
        Ok(())
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server speaking Consul's health API for services a test registers:
/// `GET /v1/health/service/<name>` answers the service's instances with an
/// `X-Consul-Index` header, and with `?index=N` not below the current index
/// holds the request until the index moves or `?wait=` (default 5m) runs
/// out (a blocking query). `?passing` leaves out instances that are not
/// passing.
pub struct ConsulServer {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<ConsulState>,
    task: JoinHandle<()>,
}

struct ConsulState {
    /// The catalog's index and every service's instances.
    catalog: watch::Sender<(u64, HashMap<String, Vec<ConsulInstance>>)>,
    /// Queries answered, and those that carried `?index=`.
    queries: AtomicUsize,
    blocking: AtomicUsize,
}

/// An instance of a Consul service.
#[derive(Debug, Clone)]
pub struct ConsulInstance {
    /// Its service address.
    pub addr: SocketAddr,
    /// Whether its checks pass.
    pub passing: bool,
    /// `Weights.Passing`.
    pub weight: u32,
}

impl ConsulServer {
    /// Starts the server with no services, at index 10.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ConsulState {
            catalog: watch::channel((10, HashMap::new())).0,
            queries: AtomicUsize::new(0),
            blocking: AtomicUsize::new(0),
        });
        let shared = state.clone();
        let task = serve(listener, move |req| {
            let state = shared.clone();
            async move { consul_answer(&state, req).await }
        });
        Ok(Self { addr, state, task })
    }

    /// Sets `service`'s instances; the index moves on.
    pub fn set(&self, service: &str, instances: Vec<ConsulInstance>) {
        self.state.catalog.send_modify(|(index, services)| {
            *index += 1;
            services.insert(service.to_owned(), instances);
        });
    }

    /// Queries answered so far, and how many of them were blocking queries.
    pub fn queries(&self) -> (usize, usize) {
        (
            self.state.queries.load(Ordering::SeqCst),
            self.state.blocking.load(Ordering::SeqCst),
        )
    }
}

impl Drop for ConsulServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn consul_answer(
    state: &ConsulState,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let Some(service) = req.uri().path().strip_prefix("/v1/health/service/") else {
        return plain(StatusCode::NOT_FOUND, "no such endpoint");
    };
    let query: HashMap<String, String> =
        form_urlencoded_pairs(req.uri().query().unwrap_or_default());
    let passing_only = query.contains_key("passing");
    let wait = query
        .get("wait")
        .and_then(|w| parse_go_duration(w))
        .unwrap_or(Duration::from_secs(300));
    let mut catalog = state.catalog.subscribe();
    if let Some(index) = query.get("index").and_then(|i| i.parse::<u64>().ok()) {
        state.blocking.fetch_add(1, Ordering::SeqCst);
        let _ = tokio::time::timeout(wait, catalog.wait_for(|(now, _)| *now > index)).await;
    }
    state.queries.fetch_add(1, Ordering::SeqCst);
    let (index, services) = catalog.borrow().clone();
    let entries: Vec<serde_json::Value> = services
        .get(service)
        .into_iter()
        .flatten()
        .filter(|i| i.passing || !passing_only)
        .enumerate()
        .map(|(n, i)| {
            serde_json::json!({
                "Node": { "ID": format!("node-{n}"), "Node": format!("node-{n}"), "Address": "127.0.0.1", "Datacenter": "dc1" },
                "Service": {
                    "ID": format!("{service}-{n}"), "Service": service, "Tags": [],
                    "Address": i.addr.ip().to_string(), "Port": i.addr.port(),
                    "Weights": { "Passing": i.weight, "Warning": 1 },
                },
                "Checks": [{
                    "CheckID": "serfHealth", "Name": "Serf Health Status",
                    "Status": if i.passing { "passing" } else { "critical" },
                }],
            })
        })
        .collect();
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::Value::Array(entries).to_string(),
    )));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = hyper::header::HeaderValue::from_str(&index.to_string()) {
        response.headers_mut().insert("x-consul-index", value);
    }
    response
}

/// A server speaking Eureka's apps API (JSON): `GET /eureka/apps/` (the
/// registry, with its `apps__hashcode`), `GET /eureka/apps/delta` (every
/// change so far with its `actionType`, and the registry's hash after them)
/// and `GET /eureka/apps/<APP>`.
pub struct EurekaServer {
    /// Its address; the service URL is `http://ADDR/eureka`.
    pub addr: SocketAddr,
    state: Arc<Mutex<EurekaState>>,
    fetches: Arc<(AtomicUsize, AtomicUsize)>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct EurekaState {
    /// (app, instance id) → instance JSON.
    registry: Vec<((String, String), serde_json::Value)>,
    /// Changes, oldest first: (app, instance JSON with `actionType`).
    changes: Vec<(String, serde_json::Value)>,
}

impl EurekaServer {
    /// Starts an empty registry.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(EurekaState::default()));
        let fetches = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let (shared, counts) = (state.clone(), fetches.clone());
        let task = serve(listener, move |req| {
            let (state, counts) = (shared.clone(), counts.clone());
            async move { eureka_answer(&state, &counts, &req) }
        });
        Ok(Self {
            addr,
            state,
            fetches,
            task,
        })
    }

    /// Registers (or updates) instance `id` of `app` at `addr` with `status`
    /// (`UP`, `DOWN`, …), recorded as a change unless `silently`.
    pub fn register(&self, app: &str, id: &str, addr: SocketAddr, status: &str, silently: bool) {
        let instance = serde_json::json!({
            "instanceId": id, "hostName": "localhost", "app": app, "ipAddr": addr.ip().to_string(),
            "status": status, "overriddenStatus": "UNKNOWN",
            "port": { "$": addr.port(), "@enabled": "true" },
            "securePort": { "$": 443, "@enabled": "false" },
            "dataCenterInfo": { "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn" },
            "lastDirtyTimestamp": "1700000000000",
        });
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let key = (app.to_owned(), id.to_owned());
        let action = match state.registry.iter_mut().find(|(k, _)| *k == key) {
            Some((_, existing)) => {
                *existing = instance.clone();
                "MODIFIED"
            }
            None => {
                state.registry.push((key, instance.clone()));
                "ADDED"
            }
        };
        if !silently {
            let mut change = instance;
            change["actionType"] = action.into();
            state.changes.push((app.to_owned(), change));
        }
    }

    /// Removes instance `id` of `app`, recorded as a `DELETED` change.
    pub fn cancel(&self, app: &str, id: &str) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let key = (app.to_owned(), id.to_owned());
        if let Some(at) = state.registry.iter().position(|(k, _)| *k == key) {
            let (_, mut change) = state.registry.remove(at);
            change["actionType"] = "DELETED".into();
            state.changes.push((app.to_owned(), change));
        }
    }

    /// Full registry fetches and delta fetches answered so far.
    pub fn fetches(&self) -> (usize, usize) {
        (
            self.fetches.0.load(Ordering::SeqCst),
            self.fetches.1.load(Ordering::SeqCst),
        )
    }
}

impl Drop for EurekaServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn eureka_answer(
    state: &Mutex<EurekaState>,
    counts: &(AtomicUsize, AtomicUsize),
    req: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let Ok(state) = state.lock() else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "poisoned");
    };
    let hash = {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for (_, instance) in &state.registry {
            let status = instance["status"].as_str().unwrap_or("UNKNOWN").to_owned();
            *counts.entry(status).or_default() += 1;
        }
        counts
            .iter()
            .map(|(s, n)| format!("{s}_{n}_"))
            .collect::<String>()
    };
    let group = |items: Vec<(&String, &serde_json::Value)>| {
        let mut apps: Vec<(String, Vec<serde_json::Value>)> = Vec::new();
        for (app, instance) in items {
            match apps.iter_mut().find(|(name, _)| name == app) {
                Some((_, list)) => list.push(instance.clone()),
                None => apps.push((app.clone(), vec![instance.clone()])),
            }
        }
        apps.into_iter()
            .map(|(name, instance)| serde_json::json!({ "name": name, "instance": instance }))
            .collect::<Vec<_>>()
    };
    let path = req.uri().path().trim_end_matches('/');
    let body = match path {
        "/eureka/apps" => {
            counts.0.fetch_add(1, Ordering::SeqCst);
            let items = state
                .registry
                .iter()
                .map(|((app, _), i)| (app, i))
                .collect();
            serde_json::json!({ "applications": {
                "versions__delta": "1", "apps__hashcode": hash, "application": group(items) } })
        }
        "/eureka/apps/delta" => {
            counts.1.fetch_add(1, Ordering::SeqCst);
            let items = state.changes.iter().map(|(app, i)| (app, i)).collect();
            serde_json::json!({ "applications": {
                "versions__delta": "2", "apps__hashcode": hash, "application": group(items) } })
        }
        other => {
            let app = other.strip_prefix("/eureka/apps/").unwrap_or_default();
            let items: Vec<_> = state
                .registry
                .iter()
                .filter(|((a, _), _)| a == app)
                .map(|((a, _), i)| (a, i))
                .collect();
            match group(items).into_iter().next() {
                Some(application) => serde_json::json!({ "application": application }),
                None => return plain(StatusCode::NOT_FOUND, "no such application"),
            }
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

/// `a=1&b` as a map (`b` → empty).
fn form_urlencoded_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (pair.to_owned(), String::new()),
        })
        .collect()
}

/// A Go duration as Consul reads `?wait=`: `300ms`, `5s`, `10m`.
fn parse_go_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        _ => None,
    }
}
