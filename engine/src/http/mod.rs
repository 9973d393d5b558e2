//! HTTP/1.1: a sans-IO core (parse, chunked, encode) and the connection task
//! that drives it on a worker's ring.

pub mod chunked;
pub mod parse;
