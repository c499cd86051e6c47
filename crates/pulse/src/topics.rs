//! `pulse topics create|check`, and the same check `pulse run` makes before it starts: every
//! topic the config names, the partition counts they must share and the topic configs pulse's
//! guarantees rest on (the changelog compacted; the canonical log, the system of record, never
//! compacted nor deleted by retention). Asking the cluster ([`inspect`]) is apart from judging
//! what it said ([`judge`]), so the rules are tested on plain data and one implementation
//! answers `check`, `create` and `pulse run`. What a broker cannot tell (librdkafka's mock
//! cluster has no DescribeConfigs) is reported as "cannot verify", never as ok.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::error::KafkaError;

use crate::config::Config;
use crate::kafka::{self, QuietContext, ReachError};

/// What a topic is to pulse, which decides what is checked on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read by ingest; any partition count (ingest re-keys into the canonical log).
    Input,
    /// The canonical log: the system of record. Never compacted, never deleted by retention.
    Canonical,
    /// Compacted; as many partitions as the canonical log (partition p restores partition p).
    Changelog,
    /// Written by pulse (dead letters, alerts, erasure confirmations): it must exist.
    Output,
}

/// One topic of the config.
#[derive(Debug, Clone)]
pub struct Topic {
    /// The config key naming it, e.g. `topics.changelog`.
    pub key: &'static str,
    pub name: String,
    pub role: Role,
}

/// Every topic `config` names, canonical log first.
pub fn topics(config: &Config) -> Vec<Topic> {
    config
        .topics
        .named()
        .into_iter()
        .map(|(key, name)| Topic {
            key,
            name: name.to_string(),
            role: match key {
                "topics.canonical" => Role::Canonical,
                "topics.changelog" => Role::Changelog,
                "topics.orders" | "topics.clickstream" | "topics.support" => Role::Input,
                _ => Role::Output,
            },
        })
        .collect()
}

/// The topic configs `create` sets for a role (and `judge` expects).
pub fn topic_configs(role: Role) -> &'static [(&'static str, &'static str)] {
    match role {
        Role::Canonical => &[
            ("cleanup.policy", "delete"),
            ("retention.ms", "-1"),
            ("retention.bytes", "-1"),
        ],
        Role::Changelog => &[("cleanup.policy", "compact")],
        Role::Input | Role::Output => &[],
    }
}

/// What the cluster said about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Not in the cluster's metadata.
    Missing,
    /// The metadata named the topic with an error (e.g. not authorized).
    Error(String),
    Present {
        partitions: i32,
        /// The topic's effective configs (`cleanup.policy`, `retention.ms`, ...), or why the
        /// broker could not give them. Only asked for the canonical log and the changelog.
        configs: Option<Result<BTreeMap<String, String>, String>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    /// The broker could not answer a question: neither ok nor a problem.
    Unverified,
    Problem,
}

/// One statement about one topic.
#[derive(Debug, Clone)]
pub struct Finding {
    pub topic: String,
    pub key: &'static str,
    pub level: Level,
    pub what: String,
    /// How to fix it (a command where there is one).
    pub fix: Option<String>,
}

/// The findings of a check, in the order of [`topics`].
#[derive(Debug, Clone)]
pub struct Report {
    pub bootstrap: String,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.level == Level::Problem)
    }

    pub fn unverified(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.level == Level::Unverified)
    }

    /// The report as text, one line per finding, each problem followed by its fix.
    pub fn render(&self) -> String {
        let width = self
            .findings
            .iter()
            .map(|f| f.topic.len())
            .max()
            .unwrap_or(0);
        let mut out = format!("topics at {}:\n", self.bootstrap);
        for f in &self.findings {
            let tag = match f.level {
                Level::Ok => "ok        ",
                Level::Unverified => "UNVERIFIED",
                Level::Problem => "PROBLEM   ",
            };
            out.push_str(&format!(
                "  {tag} {:width$}  {}: {}\n",
                f.topic, f.key, f.what
            ));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("             fix: {fix}\n"));
            }
        }
        let (p, u) = (self.problems().count(), self.unverified().count());
        out.push_str(&match (p, u) {
            (0, 0) => format!("all {} topics ok\n", topics_count(&self.findings)),
            _ => format!("{p} problem(s), {u} thing(s) this broker could not verify\n"),
        });
        out
    }
}

