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
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let alerts: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v.get("alert_id").is_some())
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
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("summary: dead letters per reason")),
        "{stdout}"
    );
}
