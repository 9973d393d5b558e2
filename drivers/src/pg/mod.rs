//! PostgreSQL client.
