//! Configuration from a TOML file and the environment, layered over the
//! values an application starts from.
//!
//! ```toml
//! [http]
//! max_body = 262144
//! handler_timeout = "10s"
//!
//! [pools.pg]                 # PoolConfig fields
//! max_open = 16
//! acquire_timeout = "2s"
//!
//! [pools.pg.autoscale]       # PoolAutoscale fields
//! enabled = true
//! min = 4
//! max = 32
//! target = { acquire_wait_p99 = "5ms" }
//! ```
//!
//! The same keys come from environment variables named `TIDEPOOL_` and the
//! path in upper case with `__` between its parts:
//! `TIDEPOOL_POOLS__PG__MAX_OPEN=16`,
//! `TIDEPOOL_POOLS__PG__AUTOSCALE__TARGET__ACQUIRE_WAIT_P99=5ms`. In a
//! pool's name, `_` stands for `-` (`PG_SHARED` is `pg-shared`). The
//! environment wins over the file; an application applies its command-line
//! flags over both.
//!
//! Only the keys given change: [`Settings::pool`] and the others take the
//! application's own starting values and return them with the file's and
//! the environment's keys applied. A key that names no field, a value of
//! the wrong type, an unknown pool or section is an error naming it (and
//! the variable it came from).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use toml::{Table, Value};

use tidepool_drivers::pool::PoolConfig;
use tidepool_engine::http::HttpConfig;
use tidepool_supervisor::PoolAutoscale;

/// The prefix of configuration variables (with `__` after it).
pub const ENV_PREFIX: &str = "TIDEPOOL_";

/// A configuration that could not be read, naming the key and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The keys read from a file and the environment, not yet applied.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The file's keys.
    table: Table,
    /// The environment's keys, laid over the file's.
    env: Table,
    /// Where each key came from when it was the environment: dotted path ->
    /// variable name.
    from_env: BTreeMap<String, String>,
    /// The file's name, for errors.
    file: Option<String>,
}

