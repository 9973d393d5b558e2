//! Typed commands. Each encodes its arguments straight into the
//! connection's output buffer (no intermediate command object).

use super::conn::Connection;
use super::encode::{Enc, ToArg};
use super::error::{Error, Result, ServerErrorKind};
use super::script::Script;
use super::value::{pairs_from_value, FromValue, Value};

/// Expiry of a `SET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `EX seconds`.
    Seconds(u64),
    /// `PX milliseconds`.
    Millis(u64),
    /// `EXAT unix-seconds`.
    AtSeconds(u64),
    /// `PXAT unix-milliseconds`.
    AtMillis(u64),
    /// `KEEPTTL`.
    KeepTtl,
}

/// Condition of a `SET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `NX`: only if the key does not exist.
    NotExists,
    /// `XX`: only if the key exists.
    Exists,
}

/// Options of [`Connection::set_with`].
///
/// ```
/// use tidepool_drivers::redis::SetOptions;
/// let o = SetOptions::new().ex(60).nx();
/// let o = SetOptions::new().px(1500).xx().get();
/// # let _ = o;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOptions {
    expiry: Option<Expiry>,
    condition: Option<Condition>,
    get: bool,
}

impl SetOptions {
    /// No options: a plain `SET`.
    pub fn new() -> SetOptions {
        SetOptions::default()
    }
    /// `EX seconds`.
    pub fn ex(mut self, secs: u64) -> SetOptions {
        self.expiry = Some(Expiry::Seconds(secs));
        self
    }
    /// `PX milliseconds`.
    pub fn px(mut self, ms: u64) -> SetOptions {
        self.expiry = Some(Expiry::Millis(ms));
        self
    }
    /// Any expiry.
    pub fn expiry(mut self, e: Expiry) -> SetOptions {
        self.expiry = Some(e);
        self
    }
    /// `NX`.
    pub fn nx(mut self) -> SetOptions {
        self.condition = Some(Condition::NotExists);
        self
    }
    /// `XX`.
    pub fn xx(mut self) -> SetOptions {
        self.condition = Some(Condition::Exists);
        self
    }
    /// `GET`: reply with the old value.
    pub fn get(mut self) -> SetOptions {
        self.get = true;
        self
    }

    fn argc(&self) -> usize {
        let e = match self.expiry {
            None => 0,
            Some(Expiry::KeepTtl) => 1,
            Some(_) => 2,
        };
        e + self.condition.is_some() as usize + self.get as usize
    }

    fn write(&self, e: &mut Enc<'_>) {
        match self.expiry {
            None => {}
            Some(Expiry::Seconds(n)) => {
                e.arg("EX").arg(n);
            }
            Some(Expiry::Millis(n)) => {
                e.arg("PX").arg(n);
            }
            Some(Expiry::AtSeconds(n)) => {
                e.arg("EXAT").arg(n);
            }
            Some(Expiry::AtMillis(n)) => {
                e.arg("PXAT").arg(n);
            }
            Some(Expiry::KeepTtl) => {
                e.arg("KEEPTTL");
            }
        }
        match self.condition {
            None => {}
            Some(Condition::NotExists) => {
                e.arg("NX");
            }
            Some(Condition::Exists) => {
                e.arg("XX");
            }
        }
        if self.get {
            e.arg("GET");
        }
    }
}

/// Options of [`Connection::scan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOptions {
    pattern: Option<Vec<u8>>,
    count: Option<u64>,
    kind: Option<String>,
}

impl ScanOptions {
    /// No filter.
    pub fn new() -> ScanOptions {
        ScanOptions::default()
    }
    /// `MATCH pattern`.
    pub fn pattern(mut self, p: impl AsRef<[u8]>) -> ScanOptions {
        self.pattern = Some(p.as_ref().to_vec());
        self
    }
    /// `COUNT n` (a hint of the work per call).
    pub fn count(mut self, n: u64) -> ScanOptions {
        self.count = Some(n);
        self
    }
    /// `TYPE name` (`string`, `hash`, ...).
    pub fn kind(mut self, t: impl Into<String>) -> ScanOptions {
        self.kind = Some(t.into());
        self
    }
}

