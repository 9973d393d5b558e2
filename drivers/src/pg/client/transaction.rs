//! Transaction blocks and savepoints, rolled back when dropped uncommitted.

use std::ops::{Deref, DerefMut};

use super::Client;
use crate::pg::error::{Error, Result};

impl Client {
    /// Starts a transaction block; see [`Transaction`].
    pub async fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.transaction_with("BEGIN").await
    }

    /// Starts a transaction with a custom statement, e.g.
    /// `BEGIN ISOLATION LEVEL SERIALIZABLE`.
    pub async fn transaction_with(&mut self, begin: &str) -> Result<Transaction<'_>> {
        self.batch_execute(begin).await?;
        Ok(Transaction {
            client: self,
            savepoint: None,
            done: false,
        })
    }
}

/// A transaction block (or a savepoint inside one). Derefs to the [`Client`]
/// for queries. Dropped without [`Transaction::commit`] it is rolled back:
/// the ROLLBACK is sent in front of the client's next request (Drop cannot
/// await), and [`Client::in_transaction`] reports it meanwhile.
pub struct Transaction<'a> {
    client: &'a mut Client,
    savepoint: Option<String>,
    done: bool,
}

impl Transaction<'_> {
    /// Commits (or releases the savepoint). A transaction that had failed is
    /// rolled back by the server's COMMIT; that is reported as an error.
    pub async fn commit(mut self) -> Result<()> {
        self.done = true;
        match &self.savepoint {
            Some(sp) => {
                let sql = format!("RELEASE SAVEPOINT {sp}");
                self.client.batch_execute(&sql).await
            }
            None => {
                let r = self.client.simple_query("COMMIT").await?;
                if r.first().is_some_and(|r| r.tag == "ROLLBACK") {
                    return Err(Error::Usage(
                        "COMMIT rolled back the transaction: a statement in it had failed".into(),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Rolls back (to the savepoint, for a nested transaction).
    pub async fn rollback(mut self) -> Result<()> {
        self.done = true;
        let sql = self.rollback_sql();
        self.client.batch_execute(&sql).await
    }

    fn rollback_sql(&self) -> String {
        match &self.savepoint {
            Some(sp) => format!("ROLLBACK TO SAVEPOINT {sp}; RELEASE SAVEPOINT {sp}"),
            None => "ROLLBACK".to_string(),
        }
    }

    /// A nested transaction as a savepoint named `name`.
    pub async fn savepoint(&mut self, name: &str) -> Result<Transaction<'_>> {
        let ident = postgres_protocol::escape::escape_identifier(name);
        self.client
            .batch_execute(&format!("SAVEPOINT {ident}"))
            .await?;
        Ok(Transaction {
            client: self.client,
            savepoint: Some(ident),
            done: false,
        })
    }
}

impl Deref for Transaction<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client
    }
}

impl DerefMut for Transaction<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let sql = self.rollback_sql();
            self.client.cleanup.push(sql);
        }
    }
}