impl Settings {
    /// Reads `file` (if any), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut s = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
                Settings::from_toml(&text, &path.display().to_string())?
            }
            None => Settings::default(),
        };
        s.apply_env(std::env::vars())?;
        Ok(s)
    }

    /// Keys from TOML text; `name` says where it came from in errors.
    pub fn from_toml(text: &str, name: &str) -> Result<Settings, ConfigError> {
        let table: Table = toml::from_str(text).map_err(|e| ConfigError(format!("{name}: {e}")))?;
        Ok(Settings {
            table,
            env: Table::new(),
            from_env: BTreeMap::new(),
            file: Some(name.to_string()),
        })
    }

    /// Applies `TIDEPOOL_<PATH>` variables over what was read: a value is
    /// a boolean, an integer or a number where it reads as one, else text.
    /// Variables without `__` (such as `TIDEPOOL_IO`) are not configuration.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (var, raw) in vars {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if !rest.contains("__") {
                continue;
            }
            let mut path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError(format!("{var}: an empty part in the name")));
            }
            if path.len() > 1 && path[0] == "pools" {
                path[1] = path[1].replace('_', "-");
            }
            let value = env_value(&raw);
            let mut table = &mut self.env;
            for (i, part) in path.iter().enumerate() {
                if i + 1 == path.len() {
                    table.insert(part.clone(), value.clone());
                    break;
                }
                let entry = table
                    .entry(part.clone())
                    .or_insert_with(|| Value::Table(Table::new()));
                table = entry.as_table_mut().ok_or_else(|| {
                    ConfigError(format!(
                        "{var}: {} is a value, not a table",
                        path[..=i].join(".")
                    ))
                })?;
            }
            self.from_env.insert(path.join("."), var);
        }
        Ok(())
    }

    /// Checks that the top-level sections are known (`http`, `pools`,
    /// and `sections`) and every pool named is one of `pools`.
    pub fn check(&self, sections: &[&str], pools: &[&str]) -> Result<(), ConfigError> {
        for table in [&self.table, &self.env] {
            for key in table.keys() {
                if key != "http" && key != "pools" && !sections.contains(&key.as_str()) {
                    return Err(self.error(
                        key,
                        format!(
                            "unknown section `{key}` (known: http, pools{})",
                            list(sections)
                        ),
                    ));
                }
            }
            let Some(p) = table.get("pools") else {
                continue;
            };
            let p = p
                .as_table()
                .ok_or_else(|| self.error("pools", "`pools` must be a table".into()))?;
            for name in p.keys() {
                if !pools.contains(&name.as_str()) {
                    return Err(self.error(
                        &format!("pools.{name}"),
                        format!(
                            "unknown pool `{name}` (this application has: {})",
                            pools.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `base` with the `[http]` keys applied.
    pub fn http(&self, base: HttpConfig) -> Result<HttpConfig, ConfigError> {
        let tls = base.tls.clone();
        let mut cfg = self.apply("http", base)?;
        cfg.tls = tls;
        Ok(cfg)
    }

    /// `base` with the `[pools.<name>]` keys applied (its `autoscale`
    /// table is for [`Settings::autoscale`]).
    pub fn pool(&self, name: &str, base: PoolConfig) -> Result<PoolConfig, ConfigError> {
        self.apply_without(&format!("pools.{name}"), base, "autoscale")
    }

    /// `base` with the `[pools.<name>.autoscale]` keys applied.
    pub fn autoscale(&self, name: &str, base: PoolAutoscale) -> Result<PoolAutoscale, ConfigError> {
        self.apply(&format!("pools.{name}.autoscale"), base)
    }

    /// Any section of the application's own, applied over `base`.
    pub fn section<T: Serialize + DeserializeOwned>(
        &self,
        path: &str,
        base: T,
    ) -> Result<T, ConfigError> {
        self.apply(path, base)
    }

    fn get<'t>(table: &'t Table, path: &str) -> Option<&'t Value> {
        let mut parts = path.split('.');
        let mut v = table.get(parts.next()?)?;
        for p in parts {
            v = v.as_table()?.get(p)?;
        }
        Some(v)
    }

    fn apply<T: Serialize + DeserializeOwned>(
        &self,
        path: &str,
        base: T,
    ) -> Result<T, ConfigError> {
        self.apply_without(path, base, "")
    }

    /// Serializes `base`, lays the table at `path` over it (leaving out the
    /// key `skip`), and reads the result back.
    fn apply_without<T: Serialize + DeserializeOwned>(
        &self,
        path: &str,
        base: T,
        skip: &str,
    ) -> Result<T, ConfigError> {
        let layers: Vec<&Value> = [&self.table, &self.env]
            .into_iter()
            .filter_map(|t| Self::get(t, path))
            .collect();
        if layers.is_empty() {
            return Ok(base);
        }
        let mut merged = Value::try_from(&base).map_err(|e| {
            ConfigError(format!("{path}: the starting value cannot be written: {e}"))
        })?;
        let table = merged
            .as_table_mut()
            .ok_or_else(|| ConfigError(format!("{path}: not a table of settings")))?;
        for over in layers {
            let over = over
                .as_table()
                .ok_or_else(|| self.error(path, format!("`{path}` must be a table")))?;
            for (k, v) in over {
                if k != skip {
                    merge(table, k, v.clone());
                }
            }
        }
        serde_path_to_error::deserialize::<_, T>(merged).map_err(|e| {
            let field = e.path().to_string();
            let key = if field == "." || field.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{field}")
            };
            // The deserializer's message, without the location it appends
            // (the key says it).
            let inner = e.into_inner().to_string();
            let inner = inner.lines().next().unwrap_or_default();
            self.error(&key, format!("{key}: {inner}"))
        })
    }

    /// An error about `key`, saying which variable or file it came from.
    fn error(&self, key: &str, message: String) -> ConfigError {
        let from = self
            .from_env
            .iter()
            .find(|(p, _)| *p == key || p.starts_with(&format!("{key}.")))
            .map(|(_, var)| format!(" (from {var})"))
            .or_else(|| self.file.as_ref().map(|f| format!(" (in {f})")))
            .unwrap_or_default();
        ConfigError(format!("{message}{from}"))
    }
}

/// Lays `value` over `table[key]`. A table whose keys the one below has
/// too (a struct's fields) is merged key by key; any other value replaces
/// what was there, so `target = { idle_ratio = 0.3 }` replaces a target of
/// another kind instead of adding a second key to it.
fn merge(table: &mut Table, key: &str, value: Value) {
    match (table.get_mut(key), value) {
        (Some(Value::Table(into)), Value::Table(from))
            if from.keys().all(|k| into.contains_key(k)) =>
        {
            for (k, v) in from {
                merge(into, &k, v);
            }
        }
        (_, v) => {
            table.insert(key.to_string(), v);
        }
    }
}

fn list(extra: &[&str]) -> String {
    extra.iter().map(|s| format!(", {s}")).collect()
}

/// A variable's text as a TOML value.
fn env_value(raw: &str) -> Value {
    match raw {
        "true" => return Value::Boolean(true),
        "false" => return Value::Boolean(false),
        _ => {}
    }
    if let Ok(i) = raw.parse::<i64>() {
        return Value::Integer(i);
    }
    if let Ok(f) = raw.parse::<f64>() {
        if raw.contains('.') {
            return Value::Float(f);
        }
    }
    Value::String(raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tidepool_supervisor::Target;

    const FILE: &str = r#"
[http]
max_body = 1000
handler_timeout = "10s"

[pools.pg]
max_open = 16
acquire_timeout = "250ms"
max_lifetime = "off"

[pools.pg.autoscale]
enabled = true
min = 4
max = 32
target = { idle_ratio = 0.25 }
window = "1m"
"#;

    fn base() -> PoolConfig {
        PoolConfig {
            max_open: 3,
            min_idle: 2,
            ..PoolConfig::default()
        }
    }

    #[test]
    fn a_file_changes_only_the_keys_it_gives() {
        let s = Settings::from_toml(FILE, "app.toml").unwrap();
        s.check(&[], &["pg", "redis"]).unwrap();
        let pg = s.pool("pg", base()).unwrap();
        assert_eq!(pg.max_open, 16);
        assert_eq!(pg.min_idle, 2, "the application's own starting value stays");
        assert_eq!(pg.acquire_timeout, Duration::from_millis(250));
        assert_eq!(pg.max_lifetime, None);
        let a = s.autoscale("pg", PoolAutoscale::default()).unwrap();
        assert!(a.enabled);
        assert_eq!((a.min, a.max, a.window), (4, 32, Duration::from_secs(60)));
        assert!(matches!(a.target, Target::IdleRatio(r) if r == 0.25));
        assert_eq!(a.cooldown, PoolAutoscale::default().cooldown);
        let http = s.http(HttpConfig::default()).unwrap();
        assert_eq!(
            (http.max_body, http.handler_timeout),
            (1000, Duration::from_secs(10))
        );
        // A pool the file does not mention keeps its starting values.
        assert_eq!(s.pool("redis", base()).unwrap().max_open, 3);
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let mut s = Settings::from_toml(FILE, "app.toml").unwrap();
        s.apply_env([
            ("TIDEPOOL_POOLS__PG__MAX_OPEN".to_string(), "3".to_string()),
            (
                "TIDEPOOL_POOLS__PG_SHARED__MAX_IN_FLIGHT".to_string(),
                "8".to_string(),
            ),
            (
                "TIDEPOOL_POOLS__PG__AUTOSCALE__TARGET__ACQUIRE_WAIT_P99".to_string(),
                "2ms".to_string(),
            ),
            ("TIDEPOOL_IO".to_string(), "epoll".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ])
        .unwrap();
        s.check(&[], &["pg", "pg-shared"]).unwrap();
        assert_eq!(s.pool("pg", base()).unwrap().max_open, 3);
        assert_eq!(s.pool("pg-shared", base()).unwrap().max_in_flight, 8);
        let a = s.autoscale("pg", PoolAutoscale::default()).unwrap();
        // The variable's target replaces the file's (another kind), and the
        // file's other autoscale keys stay.
        assert!(matches!(a.target, Target::AcquireWaitP99(t) if t == Duration::from_millis(2)));
        assert_eq!((a.min, a.max), (4, 32));
    }

    #[test]
    fn routes_get_request_classes_and_queue_mode_from_the_file() {
        use tidepool_drivers::pool::{Class, QueueMode};
        let file = "[pools.pg.queue]\nmode = \"fifo\"\n\n[pools.pg.classes]\n\"/report\" = \"sheddable\"\n\"/checkout\" = \"critical\"\n";
        let s = Settings::from_toml(file, "app.toml").unwrap();
        let pg = s.pool("pg", base()).unwrap();
        assert_eq!(pg.queue.mode, QueueMode::Fifo);
        assert_eq!(pg.classes.get("/report"), Some(&Class::Sheddable));
        assert_eq!(pg.classes.get("/checkout"), Some(&Class::Critical));
        let s = Settings::from_toml("[pools.pg.classes]\n\"/x\" = \"urgent\"\n", "f").unwrap();
        let e = s.pool("pg", base()).unwrap_err().0;
        assert!(
            e.contains("pools.pg.classes") && e.contains("urgent"),
            "{e}"
        );
    }

    #[test]
    fn mistakes_name_the_key_and_where_it_came_from() {
        let s = Settings::from_toml("[pools.pg]\nmax_opne = 3\n", "app.toml").unwrap();
        let e = s.pool("pg", base()).unwrap_err().0;
        assert!(
            e.contains("pools.pg.max_opne") && e.contains("app.toml"),
            "{e}"
        );
        let s = Settings::from_toml("[pools.pg]\nacquire_timeout = \"5\"\n", "app.toml").unwrap();
        let e = s.pool("pg", base()).unwrap_err().0;
        assert!(
            e.contains("pools.pg.acquire_timeout") && e.contains("\"250ms\""),
            "{e}"
        );
        let mut s = Settings::default();
        s.apply_env([(
            "TIDEPOOL_POOLS__PG__MAX_OPEN".to_string(),
            "many".to_string(),
        )])
        .unwrap();
        let e = s.pool("pg", base()).unwrap_err().0;
        assert!(
            e.contains("pools.pg.max_open") && e.contains("TIDEPOOL_POOLS__PG__MAX_OPEN"),
            "{e}"
        );
        let s = Settings::from_toml("[pools.pgg]\nmax_open = 3\n", "app.toml").unwrap();
        let e = s.check(&[], &["pg", "redis"]).unwrap_err().0;
        assert!(
            e.contains("unknown pool `pgg`") && e.contains("pg, redis"),
            "{e}"
        );
        let s = Settings::from_toml("[htp]\n", "app.toml").unwrap();
        assert!(s
            .check(&[], &["pg"])
            .unwrap_err()
            .0
            .contains("unknown section `htp`"));
        let s =
            Settings::from_toml("[pools.pg.autoscale]\ntarget = { p99 = \"5ms\" }\n", "f").unwrap();
        let e = s.autoscale("pg", PoolAutoscale::default()).unwrap_err().0;
        assert!(e.contains("pools.pg.autoscale.target"), "{e}");
        assert!(Settings::from_toml("[pools.pg\n", "app.toml")
            .unwrap_err()
            .0
            .contains("app.toml"));
    }
}
