//! Command-line flags of the example server.

use std::net::SocketAddr;

pub struct Args {
    pub listen: SocketAddr,
    pub workers: usize,
    pub pg: Option<String>,
    pub pg_max_open: usize,
    pub pg_min_idle: usize,
    pub warmup_slots: u32,
    pub warmup_delay_ms: u64,
    pub warmup_jitter_ms: u64,
    pub warmup_pause_ms: u64,
    pub pg_autoscale: Option<(usize, usize)>,
    pub pg_shared_max_open: usize,
    pub pg_shared_autoscale: Option<(usize, usize)>,
    pub redis: Option<String>,
    pub redis_ca: Option<String>,
    /// HTTPS: certificate chain and key files, one pair per name served.
    pub tls: Vec<(String, Option<String>)>,
    pub redis_max_open: usize,
    pub redis_autoscale: Option<(usize, usize)>,
    pub fault_injection: bool,
    /// `--fleet NAME --pg-fleet-budget N`: share N PostgreSQL connections
    /// with every instance naming the fleet.
    pub fleet: Option<String>,
    pub pg_fleet_budget: Option<usize>,
    pub fleet_lease_ttl_ms: Option<u64>,
    pub fleet_safe_capacity: Option<usize>,
    pub coalesce_us: Option<u64>,
    pub pin: bool,
    pub io: tidepool::engine::rt::IoChoice,
    /// `--config FILE`: HTTP and pool settings (TOML; see `tidepool::config`).
    pub config: Option<std::path::PathBuf>,
    /// The flags given on the command line (they win over the file and the
    /// environment).
    pub given: Vec<String>,
}

