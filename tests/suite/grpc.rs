//! gRPC callouts from a filter (`proxy_grpc_call`, `proxy_grpc_stream`) to a
//! real tonic server, through the real gateway: the request pauses until the
//! answer, the callbacks come in Envoy's order with Envoy's statuses, and a
//! cancelled call is never heard of again.

use std::time::{Duration, Instant};

use serde_json::json;
use weir_tests::{
    EchoUpstream, WAT_FILTER_BASICS, dead_address, eventually, h2c_client, http1_client, json,
};

use crate::compat::gateway_with_files;
use crate::services::gateway;
use server::GrpcServer;

/// The filter's `grpc` configuration for method `method` of the test server.
fn call(method: &str, message: &str, timeout_ms: u64) -> serde_json::Value {
    json!({
        "upstream": "grpc",
        "service": "weir.test.Echo",
        "method": method,
        "message": message,
        "metadata": [["x-test-meta", "from-filter"]],
        "timeout_ms": timeout_ms,
    })
}

/// The upstream's echo of a request through the gateway.
async fn echoed(gw: &weir_tests::TestGateway) -> anyhow::Result<serde_json::Value> {
    json(http1_client().get(gw.url("main", "/in")).send().await?).await
}

#[tokio::test]
async fn a_unary_call_pauses_the_request_until_its_reply() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let grpc = GrpcServer::start().await?;
    let config = json!({ "grpc": call("Say", "weir", 2000) });
    let gw = gateway(&app, &[("grpc", grpc.addr.to_string())], config, 1).await?;
    let echoed = echoed(&gw).await?;
    let headers = &echoed["headers"];
    assert_eq!(headers["x-grpc-reply"][0], "hello weir");
    assert_eq!(headers["x-grpc-status"][0], "0");
    assert_eq!(
        headers["x-grpc-events"][0], "call_response:0",
        "a unary call gets one callback, proxy_on_grpc_receive, as from Envoy"
    );
    let request = grpc.seen.last_request();
    assert_eq!(request.path, "/weir.test.Echo/Say");
    assert_eq!(request.meta.as_deref(), Some("from-filter"));
    assert_eq!(request.grpc_timeout.as_deref(), Some("2000m"));
    assert_eq!(request.te.as_deref(), Some("trailers"));
    Ok(())
}

#[tokio::test]
async fn concurrent_calls_from_every_worker_each_resume_their_own_request() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let grpc = GrpcServer::start().await?;
    let mut each = call("Say", "", 2000);
    each["message_header"] = json!("x-text");
    let gw = gateway(
        &app,
        &[("grpc", grpc.addr.to_string())],
        json!({ "grpc": each }),
        2,
    )
    .await?;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..32 {
        let request = http1_client()
            .get(gw.url("main", "/in"))
            .header("x-text", i.to_string())
            .send();
        requests.spawn(async move { anyhow::Ok((i, json(request.await?).await?)) });
    }
    while let Some(outcome) = requests.join_next().await {
        let (i, echoed) = outcome??;
        assert_eq!(echoed["headers"]["x-grpc-reply"][0], format!("hello {i}"));
    }
    Ok(())
}

#[tokio::test]
async fn a_non_ok_status_closes_the_call_with_its_message() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let grpc = GrpcServer::start().await?;
    let config = json!({ "grpc": call("Say", "deny", 2000) });
    let gw = gateway(&app, &[("grpc", grpc.addr.to_string())], config, 1).await?;
    let headers = &echoed(&gw).await?["headers"];
    assert_eq!(headers["x-grpc-status"][0], "7", "PERMISSION_DENIED");
    assert_eq!(headers["x-grpc-message"][0], server::DENIED);
    assert_eq!(headers["x-grpc-events"][0], "call_response:7");
    Ok(())
}

