//! Test harness for pulse's end-to-end tests: real Kafka-protocol brokers (librdkafka's
//! in-process mock cluster, and the tansu broker as a separate process), producing and
//! consuming helpers, and a minimal real HTTP client. No mocks of pulse's own I/O.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pulse::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// Logs to the test's captured output (shown for failing tests); `RUST_LOG` filters.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A real Kafka-protocol broker for one test.
pub enum Broker {
    /// librdkafka's in-process mock cluster: fast, no install.
    Mock(MockCluster<'static, DefaultProducerContext>),
    /// The tansu broker binary (installed by scripts/install-tansu.sh) as a separate process,
    /// on in-memory storage or on S3 (moto) that survives a restart.
    Tansu(Tansu),
}

/// A tansu process and how to start it again on the same port and storage.
pub struct Tansu {
    child: Option<Child>,
    addr: String,
    storage: String,
    env: Vec<(String, String)>,
    /// The S3 stand-in the storage lives in (stopped after tansu, when the broker is dropped).
    s3: Option<S3>,
}

/// How to stop a broker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: tansu shuts down in ~2 s.
    Term,
    /// SIGKILL: no chance to flush anything.
    Kill,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_listening(addr: &str, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on {addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Sends `signal` to `child` and waits for it to exit.
fn stop_child(child: &mut Child, signal: Signal) -> anyhow::Result<()> {
    match signal {
        Signal::Kill => child.kill()?,
        Signal::Term => {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            anyhow::ensure!(status.success(), "kill -TERM {}", child.id());
        }
    }
    child.wait()?;
    Ok(())
}

impl Tansu {
    fn start(storage: &str, env: Vec<(String, String)>, s3: Option<S3>) -> anyhow::Result<Tansu> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut t = Tansu {
            child: None,
            addr,
            storage: storage.to_string(),
            env,
            s3,
        };
        t.spawn()?;
        Ok(t)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = tansu_bin();
        if !bin.exists() {
            bail!(
                "tansu not installed at {}: run scripts/install-tansu.sh (scripts/test.sh does)",
                bin.display()
            );
        }
        let url = format!("tcp://{}", self.addr);
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage, "--silent"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        self.child = Some(child);
        wait_listening(&self.addr, "tansu")
    }

    /// Stops the process with `signal` (clients see the broker go away).
    pub fn stop(&mut self, signal: Signal) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, signal)?;
        }
        Ok(())
    }

    /// Starts it again on the same address and storage.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "tansu is running");
        self.spawn()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(self.s3.take());
    }
}

/// moto's S3 stand-in (`moto_server`, installed by scripts/install-moto.sh) on a free
/// loopback port, with the bucket `tansu` created.
pub struct S3 {
    child: Child,
    pub endpoint: String,
}

impl S3 {
    pub fn start() -> anyhow::Result<S3> {
        let bin = moto_bin();
        if !bin.exists() {
            bail!(
                "moto_server not installed at {}: run scripts/install-moto.sh (scripts/test.sh does)",
                bin.display()
            );
        }
        let port = free_port()?;
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let addr = format!("127.0.0.1:{port}");
        let s3 = S3 {
            child,
            endpoint: format!("http://{addr}"),
        };
        wait_listening(&addr, "moto_server")?;
        let status = http_put(&addr, "/tansu")?;
        anyhow::ensure!(status == 200, "create bucket tansu: HTTP {status}");
        Ok(s3)
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An empty PUT over a real TCP connection; returns the status.
fn http_put(addr: &str, path: &str) -> anyhow::Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    raw.split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()
        .context("status")
}

impl Broker {
    pub fn mock() -> Broker {
        Broker::Mock(MockCluster::new(1).expect("mock cluster"))
    }

    /// Starts tansu on a free loopback port, in-memory storage. Fails (never skips) when it is
    /// not installed.
    pub fn tansu() -> anyhow::Result<Broker> {
        Ok(Broker::Tansu(Tansu::start(
            "memory://tansu/",
            Vec::new(),
            None,
        )?))
    }

