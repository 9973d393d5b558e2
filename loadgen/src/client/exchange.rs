//! One connection's HTTP/1.1 exchange, without I/O: which requests are in
//! flight, and what the bytes received so far complete. The worker's loop
//! moves the bytes; this decides what they mean and records the results.

use std::collections::VecDeque;
use std::time::Instant;

use crate::client::http::{parse_response, Parsed};
use crate::report::stats::{record, Interval, GOOD_WITHIN_US};

/// A request sent and not yet answered.
pub struct InFlight {
    pub intended: Instant,
    pub sent: Instant,
    pub class: u32,
    /// A HEAD request: its response has no body whatever its headers say.
    pub head: bool,
}

/// The connection cannot go on: the stream is out of step, the server
/// closed it, or it sent what is not HTTP.
#[derive(Debug, PartialEq, Eq)]
pub struct Broken;

#[derive(Default)]
pub struct Exchange {
    pub inflight: VecDeque<InFlight>,
    /// The start of a response whose end has not arrived yet.
    partial: Vec<u8>,
    /// A body that runs until the server closes: the status of that response.
    until_close: Option<u16>,
}

impl Exchange {
    pub fn with_depth(depth: usize) -> Exchange {
        Exchange {
            inflight: VecDeque::with_capacity(depth),
            ..Exchange::default()
        }
    }

    /// Whether another request may be written now (pipelining depth).
    pub fn has_room(&self, depth: usize) -> bool {
        self.inflight.len() < depth && self.until_close.is_none()
    }

    /// Takes bytes received at `now`, recording each response they finish.
    /// Bytes of an unfinished response are kept until the rest arrives.
    pub fn feed(&mut self, data: &[u8], now: Instant, iv: &mut Interval) -> Result<(), Broken> {
        iv.counters.bytes_in += data.len() as u64;
        if self.until_close.is_some() {
            // The body runs to EOF; its bytes are not needed.
            return Ok(());
        }
        if self.partial.is_empty() {
            // The usual case: whole responses, parsed where they landed.
            let used = self.parse(data, now, iv)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let used = self.parse(&buf, now, iv)?;
            buf.drain(..used);
            self.partial = buf;
        }
        Ok(())
    }

    /// The server closed the stream: a body that ran until the close is
    /// complete; everything else in flight failed.
    pub fn eof(&mut self, now: Instant, iv: &mut Interval) {
        if let (Some(status), Some(f)) = (self.until_close, self.inflight.pop_front()) {
            record_response(iv, f, status, now);
        }
        self.fail_all(iv, false);
    }

    /// Counts every request in flight as failed (they will get no response
    /// on this connection) and forgets the stream's state.
    pub fn fail_all(&mut self, iv: &mut Interval, timeout: bool) {
        for f in self.inflight.drain(..) {
            iv.class(f.class as usize).failed += 1;
            if timeout {
                iv.counters.timeouts += 1;
            } else {
                iv.counters.io_errors += 1;
            }
        }
        self.reset();
    }

    /// Forgets the stream's state for a new connection (nothing in flight).
    pub fn reset(&mut self) {
        self.inflight.clear();
        self.partial.clear();
        self.until_close = None;
    }

    /// Parses the responses at the start of `buf`; returns the bytes used.
    fn parse(&mut self, buf: &[u8], now: Instant, iv: &mut Interval) -> Result<usize, Broken> {
        let mut pos = 0;
        while pos < buf.len() {
            // Bytes nobody asked for: the stream is out of step.
            let front = self.inflight.front().ok_or(Broken)?;
            match parse_response(&buf[pos..], front.head) {
                Parsed::Partial => break,
                Parsed::Done { status, len, .. } if is_interim(status) => {
                    // `100 Continue` and its kin come before the final
                    // response to the same request.
                    pos += len;
                }
                Parsed::Done { status, len, close } => {
                    pos += len;
                    let f = self.inflight.pop_front().expect("front exists");
                    record_response(iv, f, status, now);
                    if close {
                        return Err(Broken);
                    }
                }
                Parsed::UntilClose { status } => {
                    self.until_close = Some(status);
                    pos = buf.len();
                }
                Parsed::Invalid(_) => return Err(Broken),
            }
        }
        Ok(pos)
    }
}

