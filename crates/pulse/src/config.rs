//! Configuration: the default TOML (the one place defaults live), the user's file on top, then
//! `PULSE__SECTION__KEY` environment overrides; deserialized strictly (unknown keys refused) and
//! validated without I/O. Every error names the offending key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pulse_codec::Encoding;
use pulse_core::ScoringConfig;
use serde::Deserialize;

pub const DEFAULT_TOML: &str = include_str!("../pulse.default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: Topics,
    pub encoding: Encodings,
    pub ingest: IngestConfig,
    pub fold: FoldConfig,
    pub http: HttpConfig,
    pub scoring: ScoringConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub group_id: String,
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topics {
    pub orders: String,
    pub clickstream: String,
    pub support: String,
    pub canonical: String,
    pub dead_letters: String,
    pub churn_warnings: String,
    pub segment_changes: String,
    pub lifecycle_changes: String,
    pub changelog: String,
}

impl Topics {
    /// Every topic with its config key, canonical log first.
    pub fn named(&self) -> [(&'static str, &str); 9] {
        [
            ("topics.canonical", &self.canonical),
            ("topics.orders", &self.orders),
            ("topics.clickstream", &self.clickstream),
            ("topics.support", &self.support),
            ("topics.dead_letters", &self.dead_letters),
            ("topics.churn_warnings", &self.churn_warnings),
            ("topics.segment_changes", &self.segment_changes),
            ("topics.lifecycle_changes", &self.lifecycle_changes),
            ("topics.changelog", &self.changelog),
        ]
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encodings {
    pub orders: Encoding,
    pub clickstream: Encoding,
    pub support: Encoding,
    pub canonical: Encoding,
    pub alerts: Encoding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TickSourceConfig {
    Watermark,
    WallClock,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub enabled: bool,
    pub max_record_bytes: usize,
    pub batch_max_records: usize,
    pub batch_max_ms: u64,
    pub tick_interval_ms: u64,
    pub tick_source: TickSourceConfig,
    pub allowed_lateness_ms: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FoldConfig {
    pub enabled: bool,
    pub state_dir: PathBuf,
    pub commit_max_events: usize,
    pub commit_interval_ms: u64,
    pub dedupe_window_days: i64,
    pub fsync: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut value = parse(DEFAULT_TOML, "pulse.default.toml")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            merge(&mut value, parse(&text, &path.display().to_string())?);
        }
        apply_env(&mut value, std::env::vars())?;
        Config::from_value(value)
    }

    /// The defaults with `overrides` (a TOML fragment) on top; for tests and the demo.
    pub fn with_overrides(overrides: &str) -> Result<Config, ConfigError> {
        Config::with_layers(&[overrides])
    }

    /// The defaults with each TOML fragment merged on top in turn.
    pub fn with_layers(layers: &[&str]) -> Result<Config, ConfigError> {
        let mut value = parse(DEFAULT_TOML, "pulse.default.toml")?;
        for layer in layers {
            merge(&mut value, parse(layer, "overrides")?);
        }
        Config::from_value(value)
    }

    fn from_value(value: toml::Table) -> Result<Config, ConfigError> {
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::invalid(
                    if key == "." { "(root)".into() } else { key },
                    e.into_inner().message().to_string(),
                )
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work. Connectivity is checked separately, at start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            (
                "ingest.max_record_bytes",
                self.ingest.max_record_bytes as i64,
            ),
            (
                "ingest.batch_max_records",
                self.ingest.batch_max_records as i64,
            ),
            ("ingest.batch_max_ms", self.ingest.batch_max_ms as i64),
            (
                "ingest.tick_interval_ms",
                self.ingest.tick_interval_ms as i64,
            ),
            ("fold.commit_max_events", self.fold.commit_max_events as i64),
            (
                "fold.commit_interval_ms",
                self.fold.commit_interval_ms as i64,
            ),
        ];
        for (key, v) in positive {
            if v <= 0 {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        if self.ingest.allowed_lateness_ms < 0 {
            return Err(ConfigError::invalid(
                "ingest.allowed_lateness_ms",
                "must not be negative",
            ));
        }
        if self.fold.dedupe_window_days < 0 {
            return Err(ConfigError::invalid(
                "fold.dedupe_window_days",
                "must not be negative (0 disables dedupe)",
            ));
        }
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::invalid(
                "kafka.bootstrap_servers",
                "must not be empty",
            ));
        }
        if self.kafka.group_id.trim().is_empty() {
            return Err(ConfigError::invalid("kafka.group_id", "must not be empty"));
        }
        for key in [
            "bootstrap.servers",
            "group.id",
            "enable.auto.commit",
            "isolation.level",
        ] {
            if self.kafka.properties.contains_key(key) {
                return Err(ConfigError::invalid(
                    format!("kafka.properties.\"{key}\""),
                    "is set by pulse itself; use the kafka section's own keys",
                ));
            }
        }
        let names = self.topics.named();
        for (i, (key, name)) in names.iter().enumerate() {
            if name.is_empty()
                || name.len() > 249
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(ConfigError::invalid(
                    *key,
                    "is not a valid Kafka topic name",
                ));
            }
            if names[..i].iter().any(|(_, other)| other == name) {
                return Err(ConfigError::invalid(
                    *key,
                    format!("topic `{name}` is used twice"),
                ));
            }
        }
        self.scoring
            .validate()
            .map_err(|e| ConfigError::invalid(format!("scoring.{}", e.key), e.reason))
    }
}

fn parse(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })
}

