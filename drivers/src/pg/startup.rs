//! Startup and authentication, as a state machine over backend messages.

use std::collections::HashMap;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, ScramSha256, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::config::Config;
use super::error::{DbError, Error, Result};

/// The key a CancelRequest must quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKey {
    pub process_id: i32,
    pub secret_key: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the server to pick an authentication method.
    Auth,
    /// SCRAM exchange in progress; the server's next message is SASLContinue/Final.
    Sasl,
    /// Password sent; waiting for AuthenticationOk.
    AwaitOk,
    /// Authenticated; collecting ParameterStatus/BackendKeyData until ReadyForQuery.
    Settling,
    Done,
}

/// What [`Startup::on_message`] reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    Continue,
    /// ReadyForQuery arrived, with its transaction status byte.
    Ready(u8),
}

/// Drives one connection from StartupMessage to the first ReadyForQuery.
pub struct Startup {
    user: String,
    password: Option<String>,
    state: State,
    scram: Option<ScramSha256>,
    /// Over TLS: the hash of the server's certificate that SCRAM binds to
    /// (`tls-server-end-point`), so a man in the middle who terminates TLS
    /// cannot relay the authentication.
    pub(crate) channel_binding: Option<Vec<u8>>,
    pub(crate) params: HashMap<String, String>,
    pub(crate) key: Option<BackendKey>,
    pub(crate) notices: Vec<DbError>,
    /// The method the server chose, for tests and diagnostics.
    pub(crate) method: &'static str,
}

fn auth_err(message: impl Into<String>) -> Error {
    Error::Auth {
        message: message.into(),
        db: None,
    }
}

impl Startup {
    /// Writes the StartupMessage into `out`.
    pub fn new(cfg: &Config, out: &mut BytesMut) -> Result<Startup> {
        frontend::startup_message(cfg.startup_params(), out)
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Startup {
            user: cfg.user.clone(),
            password: cfg.password.clone(),
            state: State::Auth,
            scram: None,
            channel_binding: None,
            params: HashMap::new(),
            key: None,
            notices: Vec::new(),
            method: "none",
        })
    }

    fn password(&self) -> Result<&str> {
        self.password
            .as_deref()
            .ok_or_else(|| auth_err("the server requested a password but none was configured"))
    }

    fn expect(&self, want: State, what: &str) -> Result<()> {
        if self.state == want {
            Ok(())
        } else {
            Err(Error::protocol(format!(
                "unexpected {what} during startup (state {:?})",
                self.state
            )))
        }
    }

    /// Consumes one backend message, writing any reply into `out`.
    pub fn on_message(&mut self, msg: Message, out: &mut BytesMut) -> Result<Progress> {
        match msg {
            Message::AuthenticationOk => {
                if !matches!(self.state, State::Auth | State::AwaitOk) {
                    // A server that skips SASLFinal would skip proving it knows the
                    // password; refuse rather than trusting it.
                    return Err(auth_err("server ended SCRAM without a final message"));
                }
                if self.method == "none" {
                    self.method = "trust";
                }
                self.state = State::Settling;
            }
            Message::AuthenticationCleartextPassword => {
                self.expect(State::Auth, "cleartext password request")?;
                self.method = "password";
                let pw = self.password()?;
                frontend::password_message(pw.as_bytes(), out).map_err(Error::Io)?;
                self.state = State::AwaitOk;
            }
            Message::AuthenticationMd5Password(body) => {
                self.expect(State::Auth, "md5 password request")?;
                self.method = "md5";
                let hash = md5_hash(
                    self.user.as_bytes(),
                    self.password()?.as_bytes(),
                    body.salt(),
                );
                frontend::password_message(hash.as_bytes(), out).map_err(Error::Io)?;
                self.state = State::AwaitOk;
            }
            Message::AuthenticationSasl(body) => {
                self.expect(State::Auth, "SASL request")?;
                self.method = "scram-sha-256";
                let mut mechs = body.mechanisms();
                let (mut plain, mut plus) = (false, false);
                while let Some(m) = mechs.next().map_err(Error::Io)? {
                    plain |= m == SCRAM_SHA_256;
                    plus |= m == SCRAM_SHA_256_PLUS;
                }
                let pw = self.password()?.to_string();
                let (mechanism, binding) =
                    match &self.channel_binding {
                        Some(hash) if plus => {
                            self.method = "scram-sha-256-plus";
                            (
                                SCRAM_SHA_256_PLUS,
                                ChannelBinding::tls_server_end_point(hash.clone()),
                            )
                        }
                        // Over TLS, to a server that does not offer binding:
                        // say so, so a man in the middle who stripped the
                        // offer is caught by the server.
                        Some(_) if plain => (SCRAM_SHA_256, ChannelBinding::unrequested()),
                        None if plain => (SCRAM_SHA_256, ChannelBinding::unsupported()),
                        _ => return Err(auth_err(
                            "the server offered no supported SASL mechanism (need SCRAM-SHA-256)",
                        )),
                    };
                let scram = ScramSha256::new(pw.as_bytes(), binding);
                frontend::sasl_initial_response(mechanism, scram.message(), out)
                    .map_err(Error::Io)?;
                self.scram = Some(scram);
                self.state = State::Sasl;
            }
            Message::AuthenticationSaslContinue(body) => {
                self.expect(State::Sasl, "SASLContinue")?;
                let scram = self.scram.as_mut().expect("set in Sasl state");
                scram
                    .update(body.data())
                    .map_err(|e| auth_err(format!("SCRAM: {e}")))?;
                frontend::sasl_response(scram.message(), out).map_err(Error::Io)?;
            }
            Message::AuthenticationSaslFinal(body) => {
                self.expect(State::Sasl, "SASLFinal")?;
                let scram = self.scram.as_mut().expect("set in Sasl state");
                scram
                    .finish(body.data())
                    .map_err(|e| auth_err(format!("server failed SCRAM verification: {e}")))?;
                self.state = State::AwaitOk;
            }
            Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential
            | Message::AuthenticationGss
            | Message::AuthenticationGssContinue(_)
            | Message::AuthenticationSspi => {
                return Err(auth_err(
                    "the server requires an unsupported authentication method (Kerberos/GSS/SSPI/SCM)",
                ));
            }
            Message::ErrorResponse(body) => {
                let db = DbError::parse(body.fields()).map_err(Error::Io)?;
                // Class 28 is invalid_authorization_specification: wrong password,
                // unknown user, pg_hba rejection.
                if db.code.starts_with("28") {
                    return Err(Error::Auth {
                        message: db.message.clone(),
                        db: Some(Box::new(db)),
                    });
                }
                return Err(Error::Db(Box::new(db)));
            }
            Message::NoticeResponse(body) => {
                if let Ok(n) = DbError::parse(body.fields()) {
                    self.notices.push(n);
                }
            }
            Message::ParameterStatus(body) => {
                let name = body.name().map_err(Error::Io)?.to_string();
                let value = body.value().map_err(Error::Io)?.to_string();
                self.params.insert(name, value);
            }
            Message::BackendKeyData(body) => {
                self.expect(State::Settling, "BackendKeyData")?;
                self.key = Some(BackendKey {
                    process_id: body.process_id(),
                    secret_key: body.secret_key(),
                });
            }
            Message::ReadyForQuery(body) => {
                self.expect(State::Settling, "ReadyForQuery")?;
                self.state = State::Done;
                return Ok(Progress::Ready(body.status()));
            }
            _ => {
                return Err(Error::protocol(format!(
                    "unexpected message during startup (state {:?})",
                    self.state
                )))
            }
        }
        Ok(Progress::Continue)
    }
}
