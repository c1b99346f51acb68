//! A gRPC echo server for `bench/grpc`: `weir.bench.Echo/Unary` answers each
//! `Text` message with the same text, served by tonic's server side over
//! hyper's HTTP/2 (h2c) on one thread.
//!
//!     cargo run --release -p weir-tests --example grpc_echo -- 127.0.0.1:50051

use std::convert::Infallible;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::codegen::BoxFuture;
use tonic::server::{Grpc, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// `message Text { string text = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
struct Text {
    #[prost(string, tag = "1")]
    text: String,
}

struct Echo;

impl UnaryService<Text> for Echo {
    type Response = Text;
    type Future = BoxFuture<Response<Text>, Status>;

    fn call(&mut self, request: Request<Text>) -> Self::Future {
        Box::pin(async move { Ok(Response::new(request.into_inner())) })
    }
}

async fn answer(
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    let request = request.map(tonic::body::Body::new);
    if request.uri().path() != "/weir.bench.Echo/Unary" {
        return Ok(Status::unimplemented("no such method").into_http());
    }
    let mut grpc = Grpc::new(ProstCodec::<Text, Text>::default());
    Ok(grpc.unary(Echo, request).await)
}

fn main() -> anyhow::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&address).await?;
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service_fn(answer))
                    .await;
            });
        }
    })
}