#[tokio::test]
async fn unknown_dead_and_slow_upstreams_answer_envoys_statuses() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let grpc = GrpcServer::start().await?;
    let dead = dead_address().await?;
    let upstreams = [("grpc", grpc.addr.to_string()), ("dead", dead.to_string())];

    let mut unknown = call("Say", "x", 2000);
    unknown["upstream"] = json!("nowhere");
    let gw = gateway(&app, &upstreams, json!({ "grpc": unknown }), 1).await?;
    let headers = &echoed(&gw).await?["headers"];
    assert_eq!(
        headers["x-grpc-refused"][0], "ParseFailure",
        "refused at once, as Envoy refuses an unknown cluster"
    );

    let mut down = call("Say", "x", 2000);
    down["upstream"] = json!("dead");
    let gw = gateway(&app, &upstreams, json!({ "grpc": down }), 1).await?;
    let headers = &echoed(&gw).await?["headers"];
    assert_eq!(headers["x-grpc-status"][0], "14", "UNAVAILABLE");

    let gw = gateway(
        &app,
        &upstreams,
        json!({ "grpc": call("Say", "slow", 200) }),
        1,
    )
    .await?;
    let started = Instant::now();
    let headers = &echoed(&gw).await?["headers"];
    assert_eq!(headers["x-grpc-status"][0], "4", "DEADLINE_EXCEEDED");
    let message = headers["x-grpc-message"][0].as_str().unwrap_or_default();
    assert!(message.contains("did not answer within 200ms"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(1));
    Ok(())
}

#[tokio::test]
async fn a_bidirectional_stream_delivers_each_reply_then_closes() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let grpc = GrpcServer::start().await?;
    let mut stream = call("Chat", "", 0);
    stream["stream"] = json!(["a", "b"]);
    let gw = gateway(
        &app,
        &[("grpc", grpc.addr.to_string())],
        json!({ "grpc": stream }),
        1,
    )
    .await?;
    let headers = &echoed(&gw).await?["headers"];
    let events = headers["x-grpc-events"][0].as_str().unwrap_or_default();
    let events: Vec<&str> = events.split(',').collect();
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(
        events[0].starts_with("initial_metadata:") && events[0].ends_with(":tonic"),
        "the server's initial metadata (map 4) comes first: {events:?}"
    );
    assert_eq!(
        events[1..],
        [
            "message:echo a",
            "message:echo b",
            "trailing_metadata:grpc-status=0",
            "close:0"
        ]
    );
    assert_eq!(headers["x-grpc-status"][0], "0");
    assert_eq!(
        grpc.seen.last_request().meta.as_deref(),
        Some("from-filter")
    );
    Ok(())
}

#[tokio::test]
async fn a_root_context_calls_on_its_tick() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let grpc = GrpcServer::start().await?;
    let mut tick = call("Say", "tick", 2000);
    tick["on_tick"] = json!(true);
    let config = json!({ "grpc": tick, "shared_get": "grpc_tick" });
    let gw = gateway(&app, &[("grpc", grpc.addr.to_string())], config, 1).await?;
    let answered = eventually(Duration::from_secs(5), async || {
        echoed(&gw)
            .await
            .is_ok_and(|e| e["headers"]["x-shared"][0] == "0:hello tick")
    })
    .await;
    assert!(answered, "the root context got the reply");
    Ok(())
}

#[tokio::test]
async fn a_cancelled_call_is_reset_and_never_called_back() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let grpc = GrpcServer::start().await?;
    let mut slow = call("Say", "slow", 5000);
    slow["on_tick"] = json!(true);
    slow["cancel"] = json!(true);
    let config = json!({ "grpc": slow, "shared_get": "grpc_late" });
    let gw = gateway(&app, &[("grpc", grpc.addr.to_string())], config, 1).await?;
    let reset = eventually(Duration::from_secs(3), async || grpc.seen.cancelled() == 1).await;
    assert!(reset, "the server saw the call reset");
    // A callback would come right after the reset: give it time to (not) arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let headers = &echoed(&gw).await?["headers"];
    assert_eq!(headers["x-shared"][0], "<none>", "no callback after cancel");
    Ok(())
}