fn topics_count(findings: &[Finding]) -> usize {
    let mut names: Vec<&str> = findings.iter().map(|f| f.topic.as_str()).collect();
    names.dedup();
    names.len()
}

/// Judges what the cluster said (`observed`, by topic name) against what pulse needs.
pub fn judge(config: &Config, observed: &BTreeMap<String, Observed>) -> Report {
    let bootstrap = config.kafka.bootstrap_servers.clone();
    let all = topics(config);
    let canonical = all
        .iter()
        .find(|t| t.role == Role::Canonical)
        .expect("a canonical log");
    let canonical_partitions = match observed.get(&canonical.name) {
        Some(Observed::Present { partitions, .. }) => Some(*partitions),
        _ => None,
    };
    let mut findings = Vec::new();
    for t in &all {
        let mut say = |level, what: String, fix: Option<String>| {
            findings.push(Finding {
                topic: t.name.clone(),
                key: t.key,
                level,
                what,
                fix,
            })
        };
        let (partitions, configs) = match observed.get(&t.name).unwrap_or(&Observed::Missing) {
            Observed::Missing => {
                say(
                    Level::Problem,
                    "does not exist (or this client may not describe it)".into(),
                    Some(format!(
                        "`pulse topics create` creates it (or {})",
                        create_command(&bootstrap, t, canonical_partitions)
                    )),
                );
                continue;
            }
            Observed::Error(e) => {
                say(
                    Level::Problem,
                    format!("the broker answered {e} for it"),
                    Some("check the topic and this client's ACLs (Describe, Read, Write)".into()),
                );
                continue;
            }
            Observed::Present {
                partitions,
                configs,
            } => (*partitions, configs),
        };
        let mut problems = 0;
        if t.role == Role::Changelog {
            if let Some(cp) = canonical_partitions.filter(|cp| *cp != partitions) {
                problems += 1;
                let fix = if partitions < cp {
                    format!(
                        "kafka-topics.sh --bootstrap-server {bootstrap} --alter --topic {} --partitions {cp}",
                        t.name
                    )
                } else {
                    format!(
                        "partitions cannot be removed: delete {} and create it again with {cp} partitions (`pulse topics create`); fold rebuilds it from its state",
                        t.name
                    )
                };
                say(
                    Level::Problem,
                    format!(
                        "has {partitions} partitions but the canonical log {} has {cp}; they must be equal (changelog partition p holds canonical partition p's state)",
                        canonical.name
                    ),
                    Some(fix),
                );
            }
        }
        let wanted = topic_configs(t.role);
        if !wanted.is_empty() {
            match configs {
                None => {}
                Some(Err(why)) => {
                    say(
                        Level::Unverified,
                        format!(
                            "cannot verify {}: the broker did not describe the topic's configs ({why})",
                            wanted
                                .iter()
                                .map(|(k, _)| *k)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        None,
                    );
                    problems += 1;
                }
                Some(Ok(cfg)) => {
                    let (found, absent) = config_problems(t, cfg, &bootstrap);
                    for (what, fix) in found {
                        problems += 1;
                        say(Level::Problem, what, Some(fix));
                    }
                    if !absent.is_empty() {
                        problems += 1;
                        say(
                            Level::Unverified,
                            format!(
                                "cannot verify {}: the broker's description of the topic leaves {} out",
                                absent.join(", "),
                                if absent.len() == 1 { "it" } else { "them" }
                            ),
                            None,
                        );
                    }
                }
            }
        }
        if problems == 0 {
            let detail = match configs {
                Some(Ok(cfg)) => wanted
                    .iter()
                    .map(|(k, _)| format!(", {k}={}", cfg.get(*k).map_or("?", String::as_str)))
                    .collect::<String>(),
                _ => String::new(),
            };
            say(Level::Ok, format!("{partitions} partitions{detail}"), None);
        }
    }
    Report {
        bootstrap,
        findings,
    }
}

/// The canonical log's and the changelog's config problems, each with its fix; and the configs
/// the broker's answer left out, which cannot be judged (tansu describes only the configs a
/// topic was created with; Apache Kafka describes all).
fn config_problems(
    t: &Topic,
    cfg: &BTreeMap<String, String>,
    bootstrap: &str,
) -> (Vec<(String, String)>, Vec<&'static str>) {
    let absent: Vec<&'static str> = topic_configs(t.role)
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !cfg.contains_key(*k))
        .collect();
    let get = |k: &str| cfg.get(k).map(String::as_str);
    let alter = |set: &str| {
        format!(
            "kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics --entity-name {} --add-config {set}",
            t.name
        )
    };
    let policy: Option<Vec<&str>> =
        get("cleanup.policy").map(|p| p.split(',').map(str::trim).collect());
    let has = |p: &str| policy.as_ref().is_some_and(|v| v.contains(&p));
    let infinite = |k: &str| get(k) == Some("-1");
    let mut out = Vec::new();
    match t.role {
        Role::Canonical => {
            if has("compact") {
                out.push((
                    format!("cleanup.policy is \"{}\": compaction keeps one record per customer, so the canonical log (the system of record) would lose history", get("cleanup.policy").unwrap_or_default()),
                    alter("cleanup.policy=delete"),
                ));
            }
            let finite: Vec<String> = ["retention.ms", "retention.bytes"]
                .iter()
                .filter_map(|k| get(k).filter(|v| *v != "-1").map(|v| format!("{k}={v}")))
                .collect();
            if !finite.is_empty() {
                out.push((
                    format!("finite retention ({}): the broker deletes old records, but the canonical log is the system of record (replay and restore refold it)", finite.join(", ")),
                    alter("retention.ms=-1,retention.bytes=-1"),
                ));
            }
        }
        Role::Changelog => {
            if policy.is_some() && !has("compact") {
                out.push((
                    format!("cleanup.policy is \"{}\", not \"compact\": retention deletes customers' latest state and checkpoints, so a restore from it loses customers", get("cleanup.policy").unwrap_or_default()),
                    alter("cleanup.policy=compact"),
                ));
            } else if has("delete") && !(infinite("retention.ms") && infinite("retention.bytes")) {
                out.push((
                    format!("cleanup.policy is \"{}\" with retention.ms={}, retention.bytes={}: the state of customers quiet for longer than that is deleted", get("cleanup.policy").unwrap_or_default(), get("retention.ms").unwrap_or("(not given)"), get("retention.bytes").unwrap_or("(not given)")),
                    alter("cleanup.policy=compact"),
                ));
            }
        }
        Role::Input | Role::Output => {}
    }
    (out, absent)
}