pub const USAGE: &str = "usage: hello [--listen ADDR:PORT] [--workers N] [--no-pin] [--config FILE]
             [--tls-cert FILE --tls-key FILE]...
             [--pg URL] [--pg-max-open N] [--pg-autoscale MIN:MAX]
             [--pg-min-idle N] [--warmup-slots N] [--warmup-delay MS] [--warmup-jitter MS]
             [--warmup-pause MS]
             [--pg-shared-max-open N] [--pg-shared-autoscale MIN:MAX]
             [--redis URL] [--redis-ca FILE] [--redis-max-open N] [--redis-autoscale MIN:MAX]
             [--fleet NAME --pg-fleet-budget N [--fleet-lease-ttl MS] [--fleet-safe-capacity N]]
             [--coalesce-us N] [--io auto|io_uring|epoll] [--fault-injection]

  --listen ADDR:PORT        address to serve on (default 127.0.0.1:8080)
  --workers N               worker threads (default: one per CPU the process may
                            run on, within its cgroup's CPU quota)
  --no-pin                  do not pin workers to CPUs
  --config FILE             HTTP and pool settings from a TOML file: [http] holds
                            HttpConfig fields, [pools.NAME] PoolConfig fields and
                            [pools.NAME.autoscale] PoolAutoscale fields, NAME being pg,
                            pg-shared or redis; TIDEPOOL_POOLS__PG__MAX_OPEN=3 and the
                            like set the same keys from the environment; the flags
                            below win over both
  --tls-cert FILE           serve HTTPS on --listen with this certificate chain (PEM);
  --tls-key FILE            ... and its private key (PEM); repeat the pair for more
                            names: the certificate valid for the client's SNI is used
  --pg URL                  PostgreSQL, e.g. postgres://user:pass@127.0.0.1:5432/db;
                            enables /db, /queries, /db/sleep, /report/{day}
  --pg-max-open N           exclusive PostgreSQL connections over all workers, used by
                            /db/sleep and /report (default 8)
  --pg-autoscale MIN:MAX    let the supervisor size the PostgreSQL pool within MIN..MAX
  --pg-min-idle N           exclusive PostgreSQL connections to keep open (and open at
                            start, by the warm-up schedule below; default 0)
  --warmup-slots N          at most N processes of a cluster warm up at once: each holds
                            one of N PostgreSQL advisory locks while it opens its
                            connections (0: no limit, the default)
  --warmup-delay MS         wait this long before warming up (default 0) ...
  --warmup-jitter MS        ... plus a random delay up to this (default 1000)
  --warmup-pause MS         between warm-up's batches of 2 connections (default 100)
  --pg-shared-max-open N    shared (pipelined) PostgreSQL connections over all workers,
                            used by /db and /queries (default 4)
  --pg-shared-autoscale MIN:MAX
                            let the supervisor size the shared pool within MIN..MAX
  --redis URL               Redis, e.g. redis://127.0.0.1:6379/0 (rediss:// for TLS);
                            enables /redis, /cache/{key}
  --redis-ca FILE           trust the CA certificates in FILE (PEM) for rediss://
                            (default: the system's roots)
  --redis-max-open N        Redis connections over all workers (default 2)
  --redis-autoscale MIN:MAX let the supervisor size the Redis pool within MIN..MAX
  --fleet NAME              share a budget of PostgreSQL connections with every instance
                            naming this fleet (leases kept in the database: docs/fleet.md)
  --pg-fleet-budget N       ... N connections for the whole fleet (both PostgreSQL pools)
  --fleet-lease-ttl MS      a lease lasts this long unrenewed (default 10000)
  --fleet-safe-capacity N   what an instance keeps once it cannot renew (default 1)
  --coalesce-us N           most microseconds a saturated worker holds a wait to gather
                            completions; 0 turns it off (default 50)
  --io auto|io_uring|epoll  I/O backend (default auto: TIDEPOOL_IO if set, else io_uring
                            where the kernel allows it, epoll where it does not)
  --fault-injection         enable POST /debug/supervisor-panic (tests and drills)";

impl Args {
    /// Whether `flag` was given on the command line.
    pub fn given(&self, flag: &str) -> bool {
        self.given.iter().any(|f| f == flag)
    }
}

fn rails(flag: &str, v: &str) -> Result<(usize, usize), String> {
    let (a, b) = v
        .split_once(':')
        .ok_or_else(|| format!("{flag} takes MIN:MAX, got {v:?}"))?;
    let min: usize = a.parse().map_err(|_| format!("{flag}: bad MIN {a:?}"))?;
    let max: usize = b.parse().map_err(|_| format!("{flag}: bad MAX {b:?}"))?;
    if min == 0 || min > max {
        return Err(format!("{flag}: need 1 <= MIN <= MAX, got {min}:{max}"));
    }
    Ok((min, max))
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:8080".parse().unwrap(),
        workers: 0,
        pg: None,
        pg_max_open: 8,
        pg_min_idle: 0,
        warmup_slots: 0,
        warmup_delay_ms: 0,
        warmup_jitter_ms: 1000,
        warmup_pause_ms: 100,
        pg_autoscale: None,
        pg_shared_max_open: 4,
        pg_shared_autoscale: None,
        redis: None,
        redis_ca: None,
        tls: Vec::new(),
        redis_max_open: 2,
        redis_autoscale: None,
        fault_injection: false,
        fleet: None,
        pg_fleet_budget: None,
        fleet_lease_ttl_ms: None,
        fleet_safe_capacity: None,
        coalesce_us: None,
        pin: true,
        io: Default::default(),
        config: None,
        given: Vec::new(),
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_string());
        }
        if flag == "--fault-injection" {
            a.fault_injection = true;
            continue;
        }
        if flag == "--no-pin" {
            a.pin = false;
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        a.given.push(flag.clone());
        let num = |v: &str| -> Result<usize, String> {
            v.parse()
                .map_err(|_| format!("{flag}: not a number: {v:?}"))
        };
        match flag.as_str() {
            "--listen" => a.listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?,
            "--workers" => a.workers = num(&v)?,
            "--pg" => a.pg = Some(v),
            "--pg-max-open" => a.pg_max_open = num(&v)?.max(1),
            "--pg-min-idle" => a.pg_min_idle = num(&v)?,
            "--warmup-slots" => a.warmup_slots = num(&v)? as u32,
            "--warmup-delay" => a.warmup_delay_ms = num(&v)? as u64,
            "--warmup-jitter" => a.warmup_jitter_ms = num(&v)? as u64,
            "--warmup-pause" => a.warmup_pause_ms = num(&v)? as u64,
            "--pg-autoscale" => a.pg_autoscale = Some(rails(&flag, &v)?),
            "--pg-shared-max-open" => a.pg_shared_max_open = num(&v)?.max(1),
            "--pg-shared-autoscale" => a.pg_shared_autoscale = Some(rails(&flag, &v)?),
            "--redis" => a.redis = Some(v),
            "--redis-ca" => a.redis_ca = Some(v),
            "--tls-cert" => a.tls.push((v, None)),
            "--tls-key" => match a.tls.last_mut() {
                Some((_, key @ None)) => *key = Some(v),
                _ => return Err("--tls-key must follow its --tls-cert".into()),
            },
            "--redis-max-open" => a.redis_max_open = num(&v)?.max(1),
            "--redis-autoscale" => a.redis_autoscale = Some(rails(&flag, &v)?),
            "--coalesce-us" => a.coalesce_us = Some(num(&v)? as u64),
            "--fleet" => a.fleet = Some(v),
            "--pg-fleet-budget" => a.pg_fleet_budget = Some(num(&v)?),
            "--fleet-lease-ttl" => a.fleet_lease_ttl_ms = Some(num(&v)?.max(100) as u64),
            "--fleet-safe-capacity" => a.fleet_safe_capacity = Some(num(&v)?),
            "--io" => a.io = v.parse().map_err(|e| format!("--io: {e}"))?,
            "--config" => a.config = Some(v.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if a.tls.iter().any(|(_, key)| key.is_none()) {
        return Err("--tls-cert needs its --tls-key".into());
    }
    Ok(a)
}