#[tokio::test]
async fn the_sdk_grpc_auth_random_example_allows_even_and_aborts_odd() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let grpc = GrpcServer::start().await?;
    let config = json!({ "grpc_auth_random": true });
    let gw = gateway(&app, &[("grpcbin", grpc.addr.to_string())], config, 1).await?;
    let client = h2c_client();
    let grpc_request = || {
        client
            .post(gw.url("main", "/weir.test.Echo/Say"))
            .header("content-type", "application/grpc")
            .body(vec![0u8; 5])
    };

    let response = client.get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 503, "non-gRPC clients are refused");
    assert_eq!(
        response.text().await?,
        "Service accessible only to gRPC clients.\n"
    );

    grpc.seen.set_random_status(0);
    let response = grpc_request().send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        json(response).await?["upstream"],
        "app",
        "OK lets it through"
    );

    grpc.seen.set_random_status(3);
    let response = grpc_request().send().await?;
    assert_eq!(
        response.status(),
        200,
        "a trailers-only gRPC answer, as Envoy's"
    );
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-status"], "10", "ABORTED");
    assert_eq!(headers["grpc-message"], "Aborted by Proxy-Wasm!");
    assert_eq!(headers["powered-by"], "proxy-wasm");
    assert!(response.bytes().await?.is_empty());
    assert_eq!(app.hits(), 1, "the aborted call never reached the app");
    Ok(())
}

/// A filter that calls `weir.test.Echo/Say` from every request's headers
/// (`weir` on odd requests, `deny` on even ones) and notes each gRPC callback
/// it gets: `I`nitial metadata, `R`eceive, `T`railing metadata, `C`lose and
/// its status. A receive or close resumes the request with the trace so far
/// in `x-trace`; each request first copies the trace into
/// `x-previous-trace`, so a callback that came after the last one shows.
fn callback_trace_wat() -> String {
    format!(
        r#"(module
  (import "env" "proxy_grpc_call" (func $grpc_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "grpc")
  (data (i32.const 32) "weir.test.Echo")
  (data (i32.const 64) "Say")
  (data (i32.const 80) "\0a\04weir")
  (data (i32.const 96) "\0a\04deny")
  (data (i32.const 112) "x-trace")
  (data (i32.const 128) "x-previous-trace")
  (global $stream (mut i32) (i32.const 0))
  (global $requests (mut i32) (i32.const 0))
  (global $len (mut i32) (i32.const 0))
{WAT_FILTER_BASICS}  (func $mark (param $byte i32)
    (i32.store8 (i32.add (i32.const 300) (global.get $len)) (local.get $byte))
    (global.set $len (i32.add (global.get $len) (i32.const 1))))
  (func $finish
    (if (call $effective (global.get $stream)) (then unreachable))
    (drop (call $add (i32.const 0) (i32.const 112) (i32.const 7) (i32.const 300) (global.get $len)))
    (if (call $continue (i32.const 0)) (then unreachable)))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (global.set $stream (local.get $ctx))
    (drop (call $add (i32.const 0) (i32.const 128) (i32.const 16) (i32.const 300) (global.get $len)))
    (global.set $requests (i32.add (global.get $requests) (i32.const 1)))
    (if (call $grpc_call (i32.const 16) (i32.const 4) (i32.const 32) (i32.const 14) (i32.const 64) (i32.const 3)
          (i32.const 0) (i32.const 0)
          (select (i32.const 80) (i32.const 96) (i32.and (global.get $requests) (i32.const 1))) (i32.const 6)
          (i32.const 2000) (i32.const 200))
      (then unreachable))
    (i32.const 1))
  (func (export "proxy_on_grpc_receive_initial_metadata") (param i32 i32 i32)
    (call $mark (i32.const 73)))
  (func (export "proxy_on_grpc_receive") (param i32 i32 i32)
    (call $mark (i32.const 82))
    (call $finish))
  (func (export "proxy_on_grpc_receive_trailing_metadata") (param i32 i32 i32)
    (call $mark (i32.const 84)))
  (func (export "proxy_on_grpc_close") (param i32 i32) (param $status i32)
    (call $mark (i32.const 67))
    (call $mark (i32.add (i32.const 48) (local.get $status)))
    (call $finish)))
"#
    )
}

