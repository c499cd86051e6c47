//! The `pulse` binary as a process under faults: SIGKILL at random points in a crash loop, and
//! a state directory that refuses writes mid-stream. Afterwards the final state equals a clean
//! `pulse replay` of the same canonical log, every replayed alert is on the live alert topics,
//! and every duplicate there is byte-identical to its first copy.
//!
//! Broker: librdkafka's mock cluster, created in this test process and reached by the child
//! processes over loopback TCP. It speaks the real wire protocol, starts in milliseconds and
//! needs nothing installed; what it cannot show (transactions' isolation: README, "Test brokers") is not
//! asserted here. Its known limit — each partition keeps ~5 MiB, older data silently pruned —
//! is handled by spreading the data over 16 partitions per topic and asserting that no topic
//! was pruned (every low watermark is 0), so the test can never pass because data vanished.
//! tansu would cost a process and ~3 s per group join per restart for no extra assurance here.
//!
//! Rerun a crash loop with `PULSE_CRASH_SEED=<seed printed by the failing run>`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, Producer, ThreadedProducer,
};
use rdkafka::ClientConfig;

const PARTITIONS: i32 = 16;
const GROUP: &str = "crash";
/// Protobuf keeps the canonical log within the mock broker's per-partition retention.
const CANONICAL_ENCODING: &str = "protobuf";

/// The mock cluster, owned by a client created with `test.mock.num.brokers` so that its
/// handle is reachable: the first group join then takes ~0.15 s instead of 3 s (README, "Test brokers"),
/// which is what lets ten restarts fit in the time budget.
struct Broker {
    _handle: BaseProducer,
    bootstrap: String,
}

impl Broker {
    /// Every topic of the default config, 16 partitions each.
    fn new() -> Broker {
        let handle: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()
            .expect("mock cluster");
        #[allow(unsafe_code)]
        // SAFETY: the handle is a live client created with test.mock.num.brokers, so it owns a
        // mock cluster; the call only sets an integer on it.
        unsafe {
            let cluster =
                rdkafka::bindings::rd_kafka_handle_mock_cluster(handle.client().native_ptr());
            assert!(!cluster.is_null());
            rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
        }
        let mock = handle.client().mock_cluster().expect("mock cluster");
        pulse::demo::create_mock_topics(&mock, &config(), PARTITIONS, PARTITIONS)
            .expect("create topics");
        let bootstrap = mock.bootstrap_servers();
        drop(mock);
        Broker {
            _handle: handle,
            bootstrap,
        }
    }
}

/// The child's config file: the session timeout is the time a SIGKILLed member holds its
/// partitions before the group hands them to its successor; shorter than pulse's 6 s so the
/// crash loop spends its time folding, not waiting.
fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("pulse.toml");
    std::fs::write(
        &path,
        "[kafka.properties]\n\"session.timeout.ms\" = \"3000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
    )
    .expect("config file");
    path
}

fn pulse() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pulse"))
}

fn config() -> pulse::Config {
    pulse::Config::with_overrides("").expect("default config")
}

/// Uniform in `lo..hi` milliseconds: the kill schedule, reproducible from the printed seed.
fn millis(rng: &mut pulse::simulate::Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo + rng.next_u64() % (hi - lo))
}

fn seed() -> u64 {
    std::env::var("PULSE_CRASH_SEED")
        .ok()
        .map(|s| s.parse().expect("PULSE_CRASH_SEED must be an integer"))
        .unwrap_or_else(|| pulse::wall_clock_ms() as u64)
}

/// The simulator's records (no malformed ones), as (topic, key, value).
fn records(customers: u32, days: i64) -> Vec<(String, Option<String>, Vec<u8>)> {
    let cfg = config();
    let sim = pulse::simulate::SimConfig {
        customers,
        duration_ms: days * pulse_core::DAY,
        malformed_per_mille: 0,
        ..Default::default()
    };
    pulse::simulate::Simulator::new(sim)
        .map(|r| {
            let topic = pulse::demo::input_topic(&cfg, r.topic).to_string();
            (topic, r.key, r.value)
        })
        .collect()
}