/// A 1xx response other than 101 (which ends HTTP on the connection) is
/// interim: the request's final response is still to come.
fn is_interim(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

fn record_response(iv: &mut Interval, f: InFlight, status: u16, now: Instant) {
    let corrected = now.saturating_duration_since(f.intended).as_micros() as u64;
    let service = now.saturating_duration_since(f.sent).as_micros() as u64;
    let c = iv.class(f.class as usize);
    record(&mut c.corrected, corrected);
    record(&mut c.uncorrected, service);
    c.status[(status / 100).min(5) as usize] += 1;
    if (200..400).contains(&status) && corrected <= GOOD_WITHIN_US {
        c.good += 1;
    }
    if status == 503 {
        c.unavailable += 1;
        record(&mut c.unavailable_latency, corrected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";

    fn sent(ex: &mut Exchange, t0: Instant, head: bool) {
        ex.inflight.push_back(InFlight {
            intended: t0,
            sent: t0,
            class: 0,
            head,
        });
    }

    fn completed(iv: &Interval) -> u64 {
        iv.classes[0].as_ref().map_or(0, |c| c.completed())
    }

    #[test]
    fn a_response_split_anywhere_completes_once_whole() {
        let t0 = Instant::now();
        for cut in 1..OK.len() {
            let (mut ex, mut iv) = (Exchange::with_depth(1), Interval::new(0, 1));
            sent(&mut ex, t0, false);
            ex.feed(&OK[..cut], t0, &mut iv).unwrap();
            assert_eq!(completed(&iv), 0, "cut at {cut}");
            ex.feed(&OK[cut..], t0 + Duration::from_millis(3), &mut iv)
                .unwrap();
            assert_eq!(completed(&iv), 1, "cut at {cut}");
            assert!(ex.inflight.is_empty() && ex.partial.is_empty());
            let h = &iv.classes[0].as_ref().unwrap().corrected;
            assert!(
                h.equivalent(h.max(), 3000),
                "latency from the intended time"
            );
        }
    }

    #[test]
    fn pipelined_responses_in_one_read_complete_in_order() {
        let t0 = Instant::now();
        let (mut ex, mut iv) = (Exchange::with_depth(3), Interval::new(0, 1));
        for _ in 0..3 {
            sent(&mut ex, t0, false);
        }
        let mut three = OK.repeat(2);
        three.extend_from_slice(&OK[..10]);
        ex.feed(&three, t0, &mut iv).unwrap();
        assert_eq!((completed(&iv), ex.inflight.len()), (2, 1));
        ex.feed(&OK[10..], t0, &mut iv).unwrap();
        assert_eq!((completed(&iv), ex.inflight.len()), (3, 0));
        assert_eq!(iv.counters.bytes_in, 3 * OK.len() as u64);
    }

    #[test]
    fn an_interim_response_is_not_the_final_one() {
        let t0 = Instant::now();
        let (mut ex, mut iv) = (Exchange::with_depth(2), Interval::new(0, 1));
        sent(&mut ex, t0, false);
        sent(&mut ex, t0, false);
        let mut bytes = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        bytes.extend_from_slice(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
        bytes.extend_from_slice(OK);
        ex.feed(&bytes, t0, &mut iv).unwrap();
        let c = iv.classes[0].as_ref().unwrap();
        assert_eq!(c.completed(), 2);
        assert_eq!(
            c.status[5], 1,
            "the first request's final status is its own"
        );
        assert_eq!(c.status[1], 0, "no 1xx is counted as a response");
        assert!(ex.inflight.is_empty());
    }

    #[test]
    fn goodput_counts_successes_within_the_bound_and_503s_apart() {
        let t0 = Instant::now();
        let (mut ex, mut iv) = (Exchange::with_depth(4), Interval::new(0, 1));
        for _ in 0..4 {
            sent(&mut ex, t0, false);
        }
        let busy = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n";
        // A fast success, a fast 503 (a shed: fast but not good), then at
        // 250 ms a success too late to count and a 500.
        ex.feed(OK, t0 + Duration::from_millis(199), &mut iv)
            .unwrap();
        ex.feed(busy, t0 + Duration::from_millis(1), &mut iv)
            .unwrap();
        let mut late = OK.to_vec();
        late.extend_from_slice(b"HTTP/1.1 500 No\r\nContent-Length: 0\r\n\r\n");
        ex.feed(&late, t0 + Duration::from_millis(250), &mut iv)
            .unwrap();
        let c = iv.classes[0].as_ref().unwrap();
        assert_eq!(c.completed(), 4);
        assert_eq!((c.good, c.unavailable), (1, 1));
        assert_eq!(c.unavailable_latency.len(), 1);
        assert!(
            c.unavailable_latency.max() <= 1_001,
            "the 503's own latency"
        );
        assert_eq!(c.errors(), 2);
    }

    #[test]
    fn bytes_nobody_asked_for_break_the_connection() {
        let t0 = Instant::now();
        let (mut ex, mut iv) = (Exchange::with_depth(1), Interval::new(0, 1));
        assert_eq!(ex.feed(OK, t0, &mut iv), Err(Broken));
        sent(&mut ex, t0, false);
        assert_eq!(ex.feed(&OK.repeat(2), t0, &mut iv), Err(Broken));
        assert_eq!(completed(&iv), 1);
    }

    #[test]
    fn a_body_until_close_completes_at_eof_and_the_rest_fail() {
        let t0 = Instant::now();
        let (mut ex, mut iv) = (Exchange::with_depth(2), Interval::new(0, 1));
        sent(&mut ex, t0, false);
        sent(&mut ex, t0, false);
        ex.feed(b"HTTP/1.1 200 OK\r\n\r\nstream", t0, &mut iv)
            .unwrap();
        assert!(!ex.has_room(2));
        ex.feed(b"more bytes", t0, &mut iv).unwrap();
        ex.eof(t0, &mut iv);
        assert_eq!(completed(&iv), 1);
        assert_eq!(iv.classes[0].as_ref().unwrap().failed, 1);
        assert_eq!(iv.counters.io_errors, 1);
        assert!(ex.has_room(2), "a new connection starts clean");
    }

    #[test]
    fn head_responses_have_no_body_and_close_is_honoured() {
        let t0 = Instant::now();
        let (mut ex, mut iv) = (Exchange::with_depth(2), Interval::new(0, 1));
        sent(&mut ex, t0, true);
        sent(&mut ex, t0, false);
        let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec();
        bytes.extend_from_slice(
            b"HTTP/1.1 503 No\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(ex.feed(&bytes, t0, &mut iv), Err(Broken));
        assert_eq!(completed(&iv), 2);
        assert_eq!(iv.classes[0].as_ref().unwrap().status[5], 1);
    }

    #[test]
    fn failing_counts_timeouts_apart_from_io_errors() {
        let t0 = Instant::now();
        let (mut ex, mut iv) = (Exchange::with_depth(2), Interval::new(0, 1));
        sent(&mut ex, t0, false);
        sent(&mut ex, t0, false);
        ex.feed(&OK[..5], t0, &mut iv).unwrap();
        ex.fail_all(&mut iv, true);
        assert_eq!((iv.counters.timeouts, iv.counters.io_errors), (2, 0));
        assert_eq!(iv.classes[0].as_ref().unwrap().failed, 2);
        sent(&mut ex, t0, false);
        ex.feed(OK, t0, &mut iv).unwrap();
        assert_eq!(completed(&iv), 1, "the partial bytes were forgotten");
    }
}