#[tokio::test]
async fn a_unary_call_gets_only_receive_or_only_close_as_from_envoys_client() -> anyhow::Result<()>
{
    let app = EchoUpstream::start("app").await?;
    let grpc = GrpcServer::start().await?;
    let yaml = format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - {{ name: app, targets: ["{}"] }}
  - {{ name: grpc, targets: ["{}"] }}
plugins: [{{ name: trace, file: trace.wat, vms: 1 }}]
routes: [{{ name: r, upstream: app, filters: [{{ plugin: trace }}] }}]
"#,
        app.addr, grpc.addr
    );
    let gw = gateway_with_files(&yaml, &[("trace.wat", &callback_trace_wat())]).await?;
    for (previous, trace) in [("", "R"), ("R", "RC7"), ("RC7", "RC7R")] {
        let headers = &echoed(&gw).await?["headers"];
        assert_eq!(headers["x-previous-trace"][0], previous);
        assert_eq!(headers["x-trace"][0], trace);
    }
    Ok(())
}

/// A tonic server with hand-written services (no protoc), as `tonic-build`
/// would generate them: `weir.test.Echo` with `Say` (unary) and `Chat`
/// (bidirectional), and `grpcbin.GRPCBin` with `RandomError`, whose status
/// the test sets.
pub(crate) mod server {
    use std::convert::Infallible;
    use std::marker::PhantomData;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::body::Body;
    use tonic::codegen::{BoxFuture, Service};
    use tonic::metadata::{MetadataMap, MetadataValue};
    use tonic::server::{Grpc, NamedService, StreamingService, UnaryService};
    use tonic::{Code, Request, Response, Status, Streaming};
    use tonic_prost::ProstCodec;

    /// The status message `Say` denies with (tonic percent-encodes it).
    pub const DENIED: &str = "not for you: 100% denied";

