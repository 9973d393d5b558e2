//! What TLS costs: Tidepool's example serving `/plaintext` over HTTPS
//! against the same over HTTP, and `/db` with its PostgreSQL connections
//! encrypted (`sslmode=require`) against cleartext (`sslmode=disable`), on
//! one ephemeral PostgreSQL with `ssl = on`. Rounds alternate; the ratios
//! are per round. The server is pinned to one CPU, wrk (keep-alive: the
//! handshake is paid once per connection) and PostgreSQL to the other.
//! Run through `benches/compare-tls.sh`.
//!
//! usage: compare_tls [--duration SECS] [--repeat N] [--server-cpu N] [--client-cpu N]

use tidepool_benches::{measure, median, pin_pid, start_pinned, Measured, Opts};
use tidepool_testkit::tls::TestCa;
use tidepool_testkit::{PgServer, PgUser};

/// (label, [(scheme, extra args) encrypted, the same cleartext], path)
type Scenario<'a> = (&'a str, [(&'a str, Vec<String>); 2], &'a str);

fn main() {
    let o = Opts::from_args();
    let pg = PgServer::start_tls_optional().expect("PostgreSQL with ssl");
    if let Some(pid) = pg.pid() {
        pin_pid(pid, o.client_cpu);
    }
    let dir = std::env::temp_dir().join(format!("tidepool-compare-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = TestCa::new().unwrap().issue(&["127.0.0.1"]).unwrap();
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&crt, cert.cert_pem).unwrap();
    std::fs::write(&key, cert.key_pem).unwrap();
    let pg_url = |mode: &str| format!("{}?sslmode={mode}", pg.url(PgUser::Md5));
    let hello = |addr: &str, extra: &[String]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--listen",
            addr,
            "--workers",
            "1",
            "--pg-shared-max-open",
            "8",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(o.io_args());
        a.extend_from_slice(extra);
        a
    };
    let tls_args = vec![
        "--tls-cert".to_string(),
        crt.display().to_string(),
        "--tls-key".to_string(),
        key.display().to_string(),
    ];
    let pg_args = |mode: &str| vec!["--pg".to_string(), pg_url(mode)];
    let scenarios: Vec<Scenario> = vec![
        (
            "plaintext, HTTPS vs HTTP",
            [("https", tls_args.clone()), ("http", Vec::new())],
            "/plaintext",
        ),
        (
            "/db, sslmode=require vs disable",
            [("http", pg_args("require")), ("http", pg_args("disable"))],
            "/db",
        ),
    ];
    println!("\n| scenario | encrypted req/s | cleartext req/s | req/s ratio (per round, median) | encrypted CPU us/req | cleartext CPU us/req | CPU ratio (per round, median) |");
    println!("|---|---|---|---|---|---|---|");
    for (label, pair, path) in scenarios {
        let mut runs: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..o.repeat {
            for (i, (scheme, extra)) in pair.iter().enumerate() {
                let addr = format!("127.0.0.1:{}", 18095 + i);
                let server = start_pinned(
                    "target/release/examples/hello",
                    &hello(&addr, extra),
                    o.server_cpu,
                    &addr,
                );
                let url = format!("{scheme}://{addr}{path}");
                runs[i].push(measure(&server, o.client_cpu, &url, 64, false, o.duration));
            }
        }
        let ratios = |f: &dyn Fn(&Measured) -> f64| {
            let mut v: Vec<f64> = runs[0]
                .iter()
                .zip(&runs[1])
                .map(|(a, b)| f(a) / f(b))
                .collect();
            v.sort_by(f64::total_cmp);
            let list: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
            format!("{} ({:.2}x)", list.join(" "), v[v.len() / 2])
        };
        let (e, c) = (median(&runs[0]), median(&runs[1]));
        println!(
            "| {label} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {} |",
            e.rps,
            c.rps,
            ratios(&|m| m.rps),
            e.cpu_us_per_req,
            c.cpu_us_per_req,
            ratios(&|m| m.cpu_us_per_req)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    o.footer();
}
