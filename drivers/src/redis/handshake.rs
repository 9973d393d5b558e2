//! Connection setup as a state machine: what to send, and what the replies
//! mean, without any socket.
//!
//! First `HELLO <3|2> [AUTH user pass] [SETNAME name]`, with `SELECT db`
//! pipelined behind it. A server that does not know `HELLO` (before 6.0),
//! or refuses the protocol version, gets the RESP2 sequence instead:
//! `AUTH`, `CLIENT SETNAME`, `SELECT`.

use super::config::Config;
use super::encode::Enc;
use super::error::{Error, Result, ServerErrorKind};
use super::value::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Hello,
    Legacy,
    Done,
}

/// What the handshake wants next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Send what was appended to the output (if anything) and feed the
    /// next reply.
    More,
    /// Set up; the connection speaks RESP3 when `resp3`.
    Done { resp3: bool },
}

/// Drives one connection's setup.
#[derive(Debug)]
pub(crate) struct Handshake {
    cfg: Config,
    step: Step,
    /// Replies still expected for the commands of the current step.
    expected: usize,
    /// Replies of the current step so far.
    replies: Vec<Value>,
    resp3: bool,
}

impl Handshake {
    pub(crate) fn new(cfg: &Config) -> Handshake {
        Handshake {
            cfg: cfg.clone(),
            step: Step::Hello,
            expected: 0,
            replies: Vec::new(),
            resp3: false,
        }
    }

    /// Appends the first commands to `out`.
    pub(crate) fn start(&mut self, out: &mut Vec<u8>) {
        let c = &self.cfg;
        let auth = c.pass().is_some();
        let argc = 2 + if auth { 3 } else { 0 } + if c.name().is_some() { 2 } else { 0 };
        let mut e = Enc::new(out, argc);
        e.arg("HELLO")
            .arg(if c.resp3_enabled() { "3" } else { "2" });
        if let Some(pass) = c.pass() {
            e.arg("AUTH").arg(c.user().unwrap_or("default")).arg(pass);
        }
        if let Some(name) = c.name() {
            e.arg("SETNAME").arg(name);
        }
        drop(e);
        self.expected = 1;
        if c.db() != 0 {
            Enc::new(out, 2).arg("SELECT").arg(c.db());
            self.expected += 1;
        }
        self.step = Step::Hello;
    }

    /// Feeds one reply; new commands, if any, are appended to `out`.
    pub(crate) fn on_reply(&mut self, v: Value, out: &mut Vec<u8>) -> Result<Progress> {
        if self.step == Step::Done || self.expected == 0 {
            return Err(Error::protocol("unexpected reply during connection setup"));
        }
        self.replies.push(v);
        self.expected -= 1;
        if self.expected > 0 {
            return Ok(Progress::More);
        }
        let replies = std::mem::take(&mut self.replies);
        match self.step {
            Step::Hello => self.after_hello(replies, out),
            Step::Legacy => {
                for r in replies {
                    r.into_result()?;
                }
                self.step = Step::Done;
                Ok(Progress::Done { resp3: false })
            }
            Step::Done => unreachable!(),
        }
    }

    fn after_hello(&mut self, mut replies: Vec<Value>, out: &mut Vec<u8>) -> Result<Progress> {
        let hello = replies.remove(0);
        match hello {
            Value::Error(e) if e.is_unknown_command() || *e.kind() == ServerErrorKind::NoProto => {
                // The pipelined SELECT ran unauthenticated or not at all;
                // the RESP2 sequence redoes it.
                self.legacy(out);
                Ok(Progress::More)
            }
            Value::Error(e) => Err(Error::Server(e)),
            Value::Map(_) | Value::Array(_) => {
                self.resp3 = self.cfg.resp3_enabled() && hello_proto(&hello) == Some(3);
                for r in replies {
                    r.into_result()?;
                }
                self.step = Step::Done;
                Ok(Progress::Done { resp3: self.resp3 })
            }
            other => Err(Error::protocol(format!("unexpected HELLO reply {other:?}"))),
        }
    }

    fn legacy(&mut self, out: &mut Vec<u8>) {
        let c = &self.cfg;
        self.expected = 0;
        if let Some(pass) = c.pass() {
            match c.user() {
                Some(user) => Enc::new(out, 3).arg("AUTH").arg(user).arg(pass),
                None => Enc::new(out, 2).arg("AUTH").arg(pass),
            };
            self.expected += 1;
        }
        if let Some(name) = c.name() {
            Enc::new(out, 3).arg("CLIENT").arg("SETNAME").arg(name);
            self.expected += 1;
        }
        if c.db() != 0 {
            Enc::new(out, 2).arg("SELECT").arg(c.db());
            self.expected += 1;
        }
        if self.expected == 0 {
            // Nothing to set up: a PING keeps the step machine uniform.
            Enc::new(out, 1).arg("PING");
            self.expected = 1;
        }
        self.step = Step::Legacy;
    }
}