impl Connection {
    /// `PING`.
    pub async fn ping(&self) -> Result<()> {
        self.call::<Value>(1, |e| {
            e.arg("PING");
        })
        .await
        .map(drop)
    }

    // ---- strings ----

    /// `GET key`; usually into `Option<Vec<u8>>` or `Option<String>`.
    pub async fn get<T: FromValue>(&self, key: impl ToArg) -> Result<T> {
        self.call(2, |e| {
            e.arg("GET").arg(key);
        })
        .await
    }

    /// `SET key value`.
    pub async fn set(&self, key: impl ToArg, value: impl ToArg) -> Result<()> {
        self.call(3, |e| {
            e.arg("SET").arg(key).arg(value);
        })
        .await
    }

    /// `SET key value [EX|PX|EXAT|PXAT|KEEPTTL] [NX|XX] [GET]`.
    ///
    /// Without `GET` the reply is `OK` or nil (condition not met): read it
    /// as `bool`. With `GET` it is the old value: `Option<Vec<u8>>`.
    pub async fn set_with<T: FromValue>(
        &self,
        key: impl ToArg,
        value: impl ToArg,
        opts: SetOptions,
    ) -> Result<T> {
        self.call(3 + opts.argc(), |e| {
            e.arg("SET").arg(key).arg(value);
            opts.write(e);
        })
        .await
    }

    /// `MGET key...`: one `Option` per key.
    pub async fn mget<T: FromValue>(&self, keys: &[impl ToArg]) -> Result<Vec<Option<T>>> {
        self.call(1 + keys.len(), |e| {
            e.arg("MGET");
            keys.iter().for_each(|k| {
                e.arg(k);
            });
        })
        .await
    }

    /// `MSET key value ...`.
    pub async fn mset(&self, pairs: &[(impl ToArg, impl ToArg)]) -> Result<()> {
        self.call(1 + 2 * pairs.len(), |e| {
            e.arg("MSET");
            pairs.iter().for_each(|(k, v)| {
                e.arg(k).arg(v);
            });
        })
        .await
    }

    /// `INCR key`.
    pub async fn incr(&self, key: impl ToArg) -> Result<i64> {
        self.call(2, |e| {
            e.arg("INCR").arg(key);
        })
        .await
    }

    /// `INCRBY key n`.
    pub async fn incr_by(&self, key: impl ToArg, n: i64) -> Result<i64> {
        self.call(3, |e| {
            e.arg("INCRBY").arg(key).arg(n);
        })
        .await
    }

    /// `DECR key`.
    pub async fn decr(&self, key: impl ToArg) -> Result<i64> {
        self.call(2, |e| {
            e.arg("DECR").arg(key);
        })
        .await
    }

    /// `DECRBY key n`.
    pub async fn decr_by(&self, key: impl ToArg, n: i64) -> Result<i64> {
        self.call(3, |e| {
            e.arg("DECRBY").arg(key).arg(n);
        })
        .await
    }

    /// `APPEND key value`; returns the new length.
    pub async fn append(&self, key: impl ToArg, value: impl ToArg) -> Result<i64> {
        self.call(3, |e| {
            e.arg("APPEND").arg(key).arg(value);
        })
        .await
    }

    /// `GETDEL key`.
    pub async fn getdel<T: FromValue>(&self, key: impl ToArg) -> Result<T> {
        self.call(2, |e| {
            e.arg("GETDEL").arg(key);
        })
        .await
    }

    // ---- keys ----

    /// `DEL key...`; returns how many existed.
    pub async fn del(&self, keys: &[impl ToArg]) -> Result<i64> {
        self.call(1 + keys.len(), |e| {
            e.arg("DEL");
            keys.iter().for_each(|k| {
                e.arg(k);
            });
        })
        .await
    }

    /// `EXISTS key...`; returns how many exist.
    pub async fn exists(&self, keys: &[impl ToArg]) -> Result<i64> {
        self.call(1 + keys.len(), |e| {
            e.arg("EXISTS");
            keys.iter().for_each(|k| {
                e.arg(k);
            });
        })
        .await
    }

    /// `EXPIRE key seconds`; false when the key does not exist.
    pub async fn expire(&self, key: impl ToArg, seconds: i64) -> Result<bool> {
        self.call(3, |e| {
            e.arg("EXPIRE").arg(key).arg(seconds);
        })
        .await
    }

