//! The example server against a PostgreSQL and a Redis that speak TLS,
//! certificates checked: what a managed database asks of a client.

mod support;

use support::App;
use tidepool_testkit::{PgServer, PgUser, RedisOptions, RedisServer};

#[test]
fn the_example_reaches_tls_databases_with_verified_certificates() {
    let pg = PgServer::start_tls().expect("postgres with ssl");
    let redis = RedisServer::start_with(RedisOptions {
        tls: true,
        ..RedisOptions::default()
    })
    .expect("redis with tls");
    let pg_url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(PgUser::Scram),
        pg.ca_file().unwrap().display()
    );
    let app = App::start(&[
        "--workers",
        "2",
        "--pg",
        &pg_url,
        "--redis",
        &redis.tls_url().unwrap(),
        "--redis-ca",
        &redis.ca_file().unwrap().to_string_lossy(),
    ]);
    for path in ["/db", "/queries?n=5", "/db/sleep?ms=1"] {
        let (status, body) = app.get(path);
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert_eq!(app.get("/redis"), (200, "Hello, World!".into()));
    // Every session the example opened is encrypted.
    let cleartext = pg.psql(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'tidepool-hello' AND NOT s.ssl",
    );
    assert_eq!(cleartext.trim(), "0");
    let encrypted = pg.psql(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'tidepool-hello' AND s.ssl",
    );
    assert!(encrypted.trim().parse::<u32>().unwrap() >= 1, "{encrypted}");
    assert!(app.stop().success());
}
