//! The HTTP surface: `/metrics` (Prometheus), `/healthz` (the process runs), `/readyz` (every
//! enabled pipeline is running and fold holds its partitions, restored, within
//! `http.ready_max_lag_records` of the log's end: `Shared::fold_readiness`), and the query API under `/v1`:
//! `GET /v1/customers/{id}[?at=<RFC 3339 | epoch ms>]`, `/v1/stages`, `/v1/segments` (customer
//! counts of the partitions held here) and `/v1/openapi.json` (the description of all of it).
//!
//! Access: with `[http.auth] enabled`, every path outside `http.open_paths` needs
//! `Authorization: Bearer <token>`; tokens are compared in constant time; a missing or wrong
//! token is 401 (`WWW-Authenticate: Bearer`), a valid token without the path's scope is 403.
//!
//! Ownership: a customer lives on the canonical partition its id hashes to, and only the
//! instance folding that partition can answer. Any other instance answers `409 not_owner`
//! naming the owner's advertised address (the way Kafka Streams' interactive queries expose
//! metadata), found from the fold group's committed offsets: fold commits each partition's
//! offset with its advertised HTTP address as metadata. That lookup is an OffsetFetch round
//! trip, so it runs off the request path's hot part and is cached.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use pulse_core::{evaluate, ScoringConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::fold::Shared;
use crate::kafka::partition_for;
use crate::Status;

pub struct HttpState {
    pub status: Arc<Status>,
    pub shared: Arc<Shared>,
    pub scoring: ScoringConfig,
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
    /// For the auth settings, the advertised address and the owner lookup's Kafka client.
    pub config: Arc<Config>,
    /// The fold group's partition → owner address map and when it was read.
    pub owners: Mutex<Option<(Instant, BTreeMap<i32, String>)>>,
}

impl HttpState {
    pub fn new(
        status: Arc<Status>,
        shared: Arc<Shared>,
        config: Arc<Config>,
        prometheus: metrics_exporter_prometheus::PrometheusHandle,
    ) -> HttpState {
        HttpState {
            status,
            shared,
            scoring: config.scoring.clone(),
            prometheus,
            config,
            owners: Mutex::new(None),
        }
    }
}

/// Every route the router serves, as OpenAPI path templates. `/v1/openapi.json` describes
/// exactly these (a test checks it both ways).
pub const ROUTES: [&str; 7] = [
    "/metrics",
    "/healthz",
    "/readyz",
    "/v1/customers/{id}",
    "/v1/stages",
    "/v1/segments",
    "/v1/openapi.json",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics,
    Healthz,
    Readyz,
    Customer,
    Stages,
    Segments,
    OpenApi,
}

impl Route {
    fn resolve(path: &str) -> Option<Route> {
        Some(match path {
            "/metrics" => Route::Metrics,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/v1/stages" => Route::Stages,
            "/v1/segments" => Route::Segments,
            "/v1/openapi.json" => Route::OpenApi,
            _ => match path.strip_prefix("/v1/customers/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Route::Customer,
                _ => return None,
            },
        })
    }

    /// The scope a token needs for this route; `None`: any valid token.
    fn scope(self) -> Option<&'static str> {
        match self {
            Route::Customer => Some("customers:read"),
            Route::Stages | Route::Segments => Some("stats:read"),
            _ => None,
        }
    }
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
                async move { Ok::<_, Infallible>(route(state, req).await) }
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

fn with_header(
    mut r: Response<Full<Bytes>>,
    name: &'static str,
    value: String,
) -> Response<Full<Bytes>> {
    if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
        r.headers_mut().insert(name, v);
    }
    r
}

async fn route(state: Arc<HttpState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "method_not_allowed"}),
        );
    }
    let path = req.uri().path();
    let route = Route::resolve(path);
    if let Err(denied) = authorize(&state.config, path, route, &req) {
        return denied;
    }
    let Some(route) = route else {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found"}),
        );
    };
    match route {
        Route::Metrics => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            crate::telemetry::render(
                &state.prometheus,
                &state.shared.state_bytes(),
                &state.shared.timers_pending(),
            ),
        ),
        Route::Healthz => respond(StatusCode::OK, "text/plain", "ok\n"),
        Route::Readyz => {
            let (mut ready, mut why) = state.status.readiness();
            if ready && state.config.fold.enabled {
                (ready, why) = match state
                    .shared
                    .fold_readiness(state.config.http.ready_max_lag_records)
                {
                    Ok(why) => (true, why),
                    Err(why) => (false, why),
                };
            }
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond(code, "text/plain", format!("{why}\n"))
        }
        Route::Stages => counts(&state.shared, |c| c.stages().collect()),
        Route::Segments => counts(&state.shared, |c| c.segments().collect()),
        Route::OpenApi => json(StatusCode::OK, &openapi()),
        Route::Customer => {
            let id = percent_decode(&path["/v1/customers/".len()..]);
            let query = req.uri().query().map(str::to_string);
            customer(&state, &id, query.as_deref()).await
        }
    }
}

