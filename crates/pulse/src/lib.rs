//! pulse: the service. Config, the Kafka ingest and fold pipelines, the HTTP surface, the demo,
//! the simulator and the benchmarks. It owns all I/O; every rule lives in pulse-core.
//!
//! [`start`] starts the whole service; `pulse run` and the end-to-end tests both call it.

pub mod backtest;
pub mod bench;
pub mod config;
pub mod demo;
pub mod fit;
pub mod fold;
pub mod history;
pub mod http;
pub mod ingest;
pub mod kafka;
pub mod producer;
pub mod replay;
pub mod simulate;
pub mod tail;
pub mod telemetry;
pub mod topics;
pub mod txn;
pub mod whatif;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("kafka")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("state store")]
    Store(#[from] pulse_store::StoreError),
    #[error("cannot create state directory {0}")]
    StateDir(PathBuf, #[source] std::io::Error),
    #[error("rebalance: {0}")]
    Rebalance(String),
    #[error("producer dropped a delivery")]
    ProducerGone,
    #[error("http listener")]
    Http(#[source] std::io::Error),
    #[error("cannot write the alert file")]
    Sink(#[source] std::io::Error),
    #[error("changelog topic {changelog} has {changelog_partitions} partitions but the canonical log {canonical} has {canonical_partitions}; they must be equal")]
    ChangelogPartitions {
        changelog: String,
        changelog_partitions: i32,
        canonical: String,
        canonical_partitions: i32,
    },
    #[error("restore from the changelog: {0}")]
    Restore(String),
    #[error("exactly-once: {0}")]
    Transaction(String),
}

/// Liveness of the pipelines, for /readyz.
#[derive(Default)]
pub struct Status {
    ingest_running: AtomicBool,
    fold_running: AtomicBool,
    failed: Mutex<Option<String>>,
    ingest_enabled: AtomicBool,
    fold_enabled: AtomicBool,
}

impl Status {
    pub fn readiness(&self) -> (bool, String) {
        if let Some(why) = self.failed.lock().expect("lock").clone() {
            return (false, format!("failed: {why}"));
        }
        let ingest = !self.ingest_enabled.load(Ordering::Relaxed)
            || self.ingest_running.load(Ordering::Relaxed);
        let fold =
            !self.fold_enabled.load(Ordering::Relaxed) || self.fold_running.load(Ordering::Relaxed);
        match (ingest, fold) {
            (true, true) => (true, "ready".into()),
            (false, _) => (false, "ingest not running".into()),
            (_, false) => (false, "fold not running".into()),
        }
    }
}

/// A running service: its HTTP address and the handle to stop it.
pub struct Running {
    pub http_addr: SocketAddr,
    pub shared: Arc<fold::Shared>,
    pub status: Arc<Status>,
    shutdown: watch::Sender<bool>,
    /// `None` once `failed` has returned the pipelines' result.
    done: Option<oneshot::Receiver<Result<(), PipelineError>>>,
    abort: oneshot::Sender<()>,
}

impl Running {
    /// Asks the pipelines to finish their batch, commit and stop; waits for them.
    pub async fn stop(self) -> Result<(), PipelineError> {
        let _ = self.shutdown.send(true);
        match self.done {
            Some(done) => done.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }

    /// Cancels the pipelines where they stand: no final commit, no outbox drain (a crash of
    /// the pipelines, as far as a process can simulate one in itself). Waits until they are
    /// gone.
    pub async fn abort(self) {
        let _ = self.abort.send(());
        if let Some(done) = self.done {
            let _ = done.await;
        }
    }

    /// Resolves when a pipeline stops by itself (an error), without stopping the others.
    /// Cancel-safe; after it returned once it never resolves again.
    pub async fn failed(&mut self) -> Result<(), PipelineError> {
        let Some(done) = self.done.as_mut() else {
            return std::future::pending().await;
        };
        let result = done.await.unwrap_or(Ok(()));
        self.done = None;
        result
    }
}

/// Starts the enabled pipelines and the HTTP server. Returns once the HTTP port is bound.
pub async fn start(mut config: Config) -> Result<Running, PipelineError> {
    let listener = http::bind(config.http.addr)
        .await
        .map_err(PipelineError::Http)?;
    let http_addr = listener.local_addr().map_err(PipelineError::Http)?;
    if config.http.advertised_addr.is_empty() {
        config.http.advertised_addr = format!("http://{http_addr}");
    }
    let config = Arc::new(config);
    let prometheus = telemetry::prometheus();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let status = Arc::new(Status::default());
    status
        .ingest_enabled
        .store(config.ingest.enabled, Ordering::Relaxed);
    status
        .fold_enabled
        .store(config.fold.enabled, Ordering::Relaxed);
    let shared = Arc::new(fold::Shared::default());
    let http_state = Arc::new(http::HttpState::new(
        status.clone(),
        shared.clone(),
        config.clone(),
        prometheus,
    ));
    tokio::spawn(http::serve(listener, http_state, shutdown_rx.clone()));

    let mut pipelines = tokio::task::JoinSet::new();
    if config.ingest.enabled {
        let (c, s, st) = (config.clone(), shutdown_rx.clone(), status.clone());
        pipelines.spawn(async move {
            st.ingest_running.store(true, Ordering::Relaxed);
            let r = ingest::run(c, s).await;
            st.ingest_running.store(false, Ordering::Relaxed);
            r
        });
    }
    if config.fold.enabled {
        let (c, s, st, sh) = (
            config.clone(),
            shutdown_rx.clone(),
            status.clone(),
            shared.clone(),
        );
        pipelines.spawn(async move {
            st.fold_running.store(true, Ordering::Relaxed);
            let r = fold::run(c, s, sh, fold::FoldOptions::default()).await;
            st.fold_running.store(false, Ordering::Relaxed);
            r
        });
    }
    let (done_tx, done_rx) = oneshot::channel();
    let (abort_tx, mut abort_rx) = oneshot::channel::<()>();
    let (stop_all, st) = (shutdown_tx.clone(), status.clone());
    // Supervises the pipelines: the first failure stops the others; an abort cancels them all
    // and waits until they are gone (their consumers closed, their stores released).
    tokio::spawn(async move {
        let mut result = Ok(());
        // Dropping `Running` without `abort` closes the channel; then it is never polled again.
        let mut abort_open = true;
        loop {
            tokio::select! {
                asked = &mut abort_rx, if abort_open => {
                    if asked.is_ok() {
                        pipelines.shutdown().await;
                        break;
                    }
                    abort_open = false;
                }
                joined = pipelines.join_next() => {
                    let Some(joined) = joined else { break };
                    let r = joined.unwrap_or_else(|e| Err(PipelineError::Rebalance(format!("pipeline task panicked: {e}"))));
                    if let Err(e) = r {
                        tracing::error!(error = %error_chain(&e), "pipeline failed; stopping the service");
                        *st.failed.lock().expect("lock") = Some(error_chain(&e));
                        let _ = stop_all.send(true);
                        if result.is_ok() {
                            result = Err(e);
                        }
                    }
                }
            }
        }
        let _ = done_tx.send(result);
    });
    Ok(Running {
        http_addr,
        shared,
        status,
        shutdown: shutdown_tx,
        done: Some(done_rx),
        abort: abort_tx,
    })
}

/// `error: cause: cause` on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

/// The wall clock, for wall-clock ticks and the demo only: fold never reads it.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