/// Produces `records` from a thread, `per_second` at most, without awaiting each delivery;
/// returns once all are acknowledged. Pacing only spreads the input over the crash loop.
fn feed(
    bootstrap: String,
    records: Vec<(String, Option<String>, Vec<u8>)>,
    per_second: usize,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "20")
            .create()
            .expect("producer");
        let started = Instant::now();
        let chunk = (per_second / 10).max(1);
        for (i, (topic, key, value)) in records.iter().enumerate() {
            if i % chunk == 0 {
                let due = Duration::from_secs_f64(i as f64 / per_second as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            let mut rec: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).payload(value);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((e, r)) => {
                        assert!(
                            matches!(
                                e,
                                rdkafka::error::KafkaError::MessageProduction(
                                    rdkafka::types::RDKafkaErrorCode::QueueFull
                                )
                            ),
                            "produce: {e}"
                        );
                        rec = r;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        }
        producer
            .flush(Duration::from_secs(60))
            .expect("every input record acknowledged");
        records.len()
    })
}

fn watermarks(bootstrap: &str, topic: &str) -> BTreeMap<i32, (i64, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    (0..PARTITIONS)
        .map(|p| {
            let w = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p, w)
        })
        .collect()
}

fn ends(bootstrap: &str, topic: &str) -> BTreeMap<i32, i64> {
    watermarks(bootstrap, topic)
        .into_iter()
        .map(|(p, (_, h))| (p, h))
        .collect()
}