/// Deep-merges `top` into `base`; tables merge key by key, everything else is replaced.
fn merge(base: &mut toml::Table, top: toml::Table) {
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// `PULSE__FOLD__STATE_DIR=/x` sets `fold.state_dir`. Values parse as TOML when they can
/// (numbers, booleans, arrays) and are strings otherwise.
fn apply_env(
    value: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, raw) in vars {
        let Some(path) = name.strip_prefix("PULSE__") else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(name, "malformed environment override"));
        }
        let parsed = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw));
        let mut table = &mut *value;
        for key in &keys[..keys.len() - 1] {
            let entry = table
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::invalid(&name, format!("`{key}` is not a table")))?;
        }
        table.insert(keys[keys.len() - 1].clone(), parsed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_match_the_core_defaults() {
        let c = Config::with_overrides("").unwrap();
        assert_eq!(c.scoring, ScoringConfig::default());
        assert_eq!(c.topics.canonical, "pulse.customer-events");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = Config::with_overrides("[fold]\nstate_dirx = \"/x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fold") && err.contains("state_dirx"), "{err}");
        let err = Config::with_overrides("[scoring]\nchurned_dayz = 3")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("scoring") && err.contains("churned_dayz"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let err = Config::with_overrides("[fold]\ncommit_max_events = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fold.commit_max_events"), "{err}");
        let err = Config::with_overrides("[scoring]\nchurned_days = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("scoring.churned_days"), "{err}");
        let err = Config::with_overrides("[encoding]\norders = \"xml\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("encoding.orders"), "{err}");
        let err = Config::with_overrides("[kafka.properties]\n\"group.id\" = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("group.id"), "{err}");
    }

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/pulse.example.toml");
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.kafka.properties["security.protocol"], "SASL_SSL");
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut v = parse(DEFAULT_TOML, "d").unwrap();
        apply_env(
            &mut v,
            [
                ("PULSE__FOLD__STATE_DIR".to_string(), "/tmp/s".to_string()),
                (
                    "PULSE__FOLD__COMMIT_MAX_EVENTS".to_string(),
                    "7".to_string(),
                ),
                ("OTHER".to_string(), "x".to_string()),
            ],
        )
        .unwrap();
        let c = Config::from_value(v).unwrap();
        assert_eq!(c.fold.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(c.fold.commit_max_events, 7);
    }
}
