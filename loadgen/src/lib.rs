//! tidepool-loadgen: an open-loop HTTP/1.1 load generator for Tidepool.
//!
//! Offered load follows any rate curve λ(t) built from phases (steady,
//! ramp, step, spike, sine, square-wave burst, trace replay); send times
//! solve Λ(t_k) = k, with Poisson arrivals by time rescaling. Latency is
//! measured from each request's intended send time (coordinated-omission
//! corrected) and from its actual send. The server's pool metrics are
//! scraped each second onto the same timeline, and a run ends in a JSONL
//! series, a summary JSON, a wrk2-style spectrum and an HTML report.

//!
//! The tree follows the run: `plan` (what to send and when), `client` (the
//! generator threads that send it and the sampler beside them), `report`
//! (what the run measured, as numbers, thresholds, comparisons and HTML);
//! the commands (`cli`, `demo`, `soak`) and the stack they run against sit
//! at the top.

pub mod cli;
pub mod client;
pub mod demo;
pub mod plan;
pub mod report;
pub mod signal;
pub mod soak;
pub mod stack;
pub mod util;