/// The offsets a consumer group committed on `topic` (-1001 when none).
fn committed(bootstrap: &str, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .map(|tpl| {
            tpl.elements()
                .iter()
                .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
                .collect()
        })
        .unwrap_or_default()
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// A `pulse run` child process.
struct Service {
    child: Child,
    addr: String,
    log: PathBuf,
    spawned: Instant,
}

impl Service {
    /// Starts `pulse run` on `state_dir`, JSON logs to `log`; returns once it printed its
    /// HTTP address.
    fn start(bootstrap: &str, config: &Path, state_dir: &Path, log: PathBuf) -> Service {
        let spawned = Instant::now();
        let mut child = pulse()
            .args(["run", "--http-addr", "127.0.0.1:0", "--log-format", "json"])
            .arg("--config")
            .arg(config)
            .env("PULSE__ENCODING__CANONICAL", CANONICAL_ENCODING)
            .env("PULSE__KAFKA__BOOTSTRAP_SERVERS", bootstrap)
            .env("PULSE__KAFKA__GROUP_ID", GROUP)
            .env("PULSE__FOLD__STATE_DIR", state_dir)
            .env("PULSE__FOLD__COMMIT_INTERVAL_MS", "100")
            .env("PULSE__INGEST__TICK_INTERVAL_MS", "200")
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn pulse");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no http line; log: {}", tail(&log)));
        let addr = first
            .strip_prefix("http: http://")
            .unwrap_or_else(|| panic!("first line: {first}"))
            .to_string();
        Service {
            child,
            addr,
            log,
            spawned,
        }
    }

    /// Waits until fold holds partitions and /readyz is green (so a kill lands in folding, not
    /// in a group join); returns the time since the process was spawned (time to ready).
    fn wait_assigned(&mut self) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, body)) = http_get(&self.addr, "/metrics") {
                let assigned = body
                    .lines()
                    .find_map(|l| l.strip_prefix("pulse_fold_partitions_assigned "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0);
                if assigned > 0.0 && matches!(http_get(&self.addr, "/readyz"), Some((200, _))) {
                    return self.spawned.elapsed();
                }
            }
            assert!(
                self.child.try_wait().expect("try_wait").is_none(),
                "pulse exited early; log: {}",
                tail(&self.log)
            );
            assert!(
                Instant::now() < deadline,
                "fold never got partitions; log: {}",
                tail(&self.log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// SIGTERM; returns the exit code.
    fn sigterm(mut self) -> Option<i32> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "SIGTERM did not stop pulse");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Outbox records re-sent at partition assignment, summed over one run's log: the most that
/// run can have duplicated.
fn resent_outbox(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "partition assigned")
        .filter_map(|v| v["fields"]["outbox"].as_u64())
        .sum()
}

/// Waits until ingest has committed all input and fold has committed (group offset, written
/// after each sled commit) up to the canonical log's end, and the end no longer moves.
fn wait_caught_up(bootstrap: &str, svc: &mut Service) {
    let cfg = config();
    let t = &cfg.topics;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = BTreeMap::new();
    loop {
        assert!(
            svc.child.try_wait().expect("try_wait").is_none(),
            "pulse exited; log: {}",
            tail(&svc.log)
        );
        assert!(
            Instant::now() < deadline,
            "pulse did not catch up; log: {}",
            tail(&svc.log)
        );
        let ingest_done = [&t.orders, &t.clickstream, &t.support].iter().all(|topic| {
            let c = committed(bootstrap, &format!("{GROUP}-ingest"), topic);
            ends(bootstrap, topic)
                .iter()
                .all(|(p, e)| *e == 0 || c.get(p) == Some(e))
        });
        let end = ends(bootstrap, &t.canonical);
        let c = committed(bootstrap, &format!("{GROUP}-fold"), &t.canonical);
        let fold_done = end
            .iter()
            .all(|(p, e)| *e == 0 || c.get(p).is_some_and(|o| o >= e));
        if ingest_done && fold_done && end == last {
            return;
        }
        last = end;
        std::thread::sleep(Duration::from_millis(300));
    }
}

type State = (
    BTreeMap<String, pulse_core::CustomerState>,
    BTreeMap<String, pulse_store::Checkpoint>,
);

/// Every customer and checkpoint under `state_dir` (the service must be stopped).
fn read_state(state_dir: &Path) -> State {
    let mut customers = BTreeMap::new();
    let mut checkpoints = BTreeMap::new();
    for entry in std::fs::read_dir(state_dir).expect("state dir") {
        let path = entry.expect("entry").path();
        let store = pulse_store::PartitionStore::open(&path, false).expect("open store");
        for c in store.customers() {
            let (id, s) = c.expect("customer");
            customers.insert(id, s);
        }
        if let Some(cp) = store.checkpoint().expect("checkpoint") {
            checkpoints.insert(path.file_name().unwrap().to_string_lossy().into_owned(), cp);
        }
    }
    (customers, checkpoints)
}

/// One alert record: key, value, headers.
type AlertRec = (String, Vec<u8>, BTreeMap<String, String>);

/// Every record on the live alert topics, from the beginning to the current end.
fn live_alerts(bootstrap: &str) -> Vec<AlertRec> {
    let cfg = config();
    let t = &cfg.topics;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "crash-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut remaining = BTreeMap::new();
    for topic in [&t.churn_warnings, &t.segment_changes, &t.lifecycle_changes] {
        for (p, (low, high)) in watermarks(bootstrap, topic) {
            assert_eq!(low, 0, "{topic}/{p} was pruned by the mock broker");
            if high > 0 {
                tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                    .unwrap();
                remaining.insert((topic.to_string(), p), high);
            }
        }
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !remaining.is_empty() {
        assert!(Instant::now() < deadline, "reading the alert topics");
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("alert record");
        let k = (m.topic().to_string(), m.partition());
        if remaining.get(&k).is_some_and(|end| m.offset() + 1 >= *end) {
            remaining.remove(&k);
        }
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_string(), v.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        out.push((key, m.payload().unwrap_or_default().to_vec(), headers));
    }
    out
}

/// Runs `pulse replay --verify` into a fresh dir; returns its state and alerts (by ce_id).
fn replay(bootstrap: &str, dir: &Path) -> (State, BTreeMap<String, AlertRec>) {
    let state_dir = dir.join("replay-state");
    let file = dir.join("replay-alerts.ndjson");
    let started = Instant::now();
    let out = pulse()
        .args(["replay", "--verify", "--state-dir"])
        .arg(&state_dir)
        .arg("--alerts")
        .arg(format!("file:{}", file.display()))
        .env("PULSE__KAFKA__BOOTSTRAP_SERVERS", bootstrap)
        .env("PULSE__KAFKA__GROUP_ID", GROUP)
        .env("PULSE__ENCODING__CANONICAL", CANONICAL_ENCODING)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pulse replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "replay: {:.1}s, {}",
        started.elapsed().as_secs_f64(),
        stdout.trim()
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "pulse replay --verify: every replayed alert on the live topics, byte-identical, none \
         more\n{stdout}\n{}",
        &stderr[stderr.len().saturating_sub(3000)..]
    );
    let mut alerts = BTreeMap::new();
    for line in std::fs::read_to_string(&file).expect("alerts file").lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("alert line");
        let headers: BTreeMap<String, String> =
            serde_json::from_value(v["headers"].clone()).expect("headers");
        let id = headers["ce_id"].clone();
        let rec = (
            v["key"].as_str().unwrap().to_string(),
            v["value"].as_str().unwrap().as_bytes().to_vec(),
            headers,
        );
        assert!(alerts.insert(id, rec).is_none(), "replay alert ids unique");
    }
    (read_state(&state_dir), alerts)
}

