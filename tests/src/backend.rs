//! A target the test can break: it answers, hangs or resets on command, its
//! `/healthz` answers the status the test sets, and it can be killed (its
//! listener and every open connection closed) and revived on the same port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What a [`Backend`] does with requests other than `GET /healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Behaviour {
    /// Answers 200 with its name as the body.
    Answer = 0,
    /// Answers 503.
    Fail = 1,
    /// Never answers.
    Hang = 2,
    /// Resets each connection once the first bytes of a request arrive, so
    /// the client sees its request fail after sending it (a reset before
    /// that would race the client's own connect).
    Reset = 3,
}

struct Shared {
    name: String,
    hits: AtomicUsize,
    probes: AtomicUsize,
    behaviour: AtomicU8,
    health: AtomicU16,
}

/// A target the test steers; see the module docs.
pub struct Backend {
    /// Its address (kept across a revival).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    /// Tells the accept loop and every connection to close.
    kill: Mutex<Option<watch::Sender<bool>>>,
}

impl Backend {
    /// Starts a backend called `name` on a free loopback port, answering.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let backend = Self {
            addr,
            shared: Arc::new(Shared {
                name: name.to_owned(),
                hits: AtomicUsize::new(0),
                probes: AtomicUsize::new(0),
                behaviour: AtomicU8::new(Behaviour::Answer as u8),
                health: AtomicU16::new(200),
            }),
            kill: Mutex::new(None),
        };
        backend.run(listener);
        Ok(backend)
    }

    /// Requests it has received (health probes aside).
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Health probes it has received.
    pub fn probes(&self) -> usize {
        self.shared.probes.load(Ordering::SeqCst)
    }

    /// Its name, the body of its answers.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Changes what it does with requests from now on.
    pub fn behave(&self, behaviour: Behaviour) {
        self.shared
            .behaviour
            .store(behaviour as u8, Ordering::SeqCst);
    }

    /// The status `GET /healthz` answers from now on.
    pub fn set_health(&self, status: u16) {
        self.shared.health.store(status, Ordering::SeqCst);
    }

    /// Closes its listener and every open connection: it is gone.
    pub fn kill(&self) {
        let sender = self.kill.lock().ok().and_then(|mut k| k.take());
        if let Some(sender) = sender {
            let _ = sender.send(true);
        }
    }

    /// Listens again on the same address, answering.
    pub async fn revive(&self) -> anyhow::Result<()> {
        self.behave(Behaviour::Answer);
        let listener = TcpListener::bind(self.addr).await?;
        self.run(listener);
        Ok(())
    }

    fn run(&self, listener: TcpListener) {
        let (kill, killed) = watch::channel(false);
        if let Ok(mut slot) = self.kill.lock() {
            *slot = Some(kill);
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut stop = killed.clone();
            loop {
                let (stream, _) = tokio::select! {
                    _ = stop.changed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => return,
                    },
                };
                tokio::spawn(connection(stream, shared.clone(), killed.clone()));
            }
        });
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Serves one connection until it ends or the backend is killed.
async fn connection(stream: TcpStream, shared: Arc<Shared>, mut killed: watch::Receiver<bool>) {
    if shared.behaviour.load(Ordering::SeqCst) == Behaviour::Reset as u8 {
        // `readable` may wake spuriously; a peek returns only with data.
        let _ = stream.peek(&mut [0; 1]).await;
        // Linger 0: closing sends RST rather than FIN.
        let _ = stream.set_zero_linger();
        drop(stream);
        return;
    }
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(req, &shared).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let serve = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = killed.changed() => {}
        _ = serve => {}
    }
}

async fn answer(req: Request<hyper::body::Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let respond = |status: u16, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() =
            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
        response
    };
    if req.uri().path() == "/healthz" {
        shared.probes.fetch_add(1, Ordering::SeqCst);
        return respond(shared.health.load(Ordering::SeqCst), "health".into());
    }
    shared.hits.fetch_add(1, Ordering::SeqCst);
    match shared.behaviour.load(Ordering::SeqCst) {
        b if b == Behaviour::Fail as u8 => respond(503, format!("{} failing", shared.name)),
        b if b == Behaviour::Hang as u8 => std::future::pending().await,
        _ => respond(200, shared.name.clone()),
    }
}