    /// `PEXPIRE key milliseconds`.
    pub async fn pexpire(&self, key: impl ToArg, ms: i64) -> Result<bool> {
        self.call(3, |e| {
            e.arg("PEXPIRE").arg(key).arg(ms);
        })
        .await
    }

    /// `TTL key`: seconds left, -1 without expiry, -2 when missing.
    pub async fn ttl(&self, key: impl ToArg) -> Result<i64> {
        self.call(2, |e| {
            e.arg("TTL").arg(key);
        })
        .await
    }

    /// `PTTL key`: milliseconds left, -1 without expiry, -2 when missing.
    pub async fn pttl(&self, key: impl ToArg) -> Result<i64> {
        self.call(2, |e| {
            e.arg("PTTL").arg(key);
        })
        .await
    }

    /// One `SCAN cursor [MATCH p] [COUNT n] [TYPE t]` step: the next
    /// cursor (0 when done) and a batch of keys.
    pub async fn scan<T: FromValue>(
        &self,
        cursor: u64,
        opts: &ScanOptions,
    ) -> Result<(u64, Vec<T>)> {
        let argc = 2 + 2
            * (opts.pattern.is_some() as usize
                + opts.count.is_some() as usize
                + opts.kind.is_some() as usize);
        self.call(argc, |e| {
            e.arg("SCAN").arg(cursor);
            if let Some(p) = &opts.pattern {
                e.arg("MATCH").arg(p);
            }
            if let Some(c) = opts.count {
                e.arg("COUNT").arg(c);
            }
            if let Some(t) = &opts.kind {
                e.arg("TYPE").arg(t);
            }
        })
        .await
    }