    /// Starts moto's S3 stand-in and tansu on `s3://tansu/` in it: data that survives a broker
    /// restart. Fails (never skips) when either is not installed.
    pub fn tansu_s3() -> anyhow::Result<Broker> {
        let s3 = S3::start()?;
        let env = [
            ("AWS_ENDPOINT", s3.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Ok(Broker::Tansu(Tansu::start("s3://tansu/", env, Some(s3))?))
    }

    /// The tansu process, to stop and start it again.
    pub fn tansu_process(&mut self) -> Option<&mut Tansu> {
        match self {
            Broker::Tansu(t) => Some(t),
            Broker::Mock(_) => None,
        }
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Broker::Mock(m) => m.bootstrap_servers(),
            Broker::Tansu(t) => t.addr.clone(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Broker::Mock(_) => "mock",
            Broker::Tansu(t) if t.s3.is_some() => "tansu-s3",
            Broker::Tansu(_) => "tansu",
        }
    }

    /// Creates `topics` with `partitions` partitions each.
    pub async fn create_topics(
        &self,
        config: &Config,
        topics: &[&str],
        partitions: i32,
    ) -> anyhow::Result<()> {
        for t in topics {
            match self {
                Broker::Mock(m) => m.create_topic(t, partitions, 1)?,
                Broker::Tansu(_) => pulse::kafka::create_topic(config, t, partitions).await?,
            }
        }
        Ok(())
    }

    /// Creates every topic named in `config`: the canonical log and the changelog with
    /// `canonical_partitions`, the rest with 2.
    pub async fn create_all(
        &self,
        config: &Config,
        canonical_partitions: i32,
    ) -> anyhow::Result<()> {
        for (key, topic) in config.topics.named() {
            let n = if key == "topics.canonical" || key == "topics.changelog" {
                canonical_partitions
            } else {
                2
            };
            self.create_topics(config, &[topic], n).await?;
        }
        Ok(())
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

pub fn moto_bin() -> PathBuf {
    std::env::var_os("PULSE_MOTO_SERVER").map_or_else(
        || repo_root().join(".tools/venv-moto/bin/moto_server"),
        PathBuf::from,
    )
}

pub fn tansu_bin() -> PathBuf {
    std::env::var_os("PULSE_TANSU")
        .map_or_else(|| repo_root().join(".tools/tansu/tansu"), PathBuf::from)
}

/// The `[scoring]` before it was fitted (rule_version v2, CDNOW's model parameters), as a
/// config layer: for tests whose timings were worked out by hand under those rules.
pub const SCORING_V2: &str = include_str!("../../crates/pulse-core/tests/fixtures/scoring-v2.toml");

/// A service config for a test: the broker, a state dir, a fresh group, quick commits and
/// ticks, an ephemeral HTTP port; `extra` (TOML) on top.
pub fn config(broker: &Broker, state_dir: &Path, group: &str, extra: &str) -> Config {
    init_logs();
    let base = format!(
        "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"{group}\"\n\
         [ingest]\ntick_interval_ms = 100\nbatch_max_ms = 20\n\
         [fold]\nstate_dir = \"{}\"\ncommit_interval_ms = 100\n\
         [http]\naddr = \"127.0.0.1:0\"\n",
        broker.bootstrap(),
        state_dir.display(),
    );
    Config::with_layers(&[&base, extra]).expect("test config")
}

/// A fold-only instance's config (ingest off) whose alert topics and changelog belong to
/// `run` (`<run>.churn`, `<run>.segments`, `<run>.lifecycle`, `<run>.changelog`), so runs over
/// one canonical log never see each other's output; `fold` holds extra `[fold]` lines.
pub fn fold_run_config(broker: &Broker, dir: &Path, run: &str, fold: &str) -> Config {
    config(
        broker,
        dir,
        run,
        &format!(
            "[ingest]\nenabled = false\n[fold]\n{fold}\n\
             [topics]\nchurn_warnings = \"{run}.churn\"\nsegment_changes = \"{run}.segments\"\n\
             lifecycle_changes = \"{run}.lifecycle\"\nchangelog = \"{run}.changelog\"\n"
        ),
    )
}

/// Creates a run's topics (see [`fold_run_config`]): the changelog with the canonical log's
/// `partitions` (each run its own: a fresh state dir restores from it, and one run must not
/// start from another's state), the alert topics with 2.
pub async fn create_run_topics(
    broker: &Broker,
    cfg: &Config,
    partitions: i32,
) -> anyhow::Result<()> {
    let t = &cfg.topics;
    broker
        .create_topics(
            cfg,
            &[&t.churn_warnings, &t.segment_changes, &t.lifecycle_changes],
            2,
        )
        .await?;
    broker.create_topics(cfg, &[&t.changelog], partitions).await
}

/// One produced or consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces and waits for the acknowledgement; returns (partition, offset).
pub async fn produce(
    p: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    value: &[u8],
    headers: &[(&str, &str)],
) -> anyhow::Result<(i32, i64)> {
    let hdrs = headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(*v),
        })
    });
    let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(value).headers(hdrs);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    let delivery = p
        .send(rec, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)?;
    Ok((delivery.partition, delivery.offset))
}

/// Reads `topics` from the beginning until `done` holds for what was read, or `timeout`.
pub fn consume_until(
    bootstrap: &str,
    topics: &[&str],
    timeout: Duration,
    done: impl Fn(&[Rec]) -> bool,
) -> anyhow::Result<Vec<Rec>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", pulse::wall_clock_ms()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()?;
    consumer.subscribe(topics)?;
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !done(&out) {
        if Instant::now() > deadline {
            bail!(
                "timed out after {timeout:?} with {} records from {topics:?}",
                out.len()
            );
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            out.push(Rec {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: m.payload().unwrap_or_default().to_vec(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// Reads `topics` until nothing new arrives for `quiet` after the first record.
pub fn consume_all(bootstrap: &str, topics: &[&str], quiet: Duration) -> anyhow::Result<Vec<Rec>> {
    let last = std::cell::Cell::new((0usize, Instant::now()));
    consume_until(bootstrap, topics, Duration::from_secs(120), |recs| {
        let (n, at) = last.get();
        if recs.len() != n {
            last.set((recs.len(), Instant::now()));
            false
        } else {
            n > 0 && at.elapsed() > quiet
        }
    })
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// GET over a real TCP connection; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let r = http_request(addr, path, &[])?;
    Ok((r.status, r.body))
}

/// One HTTP response: status, headers (names lowercased) and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// GET with extra request `headers` over a real TCP connection.
pub fn http_request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no header end")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no status")?
        .parse()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_string(),
    })
}

/// GET `url` (`http://host:port/path`, as in a `not_owner` answer's owner + a path).
pub fn http_get_url(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<HttpResponse> {
    let rest = url.strip_prefix("http://").context("http:// URL")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = host.parse().context("host:port")?;
    http_request(addr, if path.is_empty() { "/" } else { path }, headers)
}

/// The state of every customer in the partition stores under `state_dir` (opened read-only
/// after the service stopped), keyed by customer id, plus each partition's checkpoint.
pub fn read_state(
    state_dir: &Path,
) -> anyhow::Result<(
    BTreeMap<String, pulse_core::CustomerState>,
    BTreeMap<String, pulse_store::Checkpoint>,
)> {
    let mut customers = BTreeMap::new();
    let mut checkpoints = BTreeMap::new();
    for entry in std::fs::read_dir(state_dir)? {
        let path = entry?.path();
        let store = pulse_store::PartitionStore::open(&path, false)?;
        for c in store.customers() {
            let (id, s) = c?;
            customers.insert(id, s);
        }
        if let Some(cp) = store.checkpoint()? {
            checkpoints.insert(
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                cp,
            );
        }
    }
    Ok((customers, checkpoints))
}

/// Runs ingest alone (with `cfg`, whose fold must be disabled) over the simulator's records,
/// so that several fold runs can read one and the same canonical log. Creates the topics.
/// Returns the end offset of each canonical partition once ingest has stopped.
pub async fn build_canonical_log(
    broker: &Broker,
    cfg: &Config,
    sim: pulse::simulate::SimConfig,
    partitions: i32,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    assert!(!cfg.fold.enabled, "ingest only");
    broker.create_all(cfg, partitions).await?;
    let records: Vec<_> = pulse::simulate::Simulator::new(sim).collect();
    let running = pulse::start(cfg.clone()).await?;
    let p = producer(&broker.bootstrap());
    for r in &records {
        produce(
            &p,
            pulse::demo::input_topic(cfg, r.topic),
            r.key.as_deref(),
            &r.value,
            &[],
        )
        .await?;
    }
    let valid = records.iter().filter(|r| r.malformed.is_none()).count();
    let canonical = consume_until(
        &broker.bootstrap(),
        &[&cfg.topics.canonical],
        Duration::from_secs(120),
        |recs| recs.iter().filter(|r| r.key.is_some()).count() >= valid,
    )?;
    assert_eq!(
        canonical.iter().filter(|r| r.key.is_some()).count(),
        valid,
        "every valid input event reached the canonical log once"
    );
    running.stop().await?;
    let mut ends = BTreeMap::new();
    for r in consume_all(
        &broker.bootstrap(),
        &[&cfg.topics.canonical],
        Duration::from_secs(2),
    )? {
        let e = ends.entry(r.partition).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    Ok(ends)
}

/// [`build_canonical_log`] by an ingest-only instance (group `ingest`, state under `dir`)
/// over `customers` simulated customers and `days` days of traffic, no malformed input.
pub async fn simulated_canonical_log(
    broker: &Broker,
    dir: &Path,
    customers: u32,
    days: i64,
    partitions: i32,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let cfg = config(broker, dir, "ingest", "[fold]\nenabled = false\n");
    let sim = pulse::simulate::SimConfig {
        customers,
        duration_ms: days * pulse_core::DAY,
        malformed_per_mille: 0,
        ..pulse::simulate::SimConfig::default()
    };
    build_canonical_log(broker, &cfg, sim, partitions).await
}

/// A placed order of `amount_minor` euro cents, one item, as fold sees it.
pub fn placed_order(
    customer: &str,
    event_id: &str,
    at: i64,
    amount_minor: i64,
) -> pulse_core::Event {
    use pulse_core::event::{Body, Order, OrderKind};
    pulse_core::Event {
        event_id: event_id.into(),
        customer_id: customer.into(),
        occurred_at: at,
        body: Body::Order(Order {
            kind: OrderKind::Placed,
            order_id: format!("o-{event_id}"),
            amount_minor,
            currency: "EUR".into(),
            item_count: 1,
            channel: None,
        }),
    }
}

/// Produces `events` straight to the canonical log `topic` (keyed by customer, so murmur2
/// puts each on its customer's partition) and moves `ends` past them.
pub async fn append_events(
    p: &FutureProducer,
    topic: &str,
    events: &[pulse_core::Event],
    ends: &mut BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    use pulse_codec::{encode_canonical, Canonical, Encoding, Source};
    for e in events {
        let source = Source {
            topic: "test".into(),
            partition: 0,
            offset: 0,
        };
        let bytes = encode_canonical(&Canonical::Event(e.clone(), source), Encoding::Json);
        let (partition, offset) = produce(p, topic, Some(&e.customer_id), &bytes, &[]).await?;
        let end = ends.entry(partition).or_insert(0);
        *end = (*end).max(offset + 1);
    }
    Ok(())
}

/// Whether a running fold has committed every partition up to its end offset.
pub fn caught_up(running: &pulse::Running, ends: &BTreeMap<i32, i64>) -> bool {
    let parts = running.shared.partitions.read().expect("lock");
    ends.iter().all(|(p, end)| {
        parts
            .get(p)
            .and_then(|(s, _)| s.checkpoint().ok().flatten())
            .is_some_and(|c| c.next_offset >= *end)
    })
}

/// Alerts by `alert_id` (the `ce_id` header), every copy's bytes in arrival order.
pub type AlertsById = BTreeMap<String, Vec<Vec<u8>>>;

/// Every alert on the alert topics of `cfg`, by id (reads until the topics are quiet).
pub fn alerts_by_id(broker: &Broker, cfg: &Config) -> anyhow::Result<AlertsById> {
    let t = &cfg.topics;
    let mut m = AlertsById::new();
    for r in consume_all(
        &broker.bootstrap(),
        &[&t.churn_warnings, &t.segment_changes, &t.lifecycle_changes],
        Duration::from_secs(2),
    )? {
        m.entry(r.headers["ce_id"].clone())
            .or_default()
            .push(r.value);
    }
    Ok(m)
}

/// Asserts that `other` holds exactly the alert ids of `reference` and that every copy of
/// each is byte-identical to the reference's first; returns how many re-sent duplicates
/// `other` holds.
pub fn assert_same_alerts(reference: &AlertsById, other: &AlertsById) -> usize {
    assert!(!reference.is_empty(), "no alerts to compare");
    assert_eq!(
        reference.keys().collect::<Vec<_>>(),
        other.keys().collect::<Vec<_>>(),
        "same alert ids"
    );
    let mut duplicates = 0;
    for (id, copies) in other {
        duplicates += copies.len() - 1;
        assert!(
            copies.iter().all(|c| c == &reference[id][0]),
            "alert {id} re-sent with different bytes"
        );
    }
    duplicates
}

/// Sums `f` over the partition stores a running service holds.
pub fn sum_partitions(
    running: &pulse::Running,
    f: impl Fn(&pulse_store::PartitionStore) -> i64,
) -> i64 {
    running
        .shared
        .partitions
        .read()
        .expect("lock")
        .values()
        .map(|(s, _)| f(s))
        .sum()
}

/// Canonical-log records a running service has folded and committed: the sum of its
/// partitions' checkpoints.
pub fn folded(running: &pulse::Running) -> i64 {
    sum_partitions(running, |s| {
        s.checkpoint().ok().flatten().map_or(0, |c| c.next_offset)
    })
}

/// Starts a service on `cfg`, waits until fold has reached `ends` and stops it.
pub async fn run_to_end(cfg: Config, ends: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
    let running = pulse::start(cfg).await?;
    wait_for(
        "fold to reach the end of the log",
        Duration::from_secs(120),
        || caught_up(&running, ends),
    )
    .await?;
    running.stop().await?;
    Ok(())
}

/// The customer the timer tests watch, `buyer`: six orders a week apart (days 0 … 35,
/// 30.00 EUR each) produced and folded (its profile counts six), so a timer is scheduled for
/// its silence. Returns a customer on the other of the canonical log's two partitions, whose
/// events move ingest's watermark while the buyer's partition only sees ticks.
pub async fn weekly_buyer_and_driver(
    p: &FutureProducer,
    cfg: &Config,
    addr: SocketAddr,
    buyer: &str,
) -> anyhow::Result<String> {
    let buyer_partition = pulse::kafka::partition_for(buyer.as_bytes(), 2);
    let driver = (0..)
        .map(|i| format!("c-driver-{i}"))
        .find(|c| pulse::kafka::partition_for(c.as_bytes(), 2) != buyer_partition)
        .expect("a key on the other partition");
    for week in 0..6 {
        let order = format!(
            r#"{{"event_id":"o-{week}","customer_id":"{buyer}","occurred_at":{},"type":"order_placed","order_id":"o{week}","amount":"30.00","currency":"EUR"}}"#,
            day(week * 7)
        );
        produce(p, &cfg.topics.orders, Some(buyer), order.as_bytes(), &[]).await?;
    }
    // Folded before time moves on, so none of them arrives late.
    wait_for(
        "the six orders to be folded",
        Duration::from_secs(60),
        || {
            http_get(addr, &format!("/v1/customers/{buyer}"))
                .is_ok_and(|(code, body)| code == 200 && body.contains(r#""count":6"#))
        },
    )
    .await?;
    Ok(driver)
}

/// Day `d` of the tests' calendar (2025-01-01 + d days) in epoch milliseconds.
pub fn day(d: i64) -> i64 {
    1_735_689_600_000 + d * pulse_core::DAY
}
