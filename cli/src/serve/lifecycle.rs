//! The server's life, as `/health` tells it to load balancers:
//!
//! - **loading**: the address answers from the moment it is bound; while the model
//!   loads and warms up, `/health` is 503 `{"status": "loading"}` and every other path
//!   503 with `Retry-After`;
//! - **ready**: the model has loaded and run its warmup request; `/health` is 200
//!   `{"status": "ready"}`;
//! - **draining**: after SIGTERM or SIGINT, `/health` is 503 `{"status": "draining"}`
//!   so that balancers stop routing here, new generation requests get 503, and the
//!   requests in flight finish (at most the request timeout); then the server stops.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Loading = 0,
    Ready = 1,
    Draining = 2,
}

/// The phase, shared by the handlers and the shutdown path.
#[derive(Debug)]
pub struct Lifecycle {
    phase: AtomicU8,
    started: Instant,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            phase: AtomicU8::new(Phase::Loading as u8),
            started: Instant::now(),
        }
    }
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Loading,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    pub fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// `/health`: 200 only when ready.
    pub fn health(&self) -> Response {
        let (status, name) = match self.phase() {
            Phase::Loading => (StatusCode::SERVICE_UNAVAILABLE, "loading"),
            Phase::Ready => (StatusCode::OK, "ready"),
            Phase::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        };
        let body = json!({"status": name, "uptime_s": self.started.elapsed().as_secs()});
        (status, Json(body)).into_response()
    }

    /// The answer to a generation request when not ready, else `None`.
    pub fn refuse(&self) -> Option<ApiError> {
        let why = match self.phase() {
            Phase::Ready => return None,
            Phase::Loading => "the model is still loading; retry in a few seconds",
            Phase::Draining => "this server is shutting down; send the request to another replica",
        };
        Some(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_unavailable",
            why,
        ))
    }
}

/// What the address serves while the model loads: `/health` and 503 for the rest.
pub fn loading_router(life: std::sync::Arc<Lifecycle>) -> Router {
    let l = life.clone();
    Router::new()
        .route("/health", get(move || async move { l.health() }))
        .fallback(move || async move {
            let mut r = life.refuse().map_or_else(
                || StatusCode::SERVICE_UNAVAILABLE.into_response(),
                IntoResponse::into_response,
            );
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("5"));
            r
        })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Waits for a signal, turns to draining, and resolves once nothing is in flight (or
/// `limit` has passed): the server then stops accepting and ends.
pub async fn drain(
    life: std::sync::Arc<Lifecycle>,
    in_flight: impl Fn() -> usize,
    limit: Duration,
) {
    signal().await;
    life.set(Phase::Draining);
    let at = Instant::now();
    eprintln!(
        "zoo: draining: /health says so, new requests get 503; {} in flight finish",
        in_flight()
    );
    while in_flight() > 0 && at.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("zoo: drained in {:.1} s", at.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_200_only_when_ready() {
        let life = Lifecycle::default();
        assert_eq!(life.health().status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(life.refuse().is_some());
        life.set(Phase::Ready);
        assert_eq!(life.health().status(), StatusCode::OK);
        assert!(life.refuse().is_none());
        life.set(Phase::Draining);
        assert_eq!(life.phase(), Phase::Draining);
        assert_eq!(life.health().status(), StatusCode::SERVICE_UNAVAILABLE);
        let refused = life.refuse().unwrap().into_response();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