fn create_command(bootstrap: &str, t: &Topic, canonical_partitions: Option<i32>) -> String {
    let partitions = match (t.role, canonical_partitions) {
        (Role::Changelog, Some(n)) => n.to_string(),
        _ => "N".into(),
    };
    let configs: String = topic_configs(t.role)
        .iter()
        .map(|(k, v)| format!(" --config {k}={v}"))
        .collect();
    format!(
        "kafka-topics.sh --bootstrap-server {bootstrap} --create --topic {} --partitions {partitions}{configs}",
        t.name
    )
}

#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error(transparent)]
    Reach(#[from] ReachError),
    #[error("create topic {topic}: the broker answered {code:?}{hint}")]
    Create {
        topic: String,
        code: rdkafka::types::RDKafkaErrorCode,
        hint: &'static str,
    },
    #[error("create topics")]
    Admin(#[source] KafkaError),
    #[error("{0}")]
    Unready(String),
}

/// How long an admin request (DescribeConfigs, CreateTopics) may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `pulse run`'s check waits for DescribeConfigs: a broker that has it answers in
/// milliseconds, and one without it (librdkafka's mock cluster) never answers, so this is
/// what every start costs there.
const PREFLIGHT_DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the cluster about every topic of `config`: metadata for all, and the effective configs
/// of the canonical log and the changelog.
pub async fn inspect(config: &Config) -> Result<BTreeMap<String, Observed>, ReachError> {
    inspect_within(config, ADMIN_TIMEOUT).await
}

/// [`inspect`], waiting at most `describe_timeout` for the topics' configs.
async fn inspect_within(
    config: &Config,
    describe_timeout: Duration,
) -> Result<BTreeMap<String, Observed>, ReachError> {
    let c = config.clone();
    let md = tokio::task::spawn_blocking(move || {
        kafka::cluster_metadata(&c).map(|md| {
            md.topics()
                .iter()
                .map(|t| {
                    let seen = match t.error() {
                        None => Ok(t.partitions().len() as i32),
                        Some(e) => Err(rdkafka::types::RDKafkaErrorCode::from(e)),
                    };
                    (t.name().to_string(), seen)
                })
                .collect::<BTreeMap<_, _>>()
        })
    })
    .await
    .expect("metadata task")?;
    let mut observed = BTreeMap::new();
    let mut describe = Vec::new();
    for t in topics(config) {
        let o = match md.get(&t.name) {
            None | Some(Err(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                Observed::Missing
            }
            Some(Err(e)) => Observed::Error(format!("{e:?}")),
            Some(Ok(partitions)) => {
                if !topic_configs(t.role).is_empty() {
                    describe.push(t.name.clone());
                }
                Observed::Present {
                    partitions: *partitions,
                    configs: None,
                }
            }
        };
        observed.insert(t.name, o);
    }
    for (name, configs) in describe_configs(config, &describe, describe_timeout).await {
        if let Some(Observed::Present { configs: c, .. }) = observed.get_mut(&name) {
            *c = Some(configs);
        }
    }
    Ok(observed)
}

/// Each topic's effective configs, or why the broker did not give them.
async fn describe_configs(
    config: &Config,
    names: &[String],
    timeout: Duration,
) -> Vec<(String, Result<BTreeMap<String, String>, String>)> {
    if names.is_empty() {
        return Vec::new();
    }
    let admin: AdminClient<QuietContext> =
        match kafka::client_config(config).create_with_context(QuietContext::default()) {
            Ok(a) => a,
            Err(e) => {
                return names
                    .iter()
                    .map(|n| (n.clone(), Err(e.to_string())))
                    .collect()
            }
        };
    let specs: Vec<ResourceSpecifier<'_>> = names
        .iter()
        .map(|n| ResourceSpecifier::Topic(n.as_str()))
        .collect();
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    match admin.describe_configs(&specs, &opts).await {
        Err(e) => names
            .iter()
            .map(|n| (n.clone(), Err(describe_error(&e, timeout))))
            .collect(),
        Ok(results) => names
            .iter()
            .zip(results)
            .map(|(n, r)| {
                let r = match r {
                    Err(code) => Err(format!("{code:?}")),
                    Ok(res) => Ok(res
                        .entries
                        .into_iter()
                        .filter_map(|e| Some((e.name, e.value?)))
                        .collect()),
                };
                (n.clone(), r)
            })
            .collect(),
    }
}

fn describe_error(e: &KafkaError, timeout: Duration) -> String {
    match e {
        KafkaError::AdminOp(rdkafka::types::RDKafkaErrorCode::OperationTimedOut) => format!(
            "no answer within {} s; a broker without DescribeConfigs, such as librdkafka's mock cluster, never answers",
            timeout.as_secs()
        ),
        KafkaError::AdminOp(code) => format!("{code:?}"),
        other => other.to_string(),
    }
}

/// `pulse topics check`: the report of [`judge`] on what [`inspect`] saw.
pub async fn check(config: &Config) -> Result<Report, ReachError> {
    Ok(judge(config, &inspect(config).await?))
}

/// Before `pulse run` starts its pipelines: the check, failing on any problem (naming each
/// topic, with its fix), warning once about what the broker could not verify.
pub async fn preflight(config: &Config) -> Result<Report, TopicsError> {
    let report = judge(
        config,
        &inspect_within(config, PREFLIGHT_DESCRIBE_TIMEOUT).await?,
    );
    for f in report.unverified() {
        tracing::warn!(topic = %f.topic, key = f.key, "{}", f.what);
    }
    let problems: Vec<String> = report
        .problems()
        .map(|f| {
            format!(
                "topic {} ({}) {}{}",
                f.topic,
                f.key,
                f.what,
                f.fix
                    .as_ref()
                    .map_or(String::new(), |x| format!("\n  fix: {x}"))
            )
        })
        .collect();
    if !problems.is_empty() {
        return Err(TopicsError::Unready(format!(
            "the Kafka topics at {} are not ready for pulse (`pulse topics check` lists them):\n{}",
            report.bootstrap,
            problems.join("\n")
        )));
    }
    Ok(report)
}

/// `pulse topics create`: creates each missing topic with `partitions` partitions (the changelog
/// with the canonical log's count when the canonical log already exists), `replication` replicas
/// (-1: the broker's default) and the configs of [`topic_configs`]. Existing topics are left as
/// they are: the returned check says what, if anything, is wrong with them. Returns the topics
/// created and the check made afterwards.
pub async fn create(
    config: &Config,
    partitions: i32,
    replication: i32,
) -> Result<(Vec<String>, Report), TopicsError> {
    let observed = inspect(config).await?;
    let canonical = topics(config)
        .into_iter()
        .find(|t| t.role == Role::Canonical)
        .expect("a canonical log");
    let canonical_partitions = match observed.get(&canonical.name) {
        Some(Observed::Present { partitions, .. }) => *partitions,
        _ => partitions,
    };
    let missing: Vec<Topic> = topics(config)
        .into_iter()
        .filter(|t| matches!(observed.get(&t.name), Some(Observed::Missing) | None))
        .collect();
    let mut created = Vec::new();
    if !missing.is_empty() {
        let admin: AdminClient<QuietContext> = kafka::client_config(config)
            .create_with_context(QuietContext::default())
            .map_err(TopicsError::Admin)?;
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| {
                let n = if t.role == Role::Changelog {
                    canonical_partitions
                } else {
                    partitions
                };
                topic_configs(t.role).iter().fold(
                    NewTopic::new(&t.name, n, TopicReplication::Fixed(replication)),
                    |nt, (k, v)| nt.set(k, v),
                )
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results = admin
            .create_topics(&new, &opts)
            .await
            .map_err(|e| match e {
                KafkaError::AdminOp(code) => TopicsError::Create {
                    topic: missing[0].name.clone(),
                    code,
                    hint: hint(code),
                },
                e => TopicsError::Admin(e),
            })?;
        for r in results {
            match r {
                Ok(name) => created.push(name),
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(TopicsError::Create {
                        topic,
                        code,
                        hint: hint(code),
                    })
                }
            }
        }
    }
    Ok((created, check(config).await?))
}

fn hint(code: rdkafka::types::RDKafkaErrorCode) -> &'static str {
    use rdkafka::types::RDKafkaErrorCode as C;
    match code {
        C::UnsupportedFeature | C::UnsupportedVersion => {
            " (this broker has no CreateTopics, as librdkafka's mock cluster: create them with its own tools)"
        }
        C::InvalidReplicationFactor => " (use --replication-factor with at most as many brokers as the cluster has)",
        C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => {
            " (this client may not create topics: ask for the Create ACL, or create them with the commands `pulse topics check` prints)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(partitions: i32, configs: &[(&str, &str)]) -> Observed {
        Observed::Present {
            partitions,
            configs: Some(Ok(configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect())),
        }
    }

    fn healthy(config: &Config) -> BTreeMap<String, Observed> {
        topics(config)
            .into_iter()
            .map(|t| {
                let o = match t.role {
                    Role::Canonical => present(6, topic_configs(t.role)),
                    Role::Changelog => present(6, topic_configs(t.role)),
                    _ => Observed::Present {
                        partitions: 3,
                        configs: None,
                    },
                };
                (t.name, o)
            })
            .collect()
    }

    #[test]
    fn a_healthy_cluster_is_ok_and_input_partitions_are_free() {
        let c = Config::with_overrides("").unwrap();
        let r = judge(&c, &healthy(&c));
        assert_eq!(r.problems().count(), 0, "{}", r.render());
        assert_eq!(r.unverified().count(), 0);
        assert_eq!(r.findings.len(), 10);
        assert!(r.render().ends_with("all 10 topics ok\n"), "{}", r.render());
    }

    #[test]
    fn each_problem_is_named_with_its_fix() {
        let c = Config::with_overrides("").unwrap();
        let mut o = healthy(&c);
        o.insert("pulse.erasures".into(), Observed::Missing);
        o.insert(
            "pulse.state-changelog".into(),
            present(4, &[("cleanup.policy", "delete")]),
        );
        o.insert(
            "pulse.customer-events".into(),
            present(
                6,
                &[
                    ("cleanup.policy", "delete"),
                    ("retention.ms", "604800000"),
                    ("retention.bytes", "-1"),
                ],
            ),
        );
        let r = judge(&c, &o);
        let text = r.render();
        let problems: Vec<&Finding> = r.problems().collect();
        assert_eq!(problems.len(), 4, "{text}");
        let find = |topic: &str, needle: &str| {
            problems
                .iter()
                .find(|f| f.topic == topic && f.what.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` on {topic}:\n{text}"))
        };
        assert!(find("pulse.erasures", "does not exist")
            .fix
            .as_deref()
            .unwrap()
            .contains("pulse topics create"));
        let p = find("pulse.state-changelog", "has 4 partitions");
        assert!(p.what.contains("pulse.customer-events has 6"), "{text}");
        assert!(
            p.fix.as_deref().unwrap().contains("--partitions 6"),
            "{text}"
        );
        let p = find("pulse.state-changelog", "cleanup.policy is \"delete\"");
        assert!(p.fix.as_deref().unwrap().contains("cleanup.policy=compact"));
        let p = find("pulse.customer-events", "retention.ms=604800000");
        assert!(p
            .fix
            .as_deref()
            .unwrap()
            .contains("retention.ms=-1,retention.bytes=-1"));
        assert!(text.contains("4 problem(s)"), "{text}");
    }

    #[test]
    fn a_compacted_canonical_log_and_compact_delete_changelog_are_problems() {
        let c = Config::with_overrides("").unwrap();
        let mut o = healthy(&c);
        o.insert(
            "pulse.customer-events".into(),
            present(
                6,
                &[
                    ("cleanup.policy", "compact"),
                    ("retention.ms", "-1"),
                    ("retention.bytes", "-1"),
                ],
            ),
        );
        o.insert(
            "pulse.state-changelog".into(),
            present(
                6,
                &[
                    ("cleanup.policy", "compact,delete"),
                    ("retention.ms", "604800000"),
                    ("retention.bytes", "-1"),
                ],
            ),
        );
        let r = judge(&c, &o);
        assert_eq!(r.problems().count(), 2, "{}", r.render());
    }

    #[test]
    fn configs_a_broker_cannot_give_are_unverified_never_ok() {
        let c = Config::with_overrides("").unwrap();
        let mut o = healthy(&c);
        for name in ["pulse.customer-events", "pulse.state-changelog"] {
            o.insert(
                name.into(),
                Observed::Present {
                    partitions: 6,
                    configs: Some(Err("UnsupportedFeature".into())),
                },
            );
        }
        let r = judge(&c, &o);
        assert_eq!(r.problems().count(), 0);
        let u: Vec<&Finding> = r.unverified().collect();
        assert_eq!(u.len(), 2, "{}", r.render());
        assert!(u[0]
            .what
            .contains("cannot verify cleanup.policy, retention.ms"));
        assert!(
            !r.findings
                .iter()
                .any(|f| f.level == Level::Ok && f.topic == "pulse.state-changelog"),
            "{}",
            r.render()
        );
    }
}
