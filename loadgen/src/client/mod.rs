//! Sending it: the generator threads, each one event loop over its own
//! ring or epoll (`worker`), a connection's exchange without I/O
//! (`exchange`) and its HTTP framing (`http`), the run that starts them and
//! collects their seconds (`run`), and the once-a-second sampler of the
//! generator's CPU and the server's metrics (`sampler`).

pub mod exchange;
pub mod http;
pub mod run;
pub mod sampler;
pub mod worker;
