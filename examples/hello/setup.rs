//! One-time preparation of the databases before the workers start.

use tidepool::drivers::pg::Client;
use tidepool::drivers::redis::{self, Connection, SetOptions};
use tidepool::engine::rt;

/// Creates `world(id, randomnumber)` with 10,000 rows when it is absent.
pub fn prepare_pg(url: &str) -> Result<(), String> {
    rt::block_on(async {
        let mut c = Client::connect_url(url).await.map_err(|e| e.to_string())?;
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS world (id int PRIMARY KEY, randomnumber int NOT NULL)",
        )
        .await
        .map_err(|e| e.to_string())?;
        c.batch_execute(
            "INSERT INTO world SELECT g, 1 + floor(random() * 10000)::int \
             FROM generate_series(1, 10000) g ON CONFLICT (id) DO NOTHING",
        )
        .await
        .map_err(|e| e.to_string())?;
        let _ = c.close().await;
        Ok(())
    })
}

/// Sets `greeting` when it is absent.
pub fn prepare_redis(cfg: &redis::Config) -> Result<(), String> {
    rt::block_on(async {
        let c = Connection::connect(cfg).await.map_err(|e| e.to_string())?;
        let _: bool = c
            .set_with("greeting", "Hello, World!", SetOptions::new().nx())
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}
