//! The `pulse` binary as a process: exit codes, SIGTERM handling, and the demo's promise (alerts
//! with reasons within the first minute, JSON lines on stdout). The broker is librdkafka's mock
//! cluster, started in this test process and reached over loopback TCP by the child.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;

fn pulse() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pulse"))
}

#[test]
fn a_bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pulse.toml");
    std::fs::write(&file, "[fold]\nstate_dirx = \"/tmp/x\"\n").unwrap();
    let out = pulse()
        .args(["run", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fold.state_dirx"), "{err}");
    let out = pulse().args(["run", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sigterm_commits_and_exits_0() {
    let mock = MockCluster::new(1).unwrap();
    let config = pulse::Config::with_overrides("").unwrap();
    pulse::demo::create_mock_topics(&mock, &config, 2, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = pulse()
        .args(["run", "--http-addr", "127.0.0.1:0"])
        .env("PULSE__KAFKA__BOOTSTRAP_SERVERS", mock.bootstrap_servers())
        .env("PULSE__FOLD__STATE_DIR", dir.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("http: http://")
        .unwrap_or_else(|| panic!("first line: {first}"))
        .to_string();
    // Ready once both pipelines run and fold holds its partitions.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = std::net::TcpStream::connect(&addr).is_ok_and(|mut s| {
            use std::io::{Read, Write};
            let _ = write!(
                s,
                "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            let mut r = String::new();
            let _ = s.read_to_string(&mut r);
            r.starts_with("HTTP/1.1 200")
        });
        if ready && dir.path().join("state/partition-0000").exists() {
            break;
        }
        assert!(Instant::now() < deadline, "service never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(0), "SIGTERM exits 0");
    assert!(started.elapsed() < Duration::from_secs(20));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.starts_with("summary:")), "{rest:?}");
}

#[test]
fn the_demo_prints_explained_alerts_within_a_minute() {
    let started = Instant::now();
    let out = pulse()
        .args([
            "demo",
            "--json",
            "--customers",
            "300",
            "--for",
            "40s",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // `pulse demo --json | jq`: every stdout line is an alert as JSON, nothing else.
    let alerts: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"));
            assert!(v.get("alert_id").is_some(), "not an alert: {l}");
            v
        })
        .collect();
    let warnings: Vec<_> = alerts
        .iter()
        .filter(|a| a["type"] == "churn_warning")
        .collect();
    assert!(
        !warnings.is_empty(),
        "churn warnings within the first minute; got {} alerts",
        alerts.len()
    );
    for a in &alerts {
        assert!(
            !a["reasons"].as_array().unwrap().is_empty(),
            "reasons on every alert: {a}"
        );
    }
    // The default --show: churn warnings and stage changes; segment changes are counted.
    assert!(alerts
        .iter()
        .all(|a| a["type"] == "churn_warning" || a["type"] == "lifecycle_stage_changed"));
    assert!(
        stderr.contains(&format!(
            "summary: printed {} alert JSON lines; not printed: ",
            alerts.len()
        )),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("summary: dead letters per reason")),
        "{stderr}"
    );
}

/// Numbers followed by `noun` in `text` ("12 churn warnings" for `churn`), summed.
fn count_before(text: &str, noun: &str) -> u64 {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[1] == noun)
        .filter_map(|w| w[0].parse::<u64>().ok())
        .sum()
}

#[test]
fn the_readable_demo_prints_a_chosen_stream_and_accounts_for_the_rest() {
    let started = Instant::now();
    let out = pulse()
        .args([
            "demo",
            "--customers",
            "300",
            "--days",
            "90",
            "--days-per-second",
            "15",
            "--lines-per-second",
            "5",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(!lines.is_empty(), "{stderr}");
    // Only alert lines on stdout: `YYYY-MM-DD  customer  kind  from → to  (reason)`.
    let mut seen = std::collections::BTreeMap::new();
    for l in &lines {
        assert!(
            l.as_bytes()[..10].iter().filter(|b| **b == b'-').count() == 2
                && l.contains(" → ")
                && l.ends_with(')'),
            "not an alert line: {l}"
        );
        let kind = if l.contains("churn warning") {
            "churn"
        } else if l.contains("stage change") {
            "stage"
        } else {
            panic!("segment changes are not shown by default: {l}")
        };
        // A churn warning is printed once, merged with its stage change: no second line for
        // the same customer, day and change (the line without its kind label and reason).
        let head = l.split(" (").next().unwrap();
        let key = head
            .replace("churn warning", "")
            .replace("stage change", "")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(other) = seen.insert(key, kind) {
            assert!(
                other == kind,
                "a churn warning and its stage change on two lines: {l}"
            );
        }
    }
    // No more than the limit allows (a second's burst at the start).
    assert!(
        lines.len() as f64 <= 5.0 * elapsed.as_secs_f64() + 5.0,
        "{} lines in {elapsed:?}",
        lines.len()
    );
    // The summary (stderr) accounts for every alert: printed or not printed, and why.
    let summary = |prefix: &str| {
        stderr
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {stderr}"))
            .to_string()
    };
    let total: u64 = summary("summary: alerts per type ")
        .split_whitespace()
        .map(|kv| kv.split_once('=').unwrap().1.parse::<u64>().unwrap())
        .sum();
    let printed = summary("summary: printed ");
    let (head, not) = printed.split_once("; not printed: ").expect("not printed");
    let printed_lines: u64 = head.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(printed_lines, lines.len() as u64, "{printed}");
    let printed_alerts = head.split_once(" for ").map_or(printed_lines, |(_, rest)| {
        rest.split_whitespace().next().unwrap().parse().unwrap()
    });
    let not_printed =
        count_before(not, "segment") + count_before(not, "churn") + count_before(not, "stage");
    assert!(not.contains("segment changes (not in --show)"), "{not}");
    assert!(not.contains("over 5 lines/s (--lines-per-second"), "{not}");
    assert_eq!(
        printed_alerts + not_printed,
        total,
        "every alert printed or counted as not printed: {printed}"
    );
}

/// A loopback port nobody listens on: bound, then closed, so a connection is refused at once.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

/// An unreachable broker: one line naming the bootstrap servers and the config key, within a
/// few seconds (pulse waits `kafka::REACH_TIMEOUT`, 5 s), for `run`, `topics check` and
/// `simulate --brokers`; librdkafka's own lines stay at debug level. Before, `run` was silent
/// for 10 s and then printed librdkafka's lines and an error naming no address, and
/// `simulate` retried forever.
#[test]
fn an_unreachable_broker_is_named_once_within_seconds() {
    let addr = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let runs: [(&str, Vec<String>); 3] = [
        (
            "run",
            vec!["run".into(), "--http-addr".into(), "127.0.0.1:0".into()],
        ),
        ("topics check", vec!["topics".into(), "check".into()]),
        (
            "simulate",
            vec!["simulate".into(), "--brokers".into(), addr.clone()],
        ),
    ];
    for (name, args) in runs {
        let started = Instant::now();
        let out = pulse()
            .args(&args)
            .env_remove("RUST_LOG")
            .env("PULSE__KAFKA__BOOTSTRAP_SERVERS", &addr)
            .env("PULSE__FOLD__STATE_DIR", dir.path().join("state"))
            .output()
            .unwrap();
        let took = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            took >= Duration::from_secs(4) && took < Duration::from_secs(9),
            "{name}: took {took:?}"
        );
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines,
            vec![format!(
                "error: no Kafka broker answered at {addr} (kafka.bootstrap_servers) within 5 s: \
                 connection refused (RUST_LOG=librdkafka=debug shows librdkafka's detail)"
            )],
            "{name}: exactly one line"
        );
    }
    // The detail is there at debug level.
    let out = pulse()
        .args(["topics", "check"])
        .env("RUST_LOG", "librdkafka=debug")
        .env("PULSE__KAFKA__BOOTSTRAP_SERVERS", &addr)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Connection refused"), "{err}");
}

#[test]
fn simulate_without_a_target_is_a_usage_error() {
    let out = pulse().arg("simulate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--brokers") && err.contains("--ndjson"),
        "{err}"
    );
}

/// A secret reaches librdkafka from an environment variable or a file, and never pulse's
/// output: not with every log on (librdkafka's `debug=all` dumps its configuration, secrets
/// redacted), not in the error for a secret set under a wrong key or a misspelt property.
#[test]
fn a_secret_is_never_echoed() {
    let secret = "pa55-never-shown-7f3c";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let addr = closed_port();
    let sasl = [
        ("PULSE__KAFKA__BOOTSTRAP_SERVERS", addr.as_str()),
        (
            "PULSE__KAFKA__PROPERTIES__SECURITY_PROTOCOL",
            "SASL_PLAINTEXT",
        ),
        ("PULSE__KAFKA__PROPERTIES__SASL_MECHANISM", "PLAIN"),
        ("PULSE__KAFKA__PROPERTIES__SASL_USERNAME", "pulse"),
        ("PULSE__KAFKA__PROPERTIES__DEBUG", "all"),
    ];
    let cases: [(&str, &str, &str); 2] = [
        (
            "PULSE__KAFKA__PROPERTIES__SASL_PASSWORD_FILE",
            file.to_str().unwrap(),
            "a file",
        ),
        (
            "PULSE__KAFKA__PROPERTIES__SASL_PASSWORD",
            secret,
            "the environment",
        ),
    ];
    for (var, value, from) in cases {
        let out = pulse()
            .args(["run", "--http-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "debug")
            .envs(sasl)
            .env(var, value)
            .env("PULSE__FOLD__STATE_DIR", dir.path().join("state"))
            .output()
            .unwrap();
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(1), "{from}: {e}");
        // librdkafka got the password (its configuration dump lists it) and redacted it.
        assert!(e.contains("sasl.password = [redacted]"), "{from}: {e}");
        assert!(!o.contains(secret) && !e.contains(secret), "{from}: echoed");
    }
    // A secret under a wrong key, a misspelt property name, or a secret librdkafka refuses
    // (a TLS key in a build without TLS; rdkafka's own error would print it): exit 2, naming
    // the key and the variable, never the value.
    let mut wrong = vec![
        ("PULSE__FOLD__COMMIT_MAX_EVENTS", "fold.commit_max_events"),
        (
            "PULSE__KAFKA__PROPERTIES__SASL_PASWORD",
            "kafka.properties.\"sasl.pasword\"",
        ),
    ];
    if !cfg!(feature = "ssl") {
        wrong.push((
            "PULSE__KAFKA__PROPERTIES__SSL_KEY_PEM",
            "kafka.properties.\"ssl.key.pem\"",
        ));
    }
    for (var, key) in wrong {
        let out = pulse()
            .arg("run")
            .env("RUST_LOG", "debug")
            .env(var, secret)
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{e}");
        assert!(e.contains(key), "{e}");
        assert!(!e.contains(secret), "echoed: {e}");
    }
}
