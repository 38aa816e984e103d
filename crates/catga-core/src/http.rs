//! HTTP plumbing shared by the services: RFC 9457 problem details, and the
//! server every service runs (its deadlines and connection limit), with
//! reading a body before a handler is involved.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::{ConnectInfo, Request},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::BytesMut;
use futures::StreamExt;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use serde::Serialize;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use utoipa::ToSchema;

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem details body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference identifying the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request field at fault, for validation problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip)]
    retry_after: Option<u32>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: impl Into<String>) -> Self {
        Self {
            kind: format!("https://catga.dev/problems/{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: None,
            field: None,
            retry_after: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds `Retry-After` (seconds) to the response.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after;
        let mut response = (status, Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// What one replica's HTTP server tolerates of its clients (the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// A request's header must arrive within this. hyper starts the clock as
    /// soon as a connection waits for a request, so it also closes a
    /// keep-alive connection left idle this long.
    pub header_timeout: Duration,
    /// Connections served at once. Further ones wait in the kernel's listen
    /// backlog until one closes, so memory stays bounded.
    pub max_connections: usize,
}

/// A connection's read buffer grows up to this (hyper's default is ~400 KiB).
/// Headers and body chunks fit; a thousand half-sent headers cost 64 MiB at most.
const MAX_READ_BUFFER_BYTES: usize = 64 * 1024;

/// Serves `router` on `listener` until `shutdown` fires, then stops
/// accepting, lets the requests in flight finish and closes idle connections.
///
/// HTTP/1 only: the header deadline hyper offers exists for HTTP/1, and no
/// client of the services speaks HTTP/2 in clear text. Handlers see the
/// client's address as [`ConnectInfo<std::net::SocketAddr>`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: ServerLimits,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_READ_BUFFER_BYTES);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(&err).await;
                    continue;
                }
            },
        };
        // Small responses go out at once rather than after Nagle's delay.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            router.clone().oneshot(request.map(Body::new))
        });
        let connection = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                // Timeouts and resets by clients: theirs to worry about.
                tracing::debug!(%remote, error = %err, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Accept errors are per connection (reset before accept) or transient (out
/// of file descriptors); either way the server goes on, after a pause for the
/// latter so it does not spin.
async fn accept_failed(err: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %err, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Why [`read_body_within`] could not read a request body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
    #[error("cannot read the request body")]
    Unreadable(#[source] axum::Error),
}

/// Reads `request`'s body into memory within `deadline`, stopping at the
/// first chunk past `max_bytes`: a body over the limit is handed on cut
/// there, so the body-limit check behind answers 413 as for any other. A slow body
/// is thus waited for here, before a handler (and its concurrency permit)
/// is involved.
pub async fn read_body_within(
    request: Request,
    max_bytes: usize,
    deadline: Duration,
) -> Result<Request, BodyError> {
    let (parts, body) = request.into_parts();
    // Sized from Content-Length up front: growing by doubling would hold up
    // to twice the body per slow client.
    let announced = usize::try_from(hyper::body::Body::size_hint(&body).lower()).unwrap_or(0);
    let mut buffered = BytesMut::with_capacity(announced.min(max_bytes.saturating_add(1)));
    let mut body = body.into_data_stream();
    let read = async {
        while let Some(chunk) = body.next().await {
            buffered.extend_from_slice(&chunk.map_err(BodyError::Unreadable)?);
            if buffered.len() > max_bytes {
                break;
            }
        }
        Ok(())
    };
    tokio::time::timeout(deadline, read)
        .await
        .map_err(|_elapsed| BodyError::TimedOut(deadline))??;
    Ok(Request::from_parts(parts, Body::from(buffered.freeze())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_is_read_whole_or_cut_past_the_limit() {
        let request = |body: &'static str| Request::new(Body::from(body));
        let read = read_body_within(request("12345"), 5, Duration::from_secs(1))
            .await
            .expect("read");
        let bytes = axum::body::to_bytes(read.into_body(), 100)
            .await
            .expect("bytes");
        assert_eq!(&bytes[..], b"12345");

        let chunks = futures::stream::iter(["1234", "5678", "90"].map(Ok::<_, std::io::Error>));
        let read = read_body_within(
            Request::new(Body::from_stream(chunks)),
            5,
            Duration::from_secs(1),
        )
        .await
        .expect("read");
        let bytes = axum::body::to_bytes(read.into_body(), 100)
            .await
            .expect("bytes");
        assert_eq!(
            &bytes[..],
            b"12345678",
            "cut after the chunk passing the limit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_times_out() {
        let endless = futures::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        let err = read_body_within(
            Request::new(Body::from_stream(endless)),
            5,
            Duration::from_secs(3),
        )
        .await
        .expect_err("never ends");
        assert!(matches!(err, BodyError::TimedOut(d) if d == Duration::from_secs(3)));
    }
}