    /// `message Text { string text = 1; }`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Text {
        #[prost(string, tag = "1")]
        pub text: String,
    }

    /// `message Empty {}`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}

    /// What the server saw of a request.
    #[derive(Debug, Clone, Default)]
    pub struct Seen {
        pub path: String,
        pub meta: Option<String>,
        pub grpc_timeout: Option<String>,
        pub te: Option<String>,
        pub traceparent: Option<String>,
    }

    /// What the server saw, shared with the test.
    #[derive(Default)]
    pub struct State {
        requests: Mutex<Vec<Seen>>,
        cancelled: AtomicUsize,
        random_status: AtomicU32,
    }

    impl State {
        pub fn last_request(&self) -> Seen {
            self.lock().last().cloned().unwrap_or_default()
        }

        /// Calls whose handler was dropped before it answered.
        pub fn cancelled(&self) -> usize {
            self.cancelled.load(Ordering::SeqCst)
        }

        pub fn set_random_status(&self, status: u32) {
            self.random_status.store(status, Ordering::SeqCst);
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Seen>> {
            self.requests
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        fn record<B>(&self, request: &http::Request<B>) {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            self.lock().push(Seen {
                path: request.uri().path().to_owned(),
                meta: header("x-test-meta"),
                grpc_timeout: header("grpc-timeout"),
                te: header("te"),
                traceparent: header("traceparent"),
            });
        }
    }

    /// Counts a handler dropped before it finished (its call was reset).
    struct Unfinished(Option<Arc<State>>);

    impl Drop for Unfinished {
        fn drop(&mut self) {
            if let Some(state) = self.0.take() {
                state.cancelled.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    pub struct GrpcServer {
        pub addr: SocketAddr,
        pub seen: Arc<State>,
        task: tokio::task::JoinHandle<()>,
    }

    impl GrpcServer {
        /// Serves on a free loopback port.
        pub async fn start() -> anyhow::Result<Self> {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let seen = Arc::new(State::default());
            let router = tonic::transport::Server::builder()
                .add_service(Served::<Echo>::new(&seen))
                .add_service(Served::<GrpcBin>::new(&seen));
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let task = tokio::spawn(async move {
                let _ = router.serve_with_incoming(incoming).await;
            });
            Ok(Self { addr, seen, task })
        }
    }

    impl Drop for GrpcServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// A service: its name, and how it answers a call of one of its methods.
    trait Methods: Send + Sync + 'static {
        const NAME: &'static str;
        fn answer(
            state: Arc<State>,
            request: http::Request<Body>,
        ) -> BoxFuture<http::Response<Body>, Infallible>;
    }

    /// Serves `M` over the shared state (the router `tonic-build` would generate).
    struct Served<M>(Arc<State>, PhantomData<M>);

    impl<M> Served<M> {
        fn new(state: &Arc<State>) -> Self {
            Self(state.clone(), PhantomData)
        }
    }

    impl<M> Clone for Served<M> {
        fn clone(&self) -> Self {
            Self(self.0.clone(), PhantomData)
        }
    }

    impl<M: Methods> NamedService for Served<M> {
        const NAME: &'static str = M::NAME;
    }

    impl<M: Methods> Service<http::Request<Body>> for Served<M> {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            self.0.record(&request);
            M::answer(self.0.clone(), request)
        }
    }

    fn unimplemented() -> http::Response<Body> {
        Status::unimplemented("no such method").into_http()
    }

    fn served_by(metadata: &mut MetadataMap) {
        metadata.insert("x-served-by", MetadataValue::from_static("tonic"));
    }

    struct Echo;

    impl Methods for Echo {
        const NAME: &'static str = "weir.test.Echo";

        fn answer(
            state: Arc<State>,
            request: http::Request<Body>,
        ) -> BoxFuture<http::Response<Body>, Infallible> {
            Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<Text, Text>::default());
                Ok(match request.uri().path() {
                    "/weir.test.Echo/Say" => grpc.unary(Say(state), request).await,
                    "/weir.test.Echo/Chat" => grpc.streaming(Chat, request).await,
                    _ => unimplemented(),
                })
            })
        }
    }

    /// Unary: `hello <text>`; `deny` is refused, `slow` answers after 2 s.
    struct Say(Arc<State>);

    impl UnaryService<Text> for Say {
        type Response = Text;
        type Future = BoxFuture<Response<Text>, Status>;

        fn call(&mut self, request: Request<Text>) -> Self::Future {
            let state = self.0.clone();
            Box::pin(async move {
                let text = request.into_inner().text;
                if text == "deny" {
                    return Err(Status::permission_denied(DENIED));
                }
                if text == "slow" {
                    let mut unfinished = Unfinished(Some(state));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    unfinished.0 = None;
                }
                let mut response = Response::new(Text {
                    text: format!("hello {text}"),
                });
                served_by(response.metadata_mut());
                Ok(response)
            })
        }
    }

    /// Bidirectional: `echo <text>` for each message, ending when the client does.
    struct Chat;

    impl StreamingService<Text> for Chat {
        type Response = Text;
        type ResponseStream = ReceiverStream<Result<Text, Status>>;
        type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

        fn call(&mut self, request: Request<Streaming<Text>>) -> Self::Future {
            Box::pin(async move {
                let mut inbound = request.into_inner();
                let (replies, stream) = mpsc::channel(4);
                tokio::spawn(async move {
                    while let Ok(Some(message)) = inbound.message().await {
                        let reply = Text {
                            text: format!("echo {}", message.text),
                        };
                        if replies.send(Ok(reply)).await.is_err() {
                            return;
                        }
                    }
                });
                let mut response = Response::new(ReceiverStream::new(stream));
                served_by(response.metadata_mut());
                Ok(response)
            })
        }
    }

    struct GrpcBin;

    impl Methods for GrpcBin {
        const NAME: &'static str = "grpcbin.GRPCBin";

        fn answer(
            state: Arc<State>,
            request: http::Request<Body>,
        ) -> BoxFuture<http::Response<Body>, Infallible> {
            Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<Empty, Empty>::default());
                Ok(match request.uri().path() {
                    "/grpcbin.GRPCBin/RandomError" => grpc.unary(RandomError(state), request).await,
                    _ => unimplemented(),
                })
            })
        }
    }

    /// Answers with the status the test set (0: an empty message).
    struct RandomError(Arc<State>);

    impl UnaryService<Empty> for RandomError {
        type Response = Empty;
        type Future = BoxFuture<Response<Empty>, Status>;

        fn call(&mut self, _: Request<Empty>) -> Self::Future {
            let status = self.0.random_status.load(Ordering::SeqCst);
            Box::pin(async move {
                match status {
                    0 => Ok(Response::new(Empty {})),
                    n => Err(Status::new(Code::from(n as i32), "random error")),
                }
            })
        }
    }
}
