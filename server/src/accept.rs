//! [`serve`]: the node's HTTP/1.1 accept loop (hyper, with WebSocket upgrades), bounding
//! how long a client may take to send a request's headers (`Config::header_read_timeout`,
//! `--header-read-timeout-ms`), so a client trickling bytes (slowloris) cannot pin
//! connections; the body by `Config::body_read_timeout` ([`BodyDeadlineLayer`], a layer
//! of the router: a deadline for the whole body, since tower-http's body timeout only
//! bounds the gap between two chunks and a byte a second never trips it). On shutdown it
//! stops accepting and waits for in-flight requests (upgraded WebSockets are drained by the
//! sessions).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::Request;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serve `router` on `listener` until `shutdown`, then wait for in-flight requests. A
/// connection whose request headers (counted from the request's first byte) take longer
/// than `header_read_timeout` is closed without an answer.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connections = TaskTracker::new();
    loop {
        let (stream, _peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let conn = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Gives every request body a deadline: [`Self::new`]'s bound after the request reached
/// the router (its headers were read), reading more of it fails. The handler's body
/// extractor then refuses the request (400 `bad_request`, `http::error`), nothing applied.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyDeadlineLayer {
    bound: Duration,
}

impl BodyDeadlineLayer {
    pub(crate) fn new(bound: Duration) -> Self {
        Self { bound }
    }
}

impl<S> tower::Layer<S> for BodyDeadlineLayer {
    type Service = BodyDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyDeadline {
            inner,
            bound: self.bound,
        }
    }
}

/// The service of [`BodyDeadlineLayer`].
#[derive(Debug, Clone)]
pub(crate) struct BodyDeadline<S> {
    inner: S,
    bound: Duration,
}

impl<S> tower::Service<Request<Body>> for BodyDeadline<S>
where
    S: tower::Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let bound = self.bound;
        self.inner.call(req.map(|body| {
            Body::new(DeadlineBody {
                inner: body,
                deadline: Box::pin(tokio::time::sleep(bound)),
                bound,
            })
        }))
    }
}

/// A body whose reading fails once its deadline has passed, however it trickles.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    bound: Duration,
}

/// The error of a body read past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
struct BodyTooSlow(Duration);

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        // First, so a body that keeps a byte ready cannot outrun it.
        if this.deadline.as_mut().poll(cx).is_ready() && !this.inner.is_end_stream() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow(this.bound)))));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
