//! What a run measured: per-second histograms and counters (`stats`), the
//! summary (`summary`), the wrk2-style spectrum (`spectrum`), pass/fail
//! thresholds (`threshold`), two runs compared (`compare`), the HTML report
//! (`html`), and the demo's three runs side by side (`versus`).

pub mod compare;
pub mod html;
pub mod spectrum;
pub mod stats;
pub mod summary;
pub mod threshold;
pub mod versus;
