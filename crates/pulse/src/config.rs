//! Configuration: the default TOML (the one place defaults live), the user's file on top, then
//! `PULSE__SECTION__KEY` environment overrides; deserialized strictly (unknown keys refused) and
//! validated without I/O. Every error names the offending key.
//!
//! It also resolves secrets: `token_env` for HTTP tokens, and `<property>_env` / `<property>_file`
//! for any librdkafka property, so no secret has to be written in the file. A secret's value never
//! reaches an error message or a log line: errors about values that came from the environment or
//! from `[kafka.properties]` say what was expected, never what was given, and `Debug` redacts.

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

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub group_id: String,
    /// librdkafka properties, passed through. After loading, `<name>_env` and `<name>_file`
    /// entries have been replaced by `<name>` holding the value they point at.
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    /// Property values are redacted: any of them may be a secret (`sasl.password`,
    /// `sasl.jaas.config`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`, ...).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&String> = self.properties.keys().collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("properties (values redacted)", &names)
            .finish()
    }
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
    pub erasures: String,
}

impl Topics {
    /// Every topic with its config key, canonical log first.
    pub fn named(&self) -> [(&'static str, &str); 10] {
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
            ("topics.erasures", &self.erasures),
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
    /// Events more than this ahead of ingest's wall clock are dead-lettered (`future_event`);
    /// 0 turns the check off.
    pub max_future_skew_ms: i64,
    /// The longest an input partition with records still in the broker may hold the
    /// event-time merge back (`ingest/merge.rs`); 0 relays in arrival order.
    pub merge_max_idle_ms: u64,
    /// The most received records the merge holds back.
    pub merge_max_buffered: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FoldConfig {
    pub enabled: bool,
    pub state_dir: PathBuf,
    pub commit_max_events: usize,
    pub commit_interval_ms: u64,
    /// Bytes of customer state each partition's cache holds (customers live in sled).
    pub cache_bytes: usize,
    pub dedupe_window_days: i64,
    pub fsync: bool,
    /// Least time between two rewrites of a partition's database after erasures (0: after
    /// every commit that erased someone).
    pub erasure_rewrite_interval_ms: u64,
    pub guarantee: Guarantee,
    /// Stable identity of this instance (the pod name in a StatefulSet): part of the
    /// transactional.id in exactly-once mode.
    pub instance_id: String,
}

/// How alerts and changelog records leave fold (see ARCHITECTURE.md, invariants 4 and 18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Outbox drained after the sled commit; a crash can re-send byte-identical records.
    EffectivelyOnce,
    /// Outbox drained inside a Kafka transaction that also commits the input offsets.
    ExactlyOnce,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// The base URL other instances and clients reach this one at; "" = `http://<bound addr>`.
    /// Fold commits its offsets with this as metadata: how owners are found (see http.rs).
    pub advertised_addr: String,
    /// Paths served without authentication.
    pub open_paths: Vec<String>,
    /// How long the fold group's partition → owner map is cached, milliseconds.
    pub owner_cache_ms: u64,
    /// `/readyz` is 503 while any held canonical partition is more records than this behind
    /// the end of the log; 0: no lag bound (only the assignment and restores count).
    pub ready_max_lag_records: u64,
    pub auth: AuthConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub enabled: bool,
    pub tokens: Vec<TokenConfig>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// The secret itself (better: `token_env`). After loading, holds the resolved secret.
    #[serde(default)]
    pub token: Option<String>,
    /// Name of the environment variable holding the secret.
    #[serde(default)]
    pub token_env: Option<String>,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_env", &self.token_env)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// Scopes a token may carry: `customers:read` for `/v1/customers/*`, `stats:read` for
/// `/v1/stages` and `/v1/segments`; `/v1/openapi.json` takes any valid token.
pub const SCOPES: [&str; 2] = ["customers:read", "stats:read"];
/// Shorter secrets are refused: a bearer token must not be guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// librdkafka's default `message.max.bytes`: the largest record (key, value, headers and
/// framing) its producer accepts; a larger one fails with `MessageSizeTooLarge`.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Room kept under `message.max.bytes` for a produced record's headers and framing (a dead
/// letter's are at most about 2 kB): the key and value of every record ingest produces fit
/// in `message.max.bytes - RECORD_HEADROOM` bytes together, and so does an input record of
/// `ingest.max_record_bytes`.
pub const RECORD_HEADROOM: usize = 16_384;

impl KafkaConfig {
    /// The producer's `message.max.bytes`: the pass-through property if set (validated), else
    /// librdkafka's default.
    pub fn message_max_bytes(&self) -> usize {
        self.properties
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
    }
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
    #[error("cannot read the file `{path}` named by config key `{key}`")]
    SecretFile {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
        let from_env = apply_env(&mut value, std::env::vars())?;
        let mut config = Config::from_value_env(value, &from_env)?;
        config.resolve_secrets(|k| std::env::var(k).ok())?;
        config.resolve_kafka_secrets(|k| std::env::var(k).ok(), |p| std::fs::read_to_string(p))?;
        Ok(config)
    }

    /// Replaces each `[kafka.properties]` entry `<name>_env = "VAR"` by `<name>` = the value of
    /// the environment variable `VAR`, and `<name>_file = "/path"` by `<name>` = the file's
    /// content (one trailing newline removed, as `kubectl create secret --from-file` and editors
    /// leave one). Setting a property both directly and indirectly, a variable that is not set
    /// or a file that cannot be read is refused naming the key, never the value. Then every
    /// property is checked against librdkafka, so a misspelt name (say, from an environment
    /// variable `PULSE__KAFKA__PROPERTIES__SASL_PASWORD`) or a refused value (a TLS key in a
    /// build without TLS) is refused here, naming it, instead of by librdkafka later with the
    /// value in its message.
    pub fn resolve_kafka_secrets(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
        read: impl Fn(&Path) -> std::io::Result<String>,
    ) -> Result<(), ConfigError> {
        let props = std::mem::take(&mut self.kafka.properties);
        let mut resolved = BTreeMap::new();
        for (name, value) in props {
            let key = format!("kafka.properties.\"{name}\"");
            let (target, secret) = if let Some(target) = name.strip_suffix("_env") {
                let secret = env(&value).ok_or_else(|| {
                    ConfigError::invalid(&key, format!("environment variable `{value}` is not set"))
                })?;
                (target.to_string(), secret)
            } else if let Some(target) = name.strip_suffix("_file") {
                let path = PathBuf::from(&value);
                let mut secret = read(&path).map_err(|source| ConfigError::SecretFile {
                    key: key.clone(),
                    path,
                    source,
                })?;
                if secret.ends_with('\n') {
                    secret.pop();
                    if secret.ends_with('\r') {
                        secret.pop();
                    }
                }
                (target.to_string(), secret)
            } else {
                (name, value)
            };
            if resolved.insert(target.clone(), secret).is_some() {
                return Err(ConfigError::invalid(
                    format!("kafka.properties.\"{target}\""),
                    format!("is set more than once (directly, `{target}_env` or `{target}_file`)"),
                ));
            }
        }
        self.kafka.properties = resolved;
        crate::kafka::check_properties(&self.kafka.properties).map_err(|(name, reason)| {
            ConfigError::invalid(format!("kafka.properties.\"{name}\""), reason)
        })
    }

    /// Reads every `http.auth.tokens[i].token_env` through `env` into `token`; a missing or
    /// too short secret is refused, naming the key (never the secret).
    pub fn resolve_secrets(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        for (i, t) in self.http.auth.tokens.iter_mut().enumerate() {
            if let Some(var) = &t.token_env {
                let key = format!("http.auth.tokens[{i}].token_env");
                let secret = env(var).ok_or_else(|| {
                    ConfigError::invalid(&key, format!("environment variable `{var}` is not set"))
                })?;
                if secret.len() < MIN_TOKEN_LEN {
                    return Err(ConfigError::invalid(
                        key,
                        format!("the token in `{var}` is shorter than {MIN_TOKEN_LEN} characters"),
                    ));
                }
                t.token = Some(secret);
            }
        }
        Ok(())
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
        Config::from_value_env(value, &[])
    }

    /// `from_env`: what [`apply_env`] set, so that errors about those values leave them out.
    fn from_value_env(
        value: toml::Table,
        from_env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
                let key = e.path().to_string();
                let e = ConfigError::invalid(
                    if key == "." { "(root)".into() } else { key },
                    e.into_inner().message().to_string(),
                );
                redact_env(e, from_env)
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
            (
                "ingest.merge_max_buffered",
                self.ingest.merge_max_buffered as i64,
            ),
            ("fold.commit_max_events", self.fold.commit_max_events as i64),
            ("fold.cache_bytes", self.fold.cache_bytes as i64),
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
        if self.ingest.max_future_skew_ms < 0 {
            return Err(ConfigError::invalid(
                "ingest.max_future_skew_ms",
                "must not be negative (0 turns the future-event check off)",
            ));
        }
        if self.fold.dedupe_window_days < 0 {
            return Err(ConfigError::invalid(
                "fold.dedupe_window_days",
                "must not be negative (0 disables dedupe)",
            ));
        }
        if self.fold.guarantee == Guarantee::ExactlyOnce && self.fold.instance_id.trim().is_empty()
        {
            return Err(ConfigError::invalid(
                "fold.instance_id",
                "must be set when fold.guarantee is \"exactly-once\" (a stable name per instance, e.g. the pod name)",
            ));
        }
        if self.fold.instance_id.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "fold.instance_id",
                "must not contain whitespace",
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
            "transactional.id",
        ] {
            if self.kafka.properties.contains_key(key) {
                return Err(ConfigError::invalid(
                    format!("kafka.properties.\"{key}\""),
                    "is set by pulse itself; use the kafka section's own keys",
                ));
            }
        }
        if let Some(v) = self.kafka.properties.get("message.max.bytes") {
            // librdkafka's own range for the property.
            if !v
                .trim()
                .parse::<usize>()
                .is_ok_and(|n| (1_000..=1_000_000_000).contains(&n))
            {
                return Err(ConfigError::invalid(
                    "kafka.properties.\"message.max.bytes\"",
                    format!("must be a whole number of bytes from 1000 to 1000000000, not {v:?}"),
                ));
            }
        }
        // An input record ingest accepts must fit in what its producer can send, with the
        // key and headers (the canonical record or the dead letter carrying it).
        let max_message = self.kafka.message_max_bytes();
        if self.ingest.max_record_bytes.saturating_add(RECORD_HEADROOM) > max_message {
            return Err(ConfigError::invalid(
                "ingest.max_record_bytes",
                format!(
                    "{} is more than the producer's message.max.bytes ({max_message}, kafka.properties) less {RECORD_HEADROOM} bytes for keys and headers: at most {}",
                    self.ingest.max_record_bytes,
                    max_message.saturating_sub(RECORD_HEADROOM)
                ),
            ));
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
        self.validate_http()?;
        self.scoring
            .validate()
            .map_err(|e| ConfigError::invalid(format!("scoring.{}", e.key), e.reason))
    }
}

impl Config {
    fn validate_http(&self) -> Result<(), ConfigError> {
        let a = &self.http.advertised_addr;
        if !(a.is_empty() || a.starts_with("http://") || a.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "http.advertised_addr",
                "must be empty or a base URL such as http://pulse-0.pulse:9464",
            ));
        }
        for (i, p) in self.http.open_paths.iter().enumerate() {
            if !p.starts_with('/') {
                return Err(ConfigError::invalid(
                    format!("http.open_paths[{i}]"),
                    "must start with /",
                ));
            }
        }
        let auth = &self.http.auth;
        if auth.enabled && auth.tokens.is_empty() {
            return Err(ConfigError::invalid(
                "http.auth.tokens",
                "auth is enabled but no token is configured",
            ));
        }
        for (i, t) in auth.tokens.iter().enumerate() {
            let key = |k: &str| format!("http.auth.tokens[{i}].{k}");
            if t.name.trim().is_empty() {
                return Err(ConfigError::invalid(key("name"), "must not be empty"));
            }
            if auth.tokens[..i].iter().any(|o| o.name == t.name) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!("token name `{}` is used twice", t.name),
                ));
            }
            match (&t.token, &t.token_env) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(ConfigError::invalid(
                        key("token"),
                        "set exactly one of `token` and `token_env`",
                    ))
                }
                (Some(secret), None) if secret.len() < MIN_TOKEN_LEN => {
                    return Err(ConfigError::invalid(
                        key("token"),
                        format!("is shorter than {MIN_TOKEN_LEN} characters"),
                    ))
                }
                _ => {}
            }
            if t.scopes.is_empty() {
                return Err(ConfigError::invalid(key("scopes"), "must not be empty"));
            }
            for (j, scope) in t.scopes.iter().enumerate() {
                if !SCOPES.contains(&scope.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("http.auth.tokens[{i}].scopes[{j}]"),
                        format!("unknown scope `{scope}` (known: {})", SCOPES.join(", ")),
                    ));
                }
            }
        }
        Ok(())
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
/// (numbers, booleans, arrays) and are strings otherwise. Under `PULSE__KAFKA__PROPERTIES__`
/// the rest is a librdkafka property name with `_` for `.` (`..._SASL_PASSWORD` sets
/// `sasl.password`, `..._SASL_PASSWORD_FILE` sets `sasl.password_file`), and the value is
/// always a string, as librdkafka takes it. Returns what it
/// set, (config path, variable name), so errors about those values can leave the values out.
fn apply_env(
    value: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut set = Vec::new();
    for (name, raw) in vars {
        let Some(path) = name.strip_prefix("PULSE__") else {
            continue;
        };
        let mut keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(name, "malformed environment override"));
        }
        let property = keys.len() >= 3 && keys[0] == "kafka" && keys[1] == "properties";
        let parsed = if property {
            let rest = keys[2..].join("__");
            // `_ENV` / `_FILE` at the end name the indirection, not a property name part.
            let (base, suffix) = ["_env", "_file"]
                .iter()
                .find_map(|s| rest.strip_suffix(s).map(|b| (b, *s)))
                .unwrap_or((rest.as_str(), ""));
            let prop = format!("{}{suffix}", base.replace('_', "."));
            keys.truncate(2);
            keys.push(prop);
            toml::Value::String(raw)
        } else {
            format!("v = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(raw))
        };
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
        set.push((keys.join("."), name));
    }
    Ok(set)
}

