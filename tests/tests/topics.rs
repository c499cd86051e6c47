//! `pulse topics create|check` and the check `pulse run` makes before it starts,
//! against real brokers: tansu, which implements CreateTopics and DescribeConfigs, for the
//! problems a check must name (a changelog that is not compacted, a partition-count mismatch
//! with the canonical log, a canonical log with finite retention, a missing topic) and for
//! `create`; librdkafka's mock cluster, which has neither, for "cannot verify": a check there
//! must say what it could not verify, never call it ok.

use std::collections::BTreeMap;

use pulse::topics::{self, Level, Observed, Role};
use pulse_e2e::{config, Broker};

/// A config naming topics of this test only (`<run>.<topic>`), so tests sharing a broker
/// process could never see each other's topics.
fn run_config(broker: &Broker, dir: &std::path::Path, run: &str) -> pulse::Config {
    let names = [
        "orders",
        "clickstream",
        "support",
        "canonical",
        "dead_letters",
        "churn_warnings",
        "segment_changes",
        "lifecycle_changes",
        "changelog",
        "erasures",
    ];
    let topics: String = names
        .iter()
        .map(|n| format!("{n} = \"{run}.{n}\"\n"))
        .collect();
    config(broker, dir, run, &format!("[topics]\n{topics}"))
}

fn findings<'a>(report: &'a topics::Report, topic: &str, level: Level) -> Vec<&'a str> {
    report
        .findings
        .iter()
        .filter(|f| f.topic == topic && f.level == level)
        .map(|f| f.what.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_a_bad_changelog_policy_a_partition_mismatch_and_a_missing_topic_on_tansu(
) -> anyhow::Result<()> {
    let broker = Broker::tansu()?;
    let dir = tempfile::tempdir()?;
    let cfg = run_config(&broker, dir.path(), "bad");
    let t = &cfg.topics;
    // A canonical log with a week's retention (Apache Kafka's default), a changelog that is
    // not compacted (ditto) and has another partition count than the canonical log.
    create_with(
        &cfg,
        &t.canonical,
        4,
        &[
            ("retention.ms", "604800000"),
            ("retention.bytes", "-1"),
            ("cleanup.policy", "delete"),
        ],
    )
    .await?;
    create_with(&cfg, &t.changelog, 2, &[("cleanup.policy", "delete")]).await?;
    for name in [
        &t.orders,
        &t.clickstream,
        &t.support,
        &t.dead_letters,
        &t.churn_warnings,
        &t.segment_changes,
        &t.lifecycle_changes,
    ] {
        broker.create_topics(&cfg, &[name], 2).await?;
    }
    // t.erasures is left missing.

    let report = topics::check(&cfg).await?;
    let text = report.render();
    println!("{text}");
    assert_eq!(
        report.unverified().count(),
        0,
        "tansu answers DescribeConfigs: nothing may be left unverified\n{text}"
    );
    let changelog = findings(&report, &t.changelog, Level::Problem);
    assert!(
        changelog
            .iter()
            .any(|w| w.contains("has 2 partitions but the canonical log bad.canonical has 4")),
        "{text}"
    );
    assert!(
        changelog
            .iter()
            .any(|w| w.contains("cleanup.policy is \"delete\", not \"compact\"")),
        "{text}"
    );
    assert!(
        findings(&report, &t.erasures, Level::Problem)
            .iter()
            .any(|w| w.contains("does not exist")),
        "{text}"
    );
    // Input topics may have any partition count: ingest re-keys into the canonical log.
    assert_eq!(
        findings(&report, &t.orders, Level::Ok),
        vec!["2 partitions"],
        "{text}"
    );
    assert!(text.contains(&format!(
        "--entity-name {} --add-config cleanup.policy=compact",
        t.changelog
    )));
    assert!(text.contains(&format!("--alter --topic {} --partitions 4", t.changelog)));
    assert_eq!(
        findings(&report, &t.canonical, Level::Problem),
        vec!["finite retention (retention.ms=604800000): the broker deletes old records, but the canonical log is the system of record (replay and restore refold it)"],
        "{text}"
    );

    // `pulse run` refuses to start, naming the topics and the fixes.
    let err = topics::preflight(&cfg).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("topic {} (topics.changelog)", t.changelog))
            && err.contains("cleanup.policy")
            && err.contains(&format!("topic {} (topics.erasures)", t.erasures)),
        "{err}"
    );

    // `create` adds what is missing and leaves existing topics as they are: the problems
    // with them remain, and are reported.
    let (created, after) = topics::create(&cfg, 4, -1).await?;
    assert_eq!(created, vec![t.erasures.clone()]);
    assert!(findings(&after, &t.erasures, Level::Problem).is_empty());
    assert!(
        !findings(&after, &t.changelog, Level::Problem).is_empty(),
        "{}",
        after.render()
    );
    Ok(())
}

