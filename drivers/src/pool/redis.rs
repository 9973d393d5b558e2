//! The pool's Redis connection kind: multiplexed. A connection is shared by
//! many callers with auto-pipelining; the pool counts connections, and a
//! caller's "acquire" is an in-flight slot on one of them.

use std::any::Any;

use super::{Manager, PoolError};
use crate::redis::{Config, Connection, Error, Exported};

impl PoolError for Error {
    fn is_transient(&self) -> bool {
        Error::is_transient(self)
    }
}

/// Redis connections for a [`Pool`](super::Pool).
pub struct RedisManager {
    config: Config,
}

impl RedisManager {
    /// The connection's own in-flight cap is raised above the pool's, so
    /// callers queue (and are measured) in the pool, not inside a connection.
    pub fn new(config: Config, pool_max_in_flight: usize) -> RedisManager {
        RedisManager {
            config: config.max_in_flight(pool_max_in_flight.saturating_mul(2).max(1)),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl Manager for RedisManager {
    type Conn = Connection;
    type Error = Error;
    const MULTIPLEXED: bool = true;

    async fn connect(&self) -> Result<Connection, Error> {
        Connection::connect(&self.config).await
    }

    fn is_usable(&self, conn: &Connection) -> bool {
        !conn.is_broken()
    }

    async fn check(&self, conn: &mut Connection) -> Result<(), Error> {
        conn.ping().await
    }

    fn poll_idle(&self, conn: &mut Connection) -> bool {
        conn.poll_idle()
    }

    fn share(&self, conn: &Connection) -> Connection {
        conn.clone()
    }

    fn used_elsewhere(&self, conn: &Connection) -> bool {
        conn.used_elsewhere()
    }

    fn export(&self, conn: &Connection) -> Option<Box<dyn Any + Send>> {
        conn.export().map(|e| Box::new(e) as Box<dyn Any + Send>)
    }

    fn import(&self, exported: Box<dyn Any + Send>) -> Option<Connection> {
        exported
            .downcast::<Exported>()
            .ok()
            .map(|e| Connection::import(*e))
    }
}
