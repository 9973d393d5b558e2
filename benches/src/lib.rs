//! Shared helpers for the benchmarks live here.