/// An error about a value that came from the environment (`from_env`: config path, variable)
/// or from `[kafka.properties]` loses the value: serde's messages quote it (`invalid type:
/// string "hunter2", expected usize`), and such a value may be a secret set by mistake under
/// the wrong key. What was expected is kept.
fn redact_env(e: ConfigError, from_env: &[(String, String)]) -> ConfigError {
    let ConfigError::Invalid { key, reason } = e else {
        return e;
    };
    let var = from_env
        .iter()
        .find(|(path, _)| {
            key == *path
                || key.starts_with(&format!("{path}."))
                || key.starts_with(&format!("{path}["))
                || path.starts_with(&format!("{key}."))
                || key == "(root)"
        })
        .map(|(_, var)| var);
    // serde's unknown/missing field messages name fields, never values.
    if (var.is_none() && !key.starts_with("kafka.properties"))
        || reason.starts_with("unknown field")
        || reason.starts_with("missing field")
    {
        let reason = match var {
            Some(var) => format!("{reason} (set by environment variable `{var}`)"),
            None => reason,
        };
        return ConfigError::Invalid { key, reason };
    }
    let expected = reason
        .split_once(", expected ")
        .map(|(_, exp)| format!("expected {exp}"))
        .unwrap_or_else(|| "invalid value".to_string());
    let reason = match var {
        Some(var) => format!("{expected} (set by environment variable `{var}`; value not shown)"),
        None => format!("{expected} (value not shown)"),
    };
    ConfigError::Invalid { key, reason }
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
    fn the_record_limit_fits_the_producers_message_size() {
        let c = Config::with_overrides("").unwrap();
        assert_eq!(c.kafka.message_max_bytes(), DEFAULT_MESSAGE_MAX_BYTES);
        assert_eq!(
            c.ingest.max_record_bytes,
            DEFAULT_MESSAGE_MAX_BYTES - RECORD_HEADROOM,
            "the default input limit is the most the default producer can carry"
        );
        // The earlier default (1 MiB) is more than librdkafka's producer sends.
        let err = Config::with_overrides("[ingest]\nmax_record_bytes = 1048576")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ingest.max_record_bytes")
                && err.contains("message.max.bytes (1000000")
                && err.contains("at most 983616"),
            "{err}"
        );
        // Raising the producer's limit allows a larger input limit.
        let c = Config::with_overrides(
            "[kafka.properties]\n\"message.max.bytes\" = \"4000000\"\n[ingest]\nmax_record_bytes = 3000000",
        )
        .unwrap();
        assert_eq!(c.kafka.message_max_bytes(), 4_000_000);
        // Lowering it below the input limit is refused, naming the input limit.
        let err = Config::with_overrides("[kafka.properties]\n\"message.max.bytes\" = \"500000\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ingest.max_record_bytes"), "{err}");
        for bad in ["\"lots\"", "\"999\"", "\"2000000000\""] {
            let err = Config::with_overrides(&format!(
                "[kafka.properties]\n\"message.max.bytes\" = {bad}"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("kafka.properties.\"message.max.bytes\""),
                "{err}"
            );
        }
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
    fn future_skew_is_an_hour_by_default_and_refused_by_name_when_bad() {
        let c = Config::with_overrides("").unwrap();
        assert_eq!(c.ingest.max_future_skew_ms, 3_600_000);
        let off = Config::with_overrides("[ingest]\nmax_future_skew_ms = 0").unwrap();
        assert_eq!(off.ingest.max_future_skew_ms, 0);
        let err = Config::with_overrides("[ingest]\nmax_future_skew_ms = -1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ingest.max_future_skew_ms") && err.contains("negative"),
            "{err}"
        );
        let err = Config::with_overrides("[ingest]\nmax_future_skew_ms = \"1h\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ingest.max_future_skew_ms"), "{err}");
    }

    #[test]
    fn auth_tokens_are_validated_by_key() {
        let ok = "[http.auth]\nenabled = true\ntokens = [{ name = \"ops\", token = \"0123456789abcdef\", scopes = [\"customers:read\"] }]";
        let c = Config::with_overrides(ok).unwrap();
        assert!(c.http.auth.enabled);
        assert!(
            !format!("{c:?}").contains("0123456789abcdef"),
            "secrets are not printed"
        );
        let short = ok.replace("0123456789abcdef", "short");
        let err = Config::with_overrides(&short).unwrap_err().to_string();
        assert!(err.contains("http.auth.tokens[0].token"), "{err}");
        let scope = ok.replace("customers:read", "customers:write");
        let err = Config::with_overrides(&scope).unwrap_err().to_string();
        assert!(
            err.contains("http.auth.tokens[0].scopes[0]") && err.contains("customers:write"),
            "{err}"
        );
        let none = "[http.auth]\nenabled = true";
        let err = Config::with_overrides(none).unwrap_err().to_string();
        assert!(err.contains("http.auth.tokens"), "{err}");
        let from_env = "[http.auth]\nenabled = true\ntokens = [{ name = \"ops\", token_env = \"T_OPS\", scopes = [\"stats:read\"] }]";
        let mut c = Config::with_overrides(from_env).unwrap();
        let err = c.resolve_secrets(|_| None).unwrap_err().to_string();
        assert!(
            err.contains("http.auth.tokens[0].token_env") && err.contains("T_OPS"),
            "{err}"
        );
        let err = c
            .resolve_secrets(|_| Some("tiny".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shorter") && !err.contains("tiny"), "{err}");
        c.resolve_secrets(|_| Some("a-long-enough-secret".into()))
            .unwrap();
        assert_eq!(
            c.http.auth.tokens[0].token.as_deref(),
            Some("a-long-enough-secret")
        );
    }

    #[test]
    fn exactly_once_needs_an_instance_id() {
        let c = Config::with_overrides("").unwrap();
        assert_eq!(c.fold.guarantee, Guarantee::EffectivelyOnce);
        let err = Config::with_overrides("[fold]\nguarantee = \"exactly-once\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fold.instance_id"), "{err}");
        let c = Config::with_overrides(
            "[fold]\nguarantee = \"exactly-once\"\ninstance_id = \"pulse-0\"",
        )
        .unwrap();
        assert_eq!(c.fold.guarantee, Guarantee::ExactlyOnce);
        let err = Config::with_overrides("[fold]\nguarantee = \"at-most-once\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fold.guarantee"), "{err}");
        let err = Config::with_overrides("[kafka.properties]\n\"transactional.id\" = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("transactional.id"), "{err}");
    }

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/pulse.example.toml");
        match (cfg!(feature = "ssl"), Config::load(Some(&path))) {
            (true, Ok(c)) => assert_eq!(c.kafka.properties["security.protocol"], "SASL_SSL"),
            // Without TLS in the build, its TLS settings are refused at load, by name.
            (false, Err(e)) => {
                let e = e.to_string();
                assert!(
                    e.contains("kafka.properties.\"security.protocol\"")
                        && e.contains("OpenSSL not available"),
                    "{e}"
                );
                assert!(!e.contains("SASL_SSL"), "the value is not shown: {e}");
            }
            (ssl, r) => panic!("ssl feature {ssl}: {r:?}"),
        }
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

    #[test]
    fn kafka_properties_come_from_env_and_files_and_are_never_echoed() {
        let secret = "s3cr3t-never-shown";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, format!("{secret}-file\n")).unwrap();
        let mut c = Config::with_overrides(&format!(
            "[kafka.properties]\n\"sasl.password_env\" = \"KAFKA_PW\"\n\"sasl.username_file\" = \"{}\"\n\"sasl.mechanism\" = \"PLAIN\"",
            file.display()
        ))
        .unwrap();
        let env = |k: &str| (k == "KAFKA_PW").then(|| secret.to_string());
        c.resolve_kafka_secrets(env, |p| std::fs::read_to_string(p))
            .unwrap();
        let p = &c.kafka.properties;
        assert_eq!(p["sasl.password"], secret);
        assert_eq!(
            p["sasl.username"],
            format!("{secret}-file"),
            "one newline dropped"
        );
        assert_eq!(p["sasl.mechanism"], "PLAIN");
        assert!(!p.contains_key("sasl.password_env") && !p.contains_key("sasl.username_file"));
        assert!(
            !format!("{c:?}").contains(secret),
            "Debug redacts property values"
        );

        let mut twice = Config::with_overrides(
            "[kafka.properties]\n\"sasl.password_env\" = \"KAFKA_PW\"\n\"sasl.password\" = \"x\"",
        )
        .unwrap();
        let err = twice
            .resolve_kafka_secrets(env, |p| std::fs::read_to_string(p))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kafka.properties.\"sasl.password\"") && err.contains("more than once"),
            "{err}"
        );
        assert!(!err.contains(secret), "{err}");

        let mut unset =
            Config::with_overrides("[kafka.properties]\n\"sasl.password_env\" = \"NOT_SET\"")
                .unwrap();
        let err = unset
            .resolve_kafka_secrets(|_| None, |p| std::fs::read_to_string(p))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sasl.password_env") && err.contains("NOT_SET"),
            "{err}"
        );
    }

    #[test]
    fn environment_sets_dotted_properties_and_errors_leave_env_values_out() {
        let secret = "s3cr3t-never-shown";
        let mut v = parse(DEFAULT_TOML, "d").unwrap();
        let set = apply_env(
            &mut v,
            [
                (
                    "PULSE__KAFKA__PROPERTIES__SASL_PASSWORD".to_string(),
                    secret.to_string(),
                ),
                // A number stays a string: librdkafka takes strings.
                (
                    "PULSE__KAFKA__PROPERTIES__LINGER_MS".to_string(),
                    "7".to_string(),
                ),
                (
                    "PULSE__KAFKA__PROPERTIES__SASL_USERNAME_FILE".to_string(),
                    "/run/secrets/user".to_string(),
                ),
            ],
        )
        .unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(
            v["kafka"]["properties"]["sasl.username_file"].as_str(),
            Some("/run/secrets/user")
        );
        let c = Config::from_value(v).unwrap();
        assert_eq!(c.kafka.properties["sasl.password"], secret);
        assert_eq!(c.kafka.properties["linger.ms"], "7");

        // A secret under a wrong key: the error names the key and the variable, not the value.
        for (var, key) in [
            ("PULSE__FOLD__COMMIT_MAX_EVENTS", "fold.commit_max_events"),
            ("PULSE__KAFKA__PROPERTIES", "kafka.properties"),
            ("PULSE__KAFKA", "kafka"),
            ("PULSE__KAFKA__SASL_PASSWORD", "sasl_password"),
        ] {
            let mut v = parse(DEFAULT_TOML, "d").unwrap();
            let set = apply_env(&mut v, [(var.to_string(), secret.to_string())]).unwrap();
            let err = Config::from_value_env(v, &set).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(var), "{err}");
            assert!(!err.contains(secret), "{err}");
        }
        // A misspelt property name is refused by name before librdkafka could echo the value.
        let mut c = Config::with_overrides(&format!(
            "[kafka.properties]\n\"sasl.pasword\" = \"{secret}\""
        ))
        .unwrap();
        let err = c
            .resolve_kafka_secrets(|_| None, |p| std::fs::read_to_string(p))
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.properties.\"sasl.pasword\""), "{err}");
        assert!(!err.contains(secret), "{err}");
        // A value of the wrong type in the file: no echo either.
        let err = Config::with_overrides("[kafka.properties]\n\"sasl.password\" = 123456789")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sasl.password") && !err.contains("123456789"),
            "{err}"
        );
    }
}
