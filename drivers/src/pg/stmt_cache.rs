//! Prepared statements and the per-connection LRU cache of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::row::Column;
use super::types::Type;

/// A statement prepared on one connection: its server-side name, parameter
/// types and result columns. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Statement(Arc<StatementInner>);

#[derive(Debug)]
struct StatementInner {
    name: String,
    sql: String,
    params: Vec<Type>,
    columns: Arc<[Column]>,
}

impl Statement {
    /// Describes a statement already prepared as `name` on the server; normally
    /// made by [`Client::prepare`](crate::pg::Client::prepare). Public for
    /// sans-IO use of [`Protocol`](crate::pg::proto::Protocol) and benchmarks.
    #[doc(hidden)]
    pub fn new(name: String, sql: String, params: Vec<Type>, columns: Vec<Column>) -> Self {
        Statement(Arc::new(StatementInner {
            name,
            sql,
            params,
            columns: columns.into(),
        }))
    }
    /// Server-side name (`tp_s<N>`).
    pub fn name(&self) -> &str {
        &self.0.name
    }
    pub fn sql(&self) -> &str {
        &self.0.sql
    }
    /// Parameter types as inferred by the server.
    pub fn params(&self) -> &[Type] {
        &self.0.params
    }
    /// Result columns (empty for statements that return no rows).
    pub fn columns(&self) -> &[Column] {
        &self.0.columns
    }
    pub(crate) fn columns_arc(&self) -> &Arc<[Column]> {
        &self.0.columns
    }
}

/// Bounded LRU keyed by SQL text. Evicted statements are returned to the
/// caller, which must send Close for them: the cache itself does no I/O.
#[derive(Debug)]
pub struct StmtCache {
    capacity: usize,
    map: HashMap<String, (Statement, u64)>,
    // Recency order: last-use tick -> statement (an Arc: reordering
    // allocates no key).
    order: BTreeMap<u64, Statement>,
    tick: u64,
    next_id: u64,
}

impl StmtCache {
    pub fn new(capacity: usize) -> StmtCache {
        StmtCache {
            capacity,
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            next_id: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A fresh, connection-unique statement name.
    pub fn next_name(&mut self) -> String {
        self.next_id += 1;
        format!("tp_s{}", self.next_id)
    }

    /// Looks a statement up and marks it most recently used.
    pub fn get(&mut self, sql: &str) -> Option<Statement> {
        let (stmt, t) = self.map.get_mut(sql)?;
        if *t != self.tick {
            // Not already the most recent (the common case of one hot
            // statement costs no reordering at all).
            self.order.remove(t);
            self.tick += 1;
            *t = self.tick;
            self.order.insert(self.tick, stmt.clone());
        }
        Some(stmt.clone())
    }

    /// Looks a statement up without touching its recency.
    pub fn peek(&self, sql: &str) -> Option<&Statement> {
        self.map.get(sql).map(|(s, _)| s)
    }

    /// Caches `stmt`, returning the statements that no longer fit (with capacity 0,
    /// `stmt` itself) and any entry it replaces.
    pub fn insert(&mut self, stmt: Statement) -> Vec<Statement> {
        let mut evicted = Vec::new();
        if self.capacity == 0 {
            evicted.push(stmt);
            return evicted;
        }
        if let Some(old) = self.remove(stmt.sql()) {
            evicted.push(old);
        }
        while self.map.len() >= self.capacity {
            let Some((_, st)) = self.order.pop_first() else {
                break;
            };
            if let Some((s, _)) = self.map.remove(st.sql()) {
                evicted.push(s);
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, stmt.clone());
        self.map.insert(stmt.sql().to_string(), (stmt, self.tick));
        evicted
    }

    /// Evicts least recently used entries until one more fits, so their Close
    /// can travel with the Parse of the statement about to be prepared.
    pub fn make_room(&mut self) -> Vec<Statement> {
        let mut evicted = Vec::new();
        while self.capacity > 0 && self.map.len() >= self.capacity {
            let Some((_, st)) = self.order.pop_first() else {
                break;
            };
            if let Some((s, _)) = self.map.remove(st.sql()) {
                evicted.push(s);
            }
        }
        evicted
    }

    /// Forgets a statement (after the server reported it invalid).
    pub fn remove(&mut self, sql: &str) -> Option<Statement> {
        let (s, t) = self.map.remove(sql)?;
        self.order.remove(&t);
        Some(s)
    }

    /// Forgets everything, e.g. after `DISCARD ALL`; returns what was cached.
    pub fn clear(&mut self) -> Vec<Statement> {
        self.order.clear();
        self.map.drain().map(|(_, (s, _))| s).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(c: &mut StmtCache, sql: &str) -> Statement {
        Statement::new(c.next_name(), sql.into(), vec![], vec![])
    }

    #[test]
    fn lru_eviction_order() {
        let mut c = StmtCache::new(2);
        let a = st(&mut c, "a");
        let b = st(&mut c, "b");
        assert!(c.insert(a).is_empty());
        assert!(c.insert(b).is_empty());
        assert!(c.get("a").is_some()); // b is now least recently used
        let x = st(&mut c, "c");
        let ev = c.insert(x);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].sql(), "b");
        assert!(c.get("b").is_none());
        assert!(c.get("a").is_some() && c.get("c").is_some());
        assert_eq!(c.len(), 2);
        let ev = c.make_room();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].sql(), "a");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn replace_and_remove() {
        let mut c = StmtCache::new(4);
        let a1 = st(&mut c, "a");
        let a2 = st(&mut c, "a");
        c.insert(a1.clone());
        let ev = c.insert(a2.clone());
        assert_eq!(ev[0].name(), a1.name());
        assert_eq!(c.get("a").unwrap().name(), a2.name());
        assert!(c.remove("a").is_some());
        assert!(c.is_empty());
        assert_ne!(a1.name(), a2.name());
    }

    #[test]
    fn zero_capacity_evicts_immediately() {
        let mut c = StmtCache::new(0);
        let a = st(&mut c, "a");
        let ev = c.insert(a);
        assert_eq!(ev.len(), 1);
        assert!(c.get("a").is_none());
    }
}