/// The assertions both tests end with, once the service is stopped: state equals the replay's,
/// checkpoints are at the canonical log's end, the live alert topics hold exactly the
/// replay's alerts with byte-identical duplicates. Returns the duplicate count.
fn check_against_replay(bootstrap: &str, dir: &Path, live_dir: &Path) -> usize {
    let cfg = config();
    let canonical = watermarks(bootstrap, &cfg.topics.canonical);
    for (p, (low, _)) in &canonical {
        assert_eq!(
            *low, 0,
            "canonical partition {p} was pruned by the mock broker"
        );
    }
    let (live_state, live_cp) = read_state(live_dir);
    for (p, (_, high)) in &canonical {
        if *high > 0 {
            let cp = &live_cp[&format!("partition-{p:04}")];
            assert_eq!(cp.next_offset, *high, "partition {p} folded to the end");
        }
    }
    let ((replay_state, replay_cp), replayed) = replay(bootstrap, dir);
    assert!(!live_state.is_empty());
    assert_eq!(live_cp, replay_cp, "checkpoints equal the replay's");
    assert_eq!(live_state.len(), replay_state.len(), "same customers");
    for (id, s) in &live_state {
        assert_eq!(Some(s), replay_state.get(id), "customer {id}");
    }

    let live = live_alerts(bootstrap);
    let mut first: BTreeMap<String, &AlertRec> = BTreeMap::new();
    let mut duplicates = 0;
    for rec in &live {
        let id = rec.2.get("ce_id").expect("ce_id header").clone();
        match first.get(&id) {
            None => {
                first.insert(id, rec);
            }
            Some(f) => {
                assert_eq!(
                    *f, rec,
                    "duplicate {id} is byte-identical to its first copy"
                );
                duplicates += 1;
            }
        }
    }
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        replayed.keys().collect::<Vec<_>>(),
        "the live alert ids are exactly the replay's"
    );
    for (id, rec) in &replayed {
        assert_eq!(first[id], rec, "alert {id} as replayed");
    }
    eprintln!(
        "alerts: {} distinct, {} live records, {duplicates} byte-identical duplicates",
        replayed.len(),
        live.len()
    );
    duplicates
}