/// `Ok` when the request may proceed; otherwise the 401/403 answer.
#[allow(clippy::result_large_err)]
fn authorize(
    config: &Config,
    path: &str,
    route: Option<Route>,
    req: &Request<Incoming>,
) -> Result<(), Response<Full<Bytes>>> {
    let auth = &config.http.auth;
    if !auth.enabled || config.http.open_paths.iter().any(|p| p == path) {
        return Ok(());
    }
    let presented = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let unauthorized = |challenge: &str| {
        with_header(
            json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"error": "unauthorized"}),
            ),
            "www-authenticate",
            challenge.to_string(),
        )
    };
    let Some(presented) = presented else {
        return Err(unauthorized(r#"Bearer realm="pulse""#));
    };
    // Every configured token is compared, whichever matches, so the time taken does not tell
    // which one (or how much of one) matched.
    let mut matched = None;
    for t in &auth.tokens {
        if let Some(secret) = &t.token {
            if constant_time_eq(presented.as_bytes(), secret.as_bytes()) {
                matched = Some(t);
            }
        }
    }
    let Some(token) = matched else {
        return Err(unauthorized(
            r#"Bearer realm="pulse", error="invalid_token""#,
        ));
    };
    match route.and_then(Route::scope) {
        Some(scope) if !token.scopes.iter().any(|s| s == scope) => Err(with_header(
            json(
                StatusCode::FORBIDDEN,
                &serde_json::json!({"error": "insufficient_scope", "scope": scope}),
            ),
            "www-authenticate",
            format!(r#"Bearer realm="pulse", error="insufficient_scope", scope="{scope}""#),
        )),
        _ => Ok(()),
    }
}

/// Equality whose running time depends only on the length of `secret`, never on where
/// `presented` first differs or on its length.
pub fn constant_time_eq(presented: &[u8], secret: &[u8]) -> bool {
    let mut diff = u64::from(presented.len() != secret.len());
    for (i, s) in secret.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(!*s);
        diff |= u64::from(std::hint::black_box(p ^ s));
    }
    std::hint::black_box(diff) == 0
}

fn counts(
    shared: &Shared,
    of: impl Fn(&crate::fold::Counts) -> Vec<(&'static str, i64)>,
) -> Response<Full<Bytes>> {
    let held = shared.counts.read().expect("lock");
    let mut total: BTreeMap<&'static str, i64> = BTreeMap::new();
    let mut first = true;
    for c in held.values() {
        for (name, n) in of(c) {
            *total.entry(name).or_default() += n;
        }
        first = false;
    }
    if first {
        // No partition held: still name every stage or segment, at zero.
        let zero = crate::fold::Counts::default();
        total = of(&zero).into_iter().collect();
    }
    json(
        StatusCode::OK,
        &serde_json::json!({
            "partitions": held.keys().collect::<Vec<_>>(),
            "counts": total,
        }),
    )
}

async fn customer(state: &Arc<HttpState>, id: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    let n = state.shared.canonical_partitions.load(Ordering::Relaxed) as i32;
    if n == 0 {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "fold_not_running"}),
        );
    }
    let partition = partition_for(id.as_bytes(), n);
    if let Some(local) = customer_here(state, id, partition, query) {
        return local;
    }
    let owner = owner_of(state, partition).await;
    // 409 rather than a 307: a redirect to another host makes clients drop the Authorization
    // header (or auto-follow into a stale owner); the body tells a client or proxy where to go.
    let r = json(
        StatusCode::CONFLICT,
        &serde_json::json!({"error": "not_owner", "partition": partition, "owner": owner}),
    );
    if owner.is_none() {
        with_header(r, "retry-after", "1".into())
    } else {
        r
    }
}

