//! Several statements in one write, replies matched in order.

use super::{clone_err, Client, QueryResult};
use crate::pg::error::{Error, Result};
use crate::pg::proto::{ReqId, Response};
use crate::pg::stmt_cache::Statement;
use crate::pg::types::ToSql;

impl Client {
    /// Collects statements to send in one write and read back in order.
    pub fn pipeline<'p>(&mut self) -> Pipeline<'_, 'p> {
        Pipeline {
            client: self,
            items: Vec::new(),
        }
    }
}

/// Statements sent together: one write for all of them, replies matched in
/// order. Statements not cached yet are prepared first, also in one batch,
/// so a pipeline costs one round trip when its statements are cached and two
/// otherwise. Each statement is its own implicit transaction (it has its own
/// Sync), so one failing does not stop the others.
pub struct Pipeline<'c, 'p> {
    client: &'c mut Client,
    items: Vec<(&'p str, Vec<&'p dyn ToSql>)>,
}

impl<'p> Pipeline<'_, 'p> {
    /// Adds a statement; returns its index in the results.
    pub fn query(&mut self, sql: &'p str, params: &[&'p dyn ToSql]) -> usize {
        self.items.push((sql, params.to_vec()));
        self.items.len() - 1
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sends everything and collects one result per statement. The outer
    /// error is for the connection (broken, timed out); SQL and parameter
    /// errors are per statement.
    pub async fn run(self) -> Result<Vec<Result<QueryResult>>> {
        let Pipeline { client, items } = self;
        client.begin()?;
        let deadline = client.deadline();

        // Round trip 1 (only if needed): prepare every statement not cached.
        let mut stmts: Vec<(&str, Result<Statement>)> = Vec::new();
        let mut preparing: Vec<(usize, String, ReqId)> = Vec::new();
        for (sql, _) in &items {
            if stmts.iter().any(|(s, _)| s == sql) {
                continue;
            }
            match client.cache.get(sql) {
                Some(st) => stmts.push((sql, Ok(st))),
                None => {
                    let name = client.cache.next_name();
                    let id = client.proto.prepare(&name, sql, &[])?;
                    preparing.push((stmts.len(), name, id));
                    stmts.push((sql, Err(Error::Closed)));
                }
            }
        }
        client.queue_closes();
        for (i, name, id) in preparing {
            stmts[i].1 = match client.wait(id, deadline).await {
                Ok(Response::Prepared { params, columns }) => Ok(client.cache_insert(
                    Statement::new(name, stmts[i].0.to_string(), params, columns),
                )),
                Ok(_) => return Err(Error::protocol("unexpected reply to Parse")),
                Err(e) if e.is_broken() || matches!(e, Error::Timeout) => return Err(e),
                Err(e) => Err(e),
            };
        }

        // Round trip 2: every Bind/Execute/Sync in one write.
        let mut slots: Vec<std::result::Result<ReqId, Error>> = Vec::with_capacity(items.len());
        for (sql, params) in &items {
            let st = &stmts.iter().find(|(s, _)| s == sql).expect("collected").1;
            slots.push(match st {
                Ok(st) => client.proto.execute(st, params),
                Err(e) => Err(clone_err(e)),
            });
        }
        client.queue_closes();
        let mut out = Vec::with_capacity(items.len());
        for slot in slots {
            out.push(match slot {
                Ok(id) => match client.wait(id, deadline).await {
                    Ok(Response::Rows { rows, tag }) => Ok(QueryResult { rows, tag }),
                    Ok(_) => return Err(Error::protocol("unexpected reply to Execute")),
                    Err(e) if e.is_broken() || matches!(e, Error::Timeout) => return Err(e),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            });
        }

        // Statements invalidated server-side (schema change, DISCARD) are
        // re-prepared and retried one by one: rare, and never inside a
        // transaction block.
        for (i, (sql, params)) in items.iter().enumerate() {
            let retry = match &out[i] {
                Err(e) => client.stale(e, sql),
                Ok(_) => false,
            };
            if retry {
                out[i] = client.run(sql, params).await;
            }
        }
        Ok(out)
    }
}