#[test]
fn sigkill_crash_loop_loses_nothing_and_duplicates_are_identical() {
    let started = Instant::now();
    let seed = seed();
    let kills = 10;
    eprintln!("crash loop: seed {seed} (rerun with PULSE_CRASH_SEED={seed}), {kills} kills");
    let mut rng = pulse::simulate::Rng::seeded(seed);
    let broker = Broker::new();
    let bootstrap = broker.bootstrap.clone();
    let tmp = tempfile::tempdir().unwrap();
    let cfg_file = write_config(tmp.path());
    let state_dir = tmp.path().join("state");

    let input = records(2_050, 365);
    let n = input.len();
    assert!(n >= 200_000, "{n} input events");
    eprintln!("crash loop: {n} input events");
    let feeder = feed(bootstrap.clone(), input, 5_000);

    let mut resent = 0;
    let mut kill_times = Vec::new();
    // Time from spawning the process to ready (partitions held, /readyz green), per run: the
    // first from an empty state dir, the others after a SIGKILL.
    let mut ready_after = Vec::new();
    for i in 0..kills {
        let log = tmp.path().join(format!("run-{i}.log"));
        let mut svc = Service::start(&bootstrap, &cfg_file, &state_dir, log.clone());
        let ready = svc.wait_assigned();
        ready_after.push(ready.as_millis());
        let delay = millis(&mut rng, 200, 3_000);
        std::thread::sleep(delay);
        svc.sigkill();
        // Outbox records this run found at start: what the previous kill left un-acked
        // (a kill between a commit and the persisted ack of its drain).
        let found = resent_outbox(&log);
        resent += found;
        kill_times.push(delay.as_millis());
        eprintln!(
            "crash loop: kill {} at {:?} after assignment (t = {:.1}s; this run re-sent {found} outbox records)",
            i + 1,
            delay,
            started.elapsed().as_secs_f64()
        );
    }
    let log = tmp.path().join("run-last.log");
    let mut svc = Service::start(&bootstrap, &cfg_file, &state_dir, log.clone());
    assert_eq!(feeder.join().expect("feeder"), n);
    let fed: i64 = {
        let t = config().topics;
        [t.orders, t.clickstream, t.support]
            .iter()
            .flat_map(|topic| watermarks(&bootstrap, topic).into_values())
            .map(|(low, high)| {
                assert_eq!(low, 0, "input pruned");
                high
            })
            .sum()
    };
    assert_eq!(fed, n as i64, "every input event is on the input topics");
    wait_caught_up(&bootstrap, &mut svc);
    assert_eq!(svc.sigterm(), Some(0), "SIGTERM exits 0");
    resent += resent_outbox(&log);
    eprintln!(
        "crash loop: seed {seed}, kill delays (ms after assignment) {kill_times:?}, ready after \
         start (ms; the first from an empty state dir, then after each kill) {ready_after:?}, \
         caught up at {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let duplicates = check_against_replay(&bootstrap, tmp.path(), &state_dir);
    eprintln!(
        "crash loop: {duplicates} duplicates, bound {resent} (outbox records re-sent at \
         restarts), {:.1}s in all",
        started.elapsed().as_secs_f64()
    );
    assert!(
        duplicates as u64 <= resent,
        "duplicates ({duplicates}) bounded by the outbox in flight at the kills ({resent})"
    );
}

/// `chattr +i` on everything under a directory, undone on drop. The immutable flag is the one
/// way found here to make writes fail for root (who ignores permission bits) without mounting
/// anything: the kernel refuses every write, even through descriptors opened before, with
/// EPERM, and refuses to create files in an immutable directory. Needs ext4/xfs/btrfs.
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Immutable {
        chattr("+i", dir);
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

fn chattr(flag: &str, dir: &Path) {
    let out = Command::new("chattr")
        .args(["-R", flag])
        .arg(dir)
        .output()
        .expect("chattr (e2fsprogs) is needed to make a directory refuse writes as root");
    assert!(
        out.status.success(),
        "chattr {flag} {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metric(addr: &str, name: &str) -> Option<f64> {
    let (code, body) = http_get(addr, "/metrics")?;
    (code == 200).then_some(())?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_state_dir_that_refuses_writes_stops_fold_and_loses_nothing() {
    let started = Instant::now();
    let broker = Broker::new();
    let bootstrap = broker.bootstrap.clone();
    let tmp = tempfile::tempdir().unwrap();
    let cfg_file = write_config(tmp.path());
    let state_dir = tmp.path().join("state");

    let input = records(400, 365);
    let n = input.len();
    let feeder = feed(bootstrap.clone(), input, 4_000);
    let log = tmp.path().join("run-0.log");
    let mut svc = Service::start(&bootstrap, &cfg_file, &state_dir, log.clone());
    svc.wait_assigned();
    // Fault mid-stream, once fold has committed a few times.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&svc.addr, "pulse_fold_commit_duration_seconds_count").unwrap_or(0.0) < 5.0 {
        assert!(Instant::now() < deadline, "no commits; {}", tail(&log));
        std::thread::sleep(Duration::from_millis(20));
    }
    let fault = Immutable::set(&state_dir);
    eprintln!(
        "storage fault: state dir immutable at t = {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // The next commit fails: fold stops, /readyz turns red, the process exits 1.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut red = None;
    let code = loop {
        if let Some(status) = svc.child.try_wait().expect("try_wait") {
            break status.code();
        }
        if let Some((code, body)) = http_get(&svc.addr, "/readyz") {
            if code == 503 {
                red = Some(body.trim().to_string());
            } else {
                assert!(red.is_none(), "/readyz turned green again: {body}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "pulse kept running on a state dir that refuses writes (readyz: {red:?}); log: {}",
            tail(&log)
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "storage fault: exit code {code:?}, /readyz 503 seen: {red:?}; last log line: {}",
        logged.lines().last().unwrap_or_default()
    );
    assert_eq!(code, Some(1), "a failed commit is a runtime failure");
    assert!(
        logged.contains("pipeline failed") && logged.contains("state store"),
        "the storage failure is what stopped it, and it is logged: {}",
        tail(&log)
    );

    // Fix the fault, restart on the same state, run to the end: nothing is lost.
    drop(fault);
    let log = tmp.path().join("run-1.log");
    let mut svc = Service::start(&bootstrap, &cfg_file, &state_dir, log.clone());
    assert_eq!(feeder.join().expect("feeder"), n);
    wait_caught_up(&bootstrap, &mut svc);
    assert_eq!(svc.sigterm(), Some(0), "SIGTERM exits 0");
    let resent = resent_outbox(&log);
    let duplicates = check_against_replay(&bootstrap, tmp.path(), &state_dir);
    eprintln!(
        "storage fault: {n} events, {duplicates} duplicates, bound {resent}, {:.1}s in all",
        started.elapsed().as_secs_f64()
    );
    assert!(
        duplicates as u64 <= resent,
        "duplicates bounded by the re-sent outbox"
    );
}