/// The answer when this instance holds the customer's partition, `None` when it does not.
fn customer_here(
    state: &HttpState,
    id: &str,
    partition: i32,
    query: Option<&str>,
) -> Option<Response<Full<Bytes>>> {
    let partitions = state.shared.partitions.read().expect("lock");
    let (store, clock) = partitions.get(&partition)?;
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
                    return Some(json(
                        StatusCode::BAD_REQUEST,
                        &serde_json::json!({"error": "bad_at", "detail": "`at` must be RFC 3339 or epoch milliseconds"}),
                    ))
                }
            }
        }
    };
    Some(match store.customer(id) {
        // pulse keeps a customer's state as of its last event, not its past: an `at` before
        // that would score later events as if they had happened, so it is refused.
        Ok(Some(s)) if at < s.first_seen_at => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({
                "error": "not_seen_yet",
                "first_seen_at": pulse_codec::time::format_rfc3339(s.first_seen_at),
            }),
        ),
        Ok(Some(s)) if at < s.last_event_at => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({
                "error": "at_before_last_event",
                "last_event_at": pulse_codec::time::format_rfc3339(s.last_event_at),
                "detail": "pulse keeps each customer's state as of its last event; `at` may be that instant or later (`pulse replay --to-time` rebuilds the past)",
            }),
        ),
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
    })
}

/// The advertised address of the fold-group member holding `partition`, from a map cached
/// for `http.owner_cache_ms`. A map that names nobody else (mid-rebalance, or this instance
/// just lost the partition) is re-read once it is a quarter second old.
async fn owner_of(state: &Arc<HttpState>, partition: i32) -> Option<String> {
    let me = &state.config.http.advertised_addr;
    let ttl = Duration::from_millis(state.config.http.owner_cache_ms);
    let cached = state.owners.lock().expect("lock").clone();
    let usable = |map: &BTreeMap<i32, String>| map.get(&partition).filter(|o| *o != me).cloned();
    if let Some((at, map)) = &cached {
        let found = usable(map);
        if at.elapsed() < ttl && (found.is_some() || at.elapsed() < Duration::from_millis(250)) {
            return found;
        }
    }
    let config = state.config.clone();
    let read = tokio::task::spawn_blocking(move || {
        crate::kafka::fold_group_owners(&config, Duration::from_secs(3))
    })
    .await
    .expect("owner lookup task");
    match read {
        Ok(map) => {
            let found = usable(&map);
            *state.owners.lock().expect("lock") = Some((Instant::now(), map));
            found
        }
        Err(e) => {
            // Remembered like an answer, so an unreachable coordinator is asked once per cache
            // period, not once per request.
            tracing::warn!(error = %e, "cannot read the fold group's assignments");
            let map = cached.map(|(_, map)| map).unwrap_or_default();
            let found = usable(&map);
            *state.owners.lock().expect("lock") = Some((Instant::now(), map));
            found
        }
    }
}

