//! The HTTP surface: `/metrics` (Prometheus), `/healthz` (the process runs), `/readyz` (every
//! enabled pipeline is running), and `GET /v1/customers/{id}[?at=<RFC 3339 | epoch ms>]`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use pulse_core::{evaluate, ScoringConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::fold::Shared;
use crate::kafka::partition_for;
use crate::Status;

pub struct HttpState {
    pub status: Arc<Status>,
    pub shared: Arc<Shared>,
    pub scoring: ScoringConfig,
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
}

/// Serves until `shutdown` flips. The listener is bound by the caller so the address is known.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => { tracing::warn!(error = %e, "accept failed"); continue }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("static response parts")
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", value.to_string())
}

fn route(state: &HttpState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "method_not_allowed"}),
        );
    }
    let path = req.uri().path();
    match path {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.prometheus.render(),
        ),
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            let (mut ready, mut why) = state.status.readiness();
            let restoring = state
                .shared
                .restoring
                .load(std::sync::atomic::Ordering::Relaxed);
            if ready && restoring > 0 {
                (ready, why) = (
                    false,
                    format!("restoring {restoring} partitions from the changelog"),
                );
            }
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond(code, "text/plain", format!("{why}\n"))
        }
        _ => match path.strip_prefix("/v1/customers/") {
            Some(id) if !id.is_empty() && !id.contains('/') => {
                customer(state, &percent_decode(id), req.uri().query())
            }
            _ => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "not_found"}),
            ),
        },
    }
}

fn customer(state: &HttpState, id: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    let n = state.shared.canonical_partitions.load(Ordering::Relaxed) as i32;
    if n == 0 {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "fold_not_running"}),
        );
    }
    let partition = partition_for(id.as_bytes(), n);
    let partitions = state.shared.partitions.read().expect("lock");
    let Some((store, clock)) = partitions.get(&partition) else {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "partition_not_owned_here", "partition": partition}),
        );
    };
    let at = match query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("at="))) {
        None => clock.load(Ordering::Relaxed),
        Some(raw) => {
            let raw = percent_decode(raw);
            match raw
                .parse::<i64>()
                .ok()
                .or_else(|| pulse_codec::time::parse_rfc3339(&raw))
            {
                Some(t) => t,
                None => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &serde_json::json!({"error": "bad_at", "detail": "`at` must be RFC 3339 or epoch milliseconds"}),
                    )
                }
            }
        }
    };
    match store.customer(id) {
        Ok(Some(s)) => {
            let e = evaluate(&s, at, &state.scoring);
            let scores: serde_json::Map<String, serde_json::Value> = pulse_core::engine::scores(&e)
                .into_iter()
                .map(|s| (s.name.to_string(), s.value.into()))
                .collect();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "customer_id": id,
                    "partition": partition,
                    "evaluated_at": pulse_codec::time::format_rfc3339(at),
                    "stage": e.stage.as_str(),
                    "segment": e.segment.as_str(),
                    "announced_stage": s.announced.stage.as_str(),
                    "announced_segment": s.announced.segment.as_str(),
                    "scores": scores,
                    "next_change": e.next_change.map(pulse_codec::time::format_rfc3339),
                    "state": s,
                }),
            )
        }
        Ok(None) => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "unknown_customer"}),
        ),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"error": "store", "detail": e.to_string()}),
        ),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
