//! COPY FROM STDIN and COPY TO STDOUT, streamed.

use std::time::Instant;

use bytes::Bytes;

use super::{Client, Drive, COPY_FLUSH};
use crate::pg::error::{Error, Result};
use crate::pg::proto::{rows_affected, ReqId, Response};

impl Client {
    /// Starts `COPY ... FROM STDIN`.
    pub async fn copy_in(&mut self, sql: &str) -> Result<CopyIn<'_>> {
        self.begin()?;
        let deadline = self.deadline();
        let id = self.proto.copy_in(sql)?;
        self.copy_in_open = true;
        self.queue_closes();
        let mut first_err = None;
        loop {
            if self.proto.copy_in_ready(id) {
                return Ok(CopyIn {
                    client: self,
                    id,
                    failed: false,
                });
            }
            if let Some(r) = self.take_reply(id, &mut first_err) {
                self.copy_in_open = false;
                r?;
                return Err(Error::Usage("not a COPY FROM STDIN statement".into()));
            }
            if self.proto.is_dead() {
                return Err(first_err
                    .or_else(|| self.proto.take_fatal())
                    .unwrap_or(Error::Closed));
            }
            let ready = |c: &mut Client| c.proto.copy_in_ready(id) || c.proto.has_response();
            if let Drive::TimedOut = self.drive(ready, deadline).await {
                self.copy_in_open = false;
                self.proto.copy_fail("timed out");
                return Err(self.timed_out(id).await);
            }
        }
    }

    /// Starts `COPY ... TO STDOUT`; read the data with [`CopyOut::next`].
    pub async fn copy_out(&mut self, sql: &str) -> Result<CopyOut<'_>> {
        self.begin()?;
        let id = self.proto.copy_out(sql)?;
        self.queue_closes();
        self.copy_out_active = true;
        Ok(CopyOut {
            deadline: self.deadline(),
            client: self,
            id,
            done: false,
        })
    }
}

/// Streams `COPY ... FROM STDIN` data; buffered data is sent every 64 KiB,
/// so memory stays bounded whatever the total size.
pub struct CopyIn<'a> {
    client: &'a mut Client,
    id: ReqId,
    failed: bool,
}

impl CopyIn<'_> {
    /// The server aborts a COPY on bad data before we finish sending: surface it.
    fn check(&mut self) -> Result<()> {
        if self.failed {
            return Err(Error::Usage("COPY already failed".into()));
        }
        let mut first_err = None;
        if let Some(r) = self.client.take_reply(self.id, &mut first_err) {
            self.failed = true;
            self.client.copy_in_open = false;
            r?;
            return Err(Error::protocol("COPY ended before CopyDone"));
        }
        if self.client.proto.is_dead() {
            self.failed = true;
            return Err(first_err.unwrap_or(Error::Closed));
        }
        Ok(())
    }

    /// Queues data (any split: rows may span calls), sending when the buffer
    /// is full. A send stalled past the query timeout cancels the COPY.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.check()?;
        self.client.proto.copy_data(data)?;
        if self.client.proto.output().len() >= COPY_FLUSH {
            let deadline = self.client.deadline();
            let sent = |c: &mut Client| c.flushed() || c.proto.has_response();
            if let Drive::TimedOut = self.client.drive(sent, deadline).await {
                self.failed = true;
                self.client.copy_in_open = false;
                self.client.proto.copy_fail("timed out");
                return Err(self.client.timed_out(self.id).await);
            }
            self.check()?;
        }
        Ok(())
    }

    /// Ends the data; returns the number of rows copied.
    pub async fn finish(mut self) -> Result<u64> {
        self.check()?;
        self.client.proto.copy_done();
        self.client.copy_in_open = false;
        self.failed = true;
        let deadline = self.client.deadline();
        match self.client.wait(self.id, deadline).await? {
            Response::Copy { tag } => Ok(rows_affected(&tag)),
            _ => Err(Error::protocol("unexpected reply to COPY")),
        }
    }

    /// Aborts the COPY; nothing is inserted.
    pub async fn abort(mut self, reason: &str) -> Result<()> {
        if self.failed {
            return Ok(());
        }
        self.client.proto.copy_fail(reason);
        self.client.copy_in_open = false;
        self.failed = true;
        let deadline = self.client.deadline();
        match self.client.wait(self.id, deadline).await {
            Err(e) if e.code() == Some("57014") => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }
}

/// Reads `COPY ... TO STDOUT` data chunk by chunk; the socket is read only
/// when the previous data was consumed, so memory stays bounded.
pub struct CopyOut<'a> {
    client: &'a mut Client,
    id: ReqId,
    deadline: Option<Instant>,
    done: bool,
}

impl CopyOut<'_> {
    /// The next chunk (usually one row in text format), `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        let mut first_err = None;
        loop {
            if let Some(c) = self.client.proto.take_copy_chunk(self.id) {
                return Ok(Some(c));
            }
            if self.done {
                return Ok(None);
            }
            if let Some(r) = self.client.take_reply(self.id, &mut first_err) {
                self.done = true;
                self.client.copy_out_active = false;
                r?;
                continue;
            }
            if self.client.proto.is_dead() {
                self.done = true;
                return Err(first_err
                    .or_else(|| self.client.proto.take_fatal())
                    .unwrap_or(Error::Closed));
            }
            let more = |c: &mut Client| c.proto.has_copy_chunk() || c.proto.has_response();
            if let Drive::TimedOut = self.client.drive(more, self.deadline).await {
                self.done = true;
                self.client.copy_out_active = false;
                return Err(self.client.timed_out(self.id).await);
            }
        }
    }

    /// Reads everything that is left into one buffer.
    pub async fn read_all(&mut self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        while let Some(c) = self.next().await? {
            v.extend_from_slice(&c);
        }
        Ok(v)
    }
}