/// The OpenAPI 3.1 description of every route in [`ROUTES`].
pub fn openapi() -> serde_json::Value {
    use serde_json::json;
    let error = |desc: &str| json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let denied = json!({
        "401": {"$ref": "#/components/responses/Unauthorized"},
        "403": {"$ref": "#/components/responses/Forbidden"},
    });
    let secured = |scope: Option<&str>| json!([{"bearer": scope.map_or(vec![], |s| vec![s])}]);
    let counts = |what: &str, scope: &str| {
        let mut responses = json!({
            "200": {
                "description": format!("Customers per announced {what}, summed over the canonical partitions this instance folds."),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Counts"}}}
            }
        });
        responses
            .as_object_mut()
            .expect("object")
            .extend(denied.as_object().expect("object").clone());
        json!({"get": {
            "summary": format!("Customer counts per {what} on this instance"),
            "operationId": format!("{what}Counts"),
            "security": secured(Some(scope)),
            "responses": responses,
        }})
    };
    let open = |summary: &str, content_type: &str, extra: serde_json::Value| {
        let mut responses = json!({"200": {"description": "OK", "content": {content_type: {"schema": {"type": "string"}}}}});
        responses
            .as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        json!({"get": {"summary": summary, "security": [{}], "responses": responses}})
    };
    let mut customer_responses = json!({
        "200": {
            "description": "The customer's profile, scores, stage and segment evaluated at `at` (default: the partition clock), with the explanation of the scores.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Customer"}}}
        },
        "400": error("`at` is neither RFC 3339 nor epoch milliseconds."),
        "404": error("No such customer in its partition (`unknown_customer`)."),
        "409": {
            "description": "The customer's partition is folded by another instance: ask `owner` (null while the group rebalances; retry after `Retry-After`). A 409 and not a 307 because clients drop Authorization on cross-host redirects.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NotOwner"}}}
        },
        "503": error("Fold is not running here."),
    });
    customer_responses
        .as_object_mut()
        .expect("object")
        .extend(denied.as_object().expect("object").clone());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "pulse",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Customer state folded from the canonical log. Each instance answers for the canonical partitions it folds.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/customers/{id}": {"get": {
                "summary": "One customer's profile",
                "operationId": "getCustomer",
                "security": secured(Some("customers:read")),
                "parameters": [
                    {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Customer id (percent-encoded)."},
                    {"name": "at", "in": "query", "required": false, "schema": {"type": "string"}, "description": "Evaluate at this instant: RFC 3339 or epoch milliseconds."},
                ],
                "responses": customer_responses,
            }},
            "/v1/stages": counts("stage", "stats:read"),
            "/v1/segments": counts("segment", "stats:read"),
            "/v1/openapi.json": {"get": {
                "summary": "This document",
                "security": secured(None),
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                },
            }},
            "/metrics": open("Prometheus exposition (open by default: `http.open_paths`)", "text/plain", json!({})),
            "/healthz": open("The process runs", "text/plain", json!({})),
            "/readyz": open("Every enabled pipeline runs, and fold holds the partitions the group assigned it, restored and within http.ready_max_lag_records of the canonical log's end", "text/plain", json!({"503": {"description": "Not ready; the body says why.", "content": {"text/plain": {"schema": {"type": "string"}}}}})),
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Opaque tokens from `[http.auth]`; scopes `customers:read` and `stats:read`. Enforced only when `http.auth.enabled`.",
                },
            },
            "responses": {
                "Unauthorized": {
                    "description": "No token, or not a configured one.",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer realm=\"pulse\"`"}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
                "Forbidden": {
                    "description": "The token lacks the route's scope.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}, "detail": {"type": "string"}, "scope": {"type": "string"}}},
                "NotOwner": {"type": "object", "required": ["error", "partition", "owner"], "properties": {
                    "error": {"const": "not_owner"},
                    "partition": {"type": "integer"},
                    "owner": {"type": ["string", "null"], "description": "Base URL of the owning instance (its `http.advertised_addr`)."},
                }},
                "Counts": {"type": "object", "required": ["partitions", "counts"], "properties": {
                    "partitions": {"type": "array", "items": {"type": "integer"}},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                }},
                "Customer": {"type": "object", "required": ["customer_id", "partition", "evaluated_at", "stage", "segment", "scores", "state"], "properties": {
                    "customer_id": {"type": "string"},
                    "partition": {"type": "integer"},
                    "evaluated_at": {"type": "string", "format": "date-time"},
                    "stage": {"type": "string"},
                    "segment": {"type": "string"},
                    "announced_stage": {"type": "string"},
                    "announced_segment": {"type": "string"},
                    "scores": {"type": "object", "additionalProperties": {"type": "number"}},
                    "next_change": {"type": ["string", "null"], "format": "date-time"},
                    "state": {"type": "object"},
                }},
            },
        },
    })
}

/// Decodes `%XX` escapes byte-wise (a `%` not followed by two hex digits stays as it is), then
/// reads the bytes as UTF-8 with replacement: no input can make it panic.
fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decode_takes_any_input_without_panicking() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("%E2%82%AC"), "€");
        // A `%` before a multi-byte character, or at the end, is kept as it is.
        assert_eq!(percent_decode("%€"), "%€");
        assert_eq!(percent_decode("%€€"), "%€€");
        assert_eq!(percent_decode("x%4"), "x%4");
        assert_eq!(percent_decode("x%41"), "xA");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcdeX", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcdef0", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"", b"0123456789abcdef"));
    }

    #[test]
    fn routes_resolve() {
        for r in ROUTES {
            let path = r.replace("{id}", "c-1");
            assert!(Route::resolve(&path).is_some(), "{path}");
        }
        assert_eq!(Route::resolve("/v1/customers/"), None);
        assert_eq!(Route::resolve("/v1/customers/a/b"), None);
    }
}