fn hello_proto(v: &Value) -> Option<i64> {
    let pairs: Vec<(&Value, &Value)> = match v {
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(a) => a
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (&c[0], &c[1]))
            .collect(),
        _ => return None,
    };
    pairs
        .into_iter()
        .find_map(|(k, v)| match (k.as_bytes(), v) {
            (Some(b"proto"), Value::Int(p)) => Some(*p),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::super::error::ServerError;
    use super::*;

    fn text(out: &mut Vec<u8>) -> String {
        let s = String::from_utf8(out.clone()).unwrap();
        out.clear();
        s
    }

    fn hello_map(proto: i64) -> Value {
        Value::Map(vec![
            (
                Value::Bulk(b"server".to_vec()),
                Value::Bulk(b"redis".to_vec()),
            ),
            (Value::Bulk(b"proto".to_vec()), Value::Int(proto)),
        ])
    }

    fn err(s: &str) -> Value {
        Value::Error(ServerError::parse(s))
    }

    #[test]
    fn plain_hello3() {
        let mut out = Vec::new();
        let mut h = Handshake::new(&Config::default());
        h.start(&mut out);
        assert_eq!(text(&mut out), "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
        assert_eq!(
            h.on_reply(hello_map(3), &mut out).unwrap(),
            Progress::Done { resp3: true }
        );
        assert!(out.is_empty());
    }

    #[test]
    fn hello_with_auth_name_and_db() {
        let cfg = Config::from_url("redis://:pw@h/2")
            .unwrap()
            .client_name("app")
            .resp3(false);
        let mut out = Vec::new();
        let mut h = Handshake::new(&cfg);
        h.start(&mut out);
        assert_eq!(
            text(&mut out),
            "*7\r\n$5\r\nHELLO\r\n$1\r\n2\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$2\r\npw\r\n\
             $7\r\nSETNAME\r\n$3\r\napp\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n"
        );
        // RESP2 HELLO answers with a flat array.
        let flat = Value::Array(vec![Value::Bulk(b"proto".to_vec()), Value::Int(2)]);
        assert_eq!(h.on_reply(flat, &mut out).unwrap(), Progress::More);
        assert_eq!(
            h.on_reply(Value::Simple("OK".into()), &mut out).unwrap(),
            Progress::Done { resp3: false }
        );
    }

    #[test]
    fn wrong_password_is_reported() {
        let cfg = Config::from_url("redis://u:bad@h/1").unwrap();
        let mut out = Vec::new();
        let mut h = Handshake::new(&cfg);
        h.start(&mut out);
        assert!(text(&mut out).contains("$1\r\nu\r\n$3\r\nbad\r\n"));
        let first = h.on_reply(err("WRONGPASS invalid username-password pair"), &mut out);
        assert_eq!(first.unwrap(), Progress::More);
        let e = h
            .on_reply(err("NOAUTH Authentication required."), &mut out)
            .unwrap_err();
        assert_eq!(e.server_kind(), Some(&ServerErrorKind::WrongPass));
    }

    #[test]
    fn falls_back_to_resp2_commands() {
        let cfg = Config::from_url("redis://u:pw@h/3")
            .unwrap()
            .client_name("n");
        let mut out = Vec::new();
        let mut h = Handshake::new(&cfg);
        h.start(&mut out);
        out.clear();
        assert_eq!(
            h.on_reply(err("ERR unknown command 'HELLO'"), &mut out)
                .unwrap(),
            Progress::More
        );
        assert!(out.is_empty());
        // The SELECT pipelined behind HELLO failed for want of AUTH.
        assert_eq!(
            h.on_reply(err("NOAUTH Authentication required."), &mut out)
                .unwrap(),
            Progress::More
        );
        let sent = text(&mut out);
        assert!(sent.starts_with("*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$2\r\npw\r\n"));
        assert!(sent.contains("*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$1\r\nn\r\n"));
        assert!(sent.ends_with("*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"));
        let ok = || Value::Simple("OK".into());
        assert_eq!(h.on_reply(ok(), &mut out).unwrap(), Progress::More);
        assert_eq!(h.on_reply(ok(), &mut out).unwrap(), Progress::More);
        assert_eq!(
            h.on_reply(ok(), &mut out).unwrap(),
            Progress::Done { resp3: false }
        );
        assert!(h.on_reply(ok(), &mut out).is_err());
    }

    #[test]
    fn legacy_auth_failure_and_bare_fallback() {
        let cfg = Config::from_url("redis://:pw@h").unwrap();
        let mut out = Vec::new();
        let mut h = Handshake::new(&cfg);
        h.start(&mut out);
        out.clear();
        h.on_reply(err("NOPROTO unsupported protocol version"), &mut out)
            .unwrap();
        assert_eq!(text(&mut out), "*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n");
        let e = h
            .on_reply(err("ERR invalid password"), &mut out)
            .unwrap_err();
        assert_eq!(e.server_kind(), Some(&ServerErrorKind::Err));

        let mut h = Handshake::new(&Config::default());
        h.start(&mut out);
        out.clear();
        h.on_reply(
            err("ERR unknown command `HELLO`, with args beginning with: `3`"),
            &mut out,
        )
        .unwrap();
        assert_eq!(text(&mut out), "*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            h.on_reply(Value::Simple("PONG".into()), &mut out).unwrap(),
            Progress::Done { resp3: false }
        );
    }
}