/// Creates `name` through the admin API with topic `configs`, as an operator's tool would.
async fn create_with(
    cfg: &pulse::Config,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        pulse::kafka::client_config(cfg).create()?;
    let topic = configs.iter().fold(
        NewTopic::new(name, partitions, TopicReplication::Fixed(1)),
        |t, (k, v)| t.set(k, v),
    );
    for r in admin.create_topics([&topic], &AdminOptions::new()).await? {
        r.map_err(|(t, code)| anyhow::anyhow!("create {t}: {code:?}"))?;
    }
    Ok(())
}

/// tansu describes only the configs a topic was created with: a topic created without any
/// (plain `kafka-topics.sh --create`) cannot be judged, and the check says so.
#[tokio::test(flavor = "multi_thread")]
async fn configs_tansu_leaves_out_are_unverified_never_ok() -> anyhow::Result<()> {
    let broker = Broker::tansu()?;
    let dir = tempfile::tempdir()?;
    let cfg = run_config(&broker, dir.path(), "plain");
    broker.create_all(&cfg, 2).await?;
    let report = topics::check(&cfg).await?;
    let text = report.render();
    println!("{text}");
    assert_eq!(report.problems().count(), 0, "{text}");
    assert_eq!(
        findings(&report, &cfg.topics.changelog, Level::Unverified),
        vec!["cannot verify cleanup.policy: the broker's description of the topic leaves it out"],
        "{text}"
    );
    assert_eq!(
        findings(&report, &cfg.topics.canonical, Level::Unverified),
        vec!["cannot verify cleanup.policy, retention.ms, retention.bytes: the broker's description of the topic leaves them out"],
        "{text}"
    );
    assert!(findings(&report, &cfg.topics.changelog, Level::Ok).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn create_makes_every_topic_right_and_the_check_reads_it_back_on_tansu() -> anyhow::Result<()>
{
    let broker = Broker::tansu()?;
    let dir = tempfile::tempdir()?;
    let cfg = run_config(&broker, dir.path(), "fresh");
    let (created, report) = topics::create(&cfg, 3, -1).await?;
    let text = report.render();
    println!("{text}");
    assert_eq!(created.len(), 10, "{created:?}");
    assert_eq!(report.problems().count(), 0, "{text}");
    assert_eq!(report.unverified().count(), 0, "{text}");
    // The values come from the broker's DescribeConfigs answer.
    let observed = topics::inspect(&cfg).await?;
    for t in topics::topics(&cfg) {
        let Some(Observed::Present {
            partitions,
            configs,
        }) = observed.get(&t.name)
        else {
            panic!("{} missing: {observed:?}", t.name);
        };
        assert_eq!(*partitions, 3, "{}", t.name);
        if matches!(t.role, Role::Canonical | Role::Changelog) {
            let configs: &BTreeMap<String, String> = configs
                .as_ref()
                .and_then(|c| c.as_ref().ok())
                .expect("described");
            for (k, v) in topics::topic_configs(t.role) {
                assert_eq!(configs.get(*k).map(String::as_str), Some(*v), "{}", t.name);
            }
        }
    }
    assert!(topics::preflight(&cfg).await.is_ok());
    // Running it again creates nothing.
    let (again, _) = topics::create(&cfg, 3, -1).await?;
    assert!(again.is_empty(), "{again:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn on_the_mock_cluster_configs_are_unverified_never_ok() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let dir = tempfile::tempdir()?;
    let cfg = run_config(&broker, dir.path(), "mock");
    broker.create_all(&cfg, 2).await?;
    let report = topics::check(&cfg).await?;
    let text = report.render();
    println!("{text}");
    assert_eq!(report.problems().count(), 0, "{text}");
    let t = &cfg.topics;
    for name in [&t.canonical, &t.changelog] {
        let u = findings(&report, name, Level::Unverified);
        assert_eq!(u.len(), 1, "{text}");
        assert!(u[0].starts_with("cannot verify cleanup.policy"), "{text}");
        assert!(findings(&report, name, Level::Ok).is_empty(), "{text}");
    }
    // `pulse run` starts (with a warning): the partition counts were verified.
    assert!(topics::preflight(&cfg).await.is_ok());

    // A partition mismatch is found without DescribeConfigs.
    let other = tempfile::tempdir()?;
    let cfg2 = run_config(&broker, other.path(), "mock2");
    broker.create_all(&cfg2, 2).await?;
    let mut cfg3 = cfg2.clone();
    cfg3.topics.changelog = "mock2.changelog3".into();
    broker
        .create_topics(&cfg3, &[&cfg3.topics.changelog], 3)
        .await?;
    let report = topics::check(&cfg3).await?;
    assert!(
        findings(&report, &cfg3.topics.changelog, Level::Problem)
            .iter()
            .any(|w| w.contains("has 3 partitions but the canonical log mock2.canonical has 2")),
        "{}",
        report.render()
    );
    Ok(())
}
