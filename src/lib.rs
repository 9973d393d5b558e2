//! Tidepool: a thread-per-core io_uring server runtime for Linux HTTP
//! applications, with PostgreSQL and Redis drivers and pools on the same
//! rings, and a supervisor that sizes the pools.
//!
//! This crate re-exports the parts and adds what ties them together
//! (`app`: the builder that wires a service; `metrics`: the Prometheus
//! exposition of all of them; `config`: their settings from a TOML file
//! and the environment).

pub use tidepool_drivers as drivers;
pub use tidepool_engine as engine;
pub use tidepool_supervisor as supervisor;

/// What a handler uses most, at the top level: `use tidepool::{Json, Router, Status};`.
pub use tidepool_engine::http::{
    FromRequest, HttpConfig, IntoResponse, Json, Method, Query, Rejection, RejectionKind, Request,
    Response, Router, Server, ServerHandle, Status,
};

pub mod app;
pub mod config;
pub mod metrics;

// The README's quick start and the guide's examples compile as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/guide.md")]
struct GuideDoctests;