    /// Every key `SCAN` finds, following the cursor to the end. Keys may
    /// repeat (a `SCAN` guarantee only covers keys present throughout).
    pub async fn scan_all<T: FromValue>(&self, opts: &ScanOptions) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut cursor = 0;
        loop {
            let (next, batch) = self.scan::<T>(cursor, opts).await?;
            out.extend(batch);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    // ---- hashes ----

    /// `HSET key field value`; returns fields added.
    pub async fn hset(&self, key: impl ToArg, field: impl ToArg, value: impl ToArg) -> Result<i64> {
        self.call(4, |e| {
            e.arg("HSET").arg(key).arg(field).arg(value);
        })
        .await
    }

    /// `HSET key field value ...`; returns fields added.
    pub async fn hset_multiple(
        &self,
        key: impl ToArg,
        pairs: &[(impl ToArg, impl ToArg)],
    ) -> Result<i64> {
        self.call(2 + 2 * pairs.len(), |e| {
            e.arg("HSET").arg(key);
            pairs.iter().for_each(|(f, v)| {
                e.arg(f).arg(v);
            });
        })
        .await
    }

    /// `HGET key field`.
    pub async fn hget<T: FromValue>(&self, key: impl ToArg, field: impl ToArg) -> Result<T> {
        self.call(3, |e| {
            e.arg("HGET").arg(key).arg(field);
        })
        .await
    }

    /// `HGETALL key` as pairs, in server order (RESP2 and RESP3 alike).
    pub async fn hgetall<K: FromValue, V: FromValue>(
        &self,
        key: impl ToArg,
    ) -> Result<Vec<(K, V)>> {
        let v: Value = self
            .call(2, |e| {
                e.arg("HGETALL").arg(key);
            })
            .await?;
        pairs_from_value(v)
    }

    /// `HDEL key field...`; returns fields removed.
    pub async fn hdel(&self, key: impl ToArg, fields: &[impl ToArg]) -> Result<i64> {
        self.call(2 + fields.len(), |e| {
            e.arg("HDEL").arg(key);
            fields.iter().for_each(|f| {
                e.arg(f);
            });
        })
        .await
    }

    /// `HINCRBY key field n`.
    pub async fn hincr_by(&self, key: impl ToArg, field: impl ToArg, n: i64) -> Result<i64> {
        self.call(4, |e| {
            e.arg("HINCRBY").arg(key).arg(field).arg(n);
        })
        .await
    }

    // ---- lists ----

    /// `LPUSH key value...`; returns the new length.
    pub async fn lpush(&self, key: impl ToArg, values: &[impl ToArg]) -> Result<i64> {
        self.push_cmd("LPUSH", key, values).await
    }

    /// `RPUSH key value...`; returns the new length.
    pub async fn rpush(&self, key: impl ToArg, values: &[impl ToArg]) -> Result<i64> {
        self.push_cmd("RPUSH", key, values).await
    }

    async fn push_cmd(&self, name: &str, key: impl ToArg, values: &[impl ToArg]) -> Result<i64> {
        self.call(2 + values.len(), |e| {
            e.arg(name).arg(key);
            values.iter().for_each(|v| {
                e.arg(v);
            });
        })
        .await
    }

    /// `LPOP key`.
    pub async fn lpop<T: FromValue>(&self, key: impl ToArg) -> Result<T> {
        self.call(2, |e| {
            e.arg("LPOP").arg(key);
        })
        .await
    }

    /// `RPOP key`.
    pub async fn rpop<T: FromValue>(&self, key: impl ToArg) -> Result<T> {
        self.call(2, |e| {
            e.arg("RPOP").arg(key);
        })
        .await
    }

    /// `LRANGE key start stop` (inclusive; negative counts from the end).
    pub async fn lrange<T: FromValue>(
        &self,
        key: impl ToArg,
        start: i64,
        stop: i64,
    ) -> Result<Vec<T>> {
        self.call(4, |e| {
            e.arg("LRANGE").arg(key).arg(start).arg(stop);
        })
        .await
    }

    /// `LLEN key`.
    pub async fn llen(&self, key: impl ToArg) -> Result<i64> {
        self.call(2, |e| {
            e.arg("LLEN").arg(key);
        })
        .await
    }

    // ---- sets ----

    /// `SADD key member...`; returns members added.
    pub async fn sadd(&self, key: impl ToArg, members: &[impl ToArg]) -> Result<i64> {
        self.push_cmd("SADD", key, members).await
    }

    /// `SREM key member...`; returns members removed.
    pub async fn srem(&self, key: impl ToArg, members: &[impl ToArg]) -> Result<i64> {
        self.push_cmd("SREM", key, members).await
    }

    /// `SMEMBERS key`.
    pub async fn smembers<T: FromValue>(&self, key: impl ToArg) -> Result<Vec<T>> {
        self.call(2, |e| {
            e.arg("SMEMBERS").arg(key);
        })
        .await
    }

    /// `SISMEMBER key member`.
    pub async fn sismember(&self, key: impl ToArg, member: impl ToArg) -> Result<bool> {
        self.call(3, |e| {
            e.arg("SISMEMBER").arg(key).arg(member);
        })
        .await
    }

    /// `SCARD key`.
    pub async fn scard(&self, key: impl ToArg) -> Result<i64> {
        self.call(2, |e| {
            e.arg("SCARD").arg(key);
        })
        .await
    }

    // ---- sorted sets ----

    /// `ZADD key score member ...`; returns members added.
    pub async fn zadd(&self, key: impl ToArg, members: &[(f64, impl ToArg)]) -> Result<i64> {
        self.call(2 + 2 * members.len(), |e| {
            e.arg("ZADD").arg(key);
            members.iter().for_each(|(s, m)| {
                e.arg(*s).arg(m);
            });
        })
        .await
    }

    /// `ZRANGE key start stop` (by rank).
    pub async fn zrange<T: FromValue>(
        &self,
        key: impl ToArg,
        start: i64,
        stop: i64,
    ) -> Result<Vec<T>> {
        self.call(4, |e| {
            e.arg("ZRANGE").arg(key).arg(start).arg(stop);
        })
        .await
    }

    /// `ZRANGE key start stop WITHSCORES` as (member, score) pairs.
    pub async fn zrange_withscores<T: FromValue>(
        &self,
        key: impl ToArg,
        start: i64,
        stop: i64,
    ) -> Result<Vec<(T, f64)>> {
        let v: Value = self
            .call(5, |e| {
                e.arg("ZRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(stop)
                    .arg("WITHSCORES");
            })
            .await?;
        pairs_from_value(v)
    }

    /// `ZSCORE key member`.
    pub async fn zscore(&self, key: impl ToArg, member: impl ToArg) -> Result<Option<f64>> {
        self.call(3, |e| {
            e.arg("ZSCORE").arg(key).arg(member);
        })
        .await
    }

    /// `ZREM key member...`; returns members removed.
    pub async fn zrem(&self, key: impl ToArg, members: &[impl ToArg]) -> Result<i64> {
        self.push_cmd("ZREM", key, members).await
    }

    /// `ZINCRBY key increment member`; returns the new score.
    pub async fn zincr_by(
        &self,
        key: impl ToArg,
        increment: f64,
        member: impl ToArg,
    ) -> Result<f64> {
        self.call(4, |e| {
            e.arg("ZINCRBY").arg(key).arg(increment).arg(member);
        })
        .await
    }

    /// `ZCARD key`.
    pub async fn zcard(&self, key: impl ToArg) -> Result<i64> {
        self.call(2, |e| {
            e.arg("ZCARD").arg(key);
        })
        .await
    }

    // ---- scripting ----

    /// `EVAL script numkeys key... arg...`.
    pub async fn eval<T: FromValue>(
        &self,
        script: &str,
        keys: &[&dyn ToArg],
        args: &[&dyn ToArg],
    ) -> Result<T> {
        self.eval_cmd("EVAL", script, keys, args).await
    }

    /// `EVALSHA sha1 numkeys key... arg...`.
    pub async fn evalsha<T: FromValue>(
        &self,
        sha1: &str,
        keys: &[&dyn ToArg],
        args: &[&dyn ToArg],
    ) -> Result<T> {
        self.eval_cmd("EVALSHA", sha1, keys, args).await
    }

    async fn eval_cmd<T: FromValue>(
        &self,
        name: &str,
        body: &str,
        keys: &[&dyn ToArg],
        args: &[&dyn ToArg],
    ) -> Result<T> {
        self.call(3 + keys.len() + args.len(), |e| {
            e.arg(name).arg(body).arg(keys.len());
            keys.iter().chain(args).for_each(|a| {
                e.arg(a);
            });
        })
        .await
    }

    /// `SCRIPT LOAD script`; returns the SHA1.
    pub async fn script_load(&self, script: &str) -> Result<String> {
        self.call(3, |e| {
            e.arg("SCRIPT").arg("LOAD").arg(script);
        })
        .await
    }

    /// Runs a [`Script`]: `EVALSHA`, and on `NOSCRIPT` one `EVAL`, which
    /// also caches the script for the next call.
    pub async fn run_script<T: FromValue>(
        &self,
        script: &Script,
        keys: &[&dyn ToArg],
        args: &[&dyn ToArg],
    ) -> Result<T> {
        match self.evalsha::<Value>(script.hash(), keys, args).await {
            Err(Error::Server(e)) if *e.kind() == ServerErrorKind::NoScript => {
                self.eval(script.code(), keys, args).await
            }
            r => T::from_value(r?),
        }
    }

    // ---- transactions ----

    /// `WATCH key...` for a following [`transaction`](Connection::transaction).
    ///
    /// WATCH state belongs to the server connection, which every clone of
    /// this handle shares: another task's `EXEC` would clear the watch and
    /// its `WATCH` would add keys. So this fails with [`Error::Usage`]
    /// unless this handle is [exclusive](Connection::is_exclusive) (open a
    /// dedicated connection for optimistic transactions), and nothing must
    /// clone it until `EXEC` or [`unwatch`](Connection::unwatch).
    pub async fn watch(&self, keys: &[impl ToArg]) -> Result<()> {
        if !self.is_exclusive() {
            return Err(Error::Usage(
                "WATCH needs a connection no other task shares (open a dedicated one)".into(),
            ));
        }
        self.call(1 + keys.len(), |e| {
            e.arg("WATCH");
            keys.iter().for_each(|k| {
                e.arg(k);
            });
        })
        .await
    }

    /// `UNWATCH`.
    pub async fn unwatch(&self) -> Result<()> {
        self.call(1, |e| {
            e.arg("UNWATCH");
        })
        .await
    }
}
