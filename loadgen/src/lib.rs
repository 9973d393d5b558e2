//! tidepool-loadgen: an open-loop HTTP/1.1 load generator for Tidepool.
//!
//! Offered load follows any rate curve λ(t) built from phases (steady,
//! ramp, step, spike, sine, square-wave burst, trace replay); send times
//! solve Λ(t_k) = k, with Poisson arrivals by time rescaling. Latency is
//! measured from each request's intended send time (coordinated-omission
//! corrected) and from its actual send. The server's pool metrics are
//! scraped each second onto the same timeline, and a run ends in a JSONL
//! series, a summary JSON, a wrk2-style spectrum and an HTML report.

pub mod cli;
pub mod compare;
pub mod config;
pub mod demo;
pub mod dryrun;
pub mod exchange;
pub mod http;
pub mod mix;
pub mod pattern;
pub mod report;
pub mod run;
pub mod sampler;
pub mod schedule;
pub mod signal;
pub mod soak;
pub mod spectrum;
pub mod stack;
pub mod stats;
pub mod summary;
pub mod threshold;
pub mod util;
pub mod versus;
pub mod worker;
