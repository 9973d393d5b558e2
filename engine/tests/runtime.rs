//! The runtime against real sockets on loopback.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tidepool_engine::rt::net::{TcpListener, TcpStream};
use tidepool_engine::rt::{self, time};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Both ends of one loopback TCP connection: (client, accepted).
/// For tests of what only the io_uring backend has (provided buffers,
/// multishot operations, held waits), whatever `TIDEPOOL_IO` says.
fn block_on_uring<F: std::future::Future>(fut: F) -> F::Output {
    let config = rt::CoreConfig {
        io: rt::IoChoice::IoUring,
        ..rt::CoreConfig::default()
    };
    rt::block_on_with(&config, fut).unwrap()
}

async fn connected_pair() -> (TcpStream, TcpStream) {
    let mut listener = TcpListener::bind(loopback(), 128).unwrap();
    let addr = listener.local_addr();
    let accept = rt::spawn(async move { listener.accept().await.unwrap() });
    let client = TcpStream::connect(addr).await.unwrap();
    (client, accept.await.unwrap())
}

#[test]
fn echo_over_loopback() {
    rt::block_on(async {
        let mut listener = TcpListener::bind(loopback(), 128).unwrap();
        let addr = listener.local_addr();
        let server = rt::spawn(async move {
            let conn = listener.accept().await.unwrap();
            let mut buf = Vec::with_capacity(64);
            loop {
                buf.clear();
                let (n, b) = conn.read(buf).await;
                buf = b;
                if n.unwrap() == 0 {
                    break;
                }
                let (r, b) = conn.write_all(buf).await;
                r.unwrap();
                buf = b;
            }
        });
        let client = TcpStream::connect(addr).await.unwrap();
        for i in 0..100u32 {
            let msg = format!("ping {i}").into_bytes();
            let (r, _) = client.write_all(msg.clone()).await;
            r.unwrap();
            let mut got = Vec::with_capacity(64);
            while got.len() < msg.len() {
                let (n, b) = client.read(got).await;
                got = b;
                assert!(n.unwrap() > 0);
            }
            assert_eq!(got, msg);
        }
        client.shutdown(std::net::Shutdown::Write).unwrap();
        server.await.unwrap();
    });
}

#[test]
fn sleep_and_timeout() {
    rt::block_on(async {
        let start = Instant::now();
        time::sleep(Duration::from_millis(20)).await;
        assert!(start.elapsed() >= Duration::from_millis(20));
        let r = time::timeout(
            Duration::from_millis(10),
            time::sleep(Duration::from_secs(5)),
        )
        .await;
        assert_eq!(r, Err(time::Elapsed));
        let r = time::timeout(Duration::from_secs(5), async { 7 }).await;
        assert_eq!(r, Ok(7));
    });
}

/// Polls `fut` once, on the task running the test.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx))).await
}

/// A sleep moved later keeps its timer at the earlier deadline until that
/// fires (a keep-alive connection moves its deadline twice per request);
/// it still completes no earlier than where it was moved, also when the
/// earlier deadline fired before the move and nobody polled it since.
#[test]
fn a_sleep_moved_later_completes_at_the_later_deadline() {
    rt::block_on(async {
        let start = Instant::now();
        let mut s = time::sleep(Duration::from_millis(20));
        assert!(poll_once(&mut s).await.is_pending());
        let later = start + Duration::from_millis(60);
        s.reset(later);
        (&mut s).await;
        assert!(
            Instant::now() >= later,
            "completed before its moved deadline"
        );

        // Fired at its deadline while not polled, then moved later.
        let start = Instant::now();
        let mut s = time::sleep(Duration::from_millis(10));
        assert!(poll_once(&mut s).await.is_pending());
        time::sleep(Duration::from_millis(30)).await;
        let later = Instant::now() + Duration::from_millis(40);
        s.reset(later);
        assert!(
            poll_once(&mut s).await.is_pending(),
            "a fired timer moved later is pending again"
        );
        (&mut s).await;
        assert!(Instant::now() >= later);
        assert!(start.elapsed() >= Duration::from_millis(70));

        // Moved earlier after a move later: completes at the earlier one.
        let start = Instant::now();
        let mut s = time::sleep(Duration::from_secs(30));
        assert!(poll_once(&mut s).await.is_pending());
        s.reset(start + Duration::from_secs(60));
        s.reset(start + Duration::from_millis(20));
        let r = time::timeout(Duration::from_secs(10), &mut s).await;
        assert_eq!(r, Ok(()), "the earlier deadline was lost");
    });
}

/// A read dropped while the kernel owns its buffer: the buffer is parked
/// until the cancel completes, and no operation is left behind.
#[test]
fn dropped_reads_are_cancelled_and_parked() {
    rt::block_on(async {
        let (client, server_side) = connected_pair().await;
        let baseline = rt::ops_in_flight();
        for _ in 0..1000 {
            // Nothing is sent, so each read is still in the kernel when the
            // timeout drops it.
            let r = time::timeout(Duration::from_micros(50), server_side.read(vec![0xAA; 0])).await;
            assert!(r.is_err());
        }
        // Poison-check: bytes sent now must land in a fresh buffer intact.
        let (r, _) = client.write_all(b"after-cancel".to_vec()).await;
        r.unwrap();
        let (n, buf) = server_side.read(Vec::with_capacity(64)).await;
        assert_eq!(&buf[..n.unwrap()], b"after-cancel");
        // Let the cancellations' completions arrive.
        for _ in 0..100 {
            if rt::ops_in_flight() <= baseline {
                break;
            }
            rt::yield_now().await;
        }
        assert!(
            rt::ops_in_flight() <= baseline,
            "ops leaked: {}",
            rt::ops_in_flight()
        );
    });
}

/// Bytes waiting in `s`'s socket receive queue.
fn unread(s: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is live.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(r, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n as usize
}

/// A `recv` that had to go one-shot (this ring has no provided buffers,
/// as when every one is taken) and whose future is dropped after the
/// kernel read the bytes hands them to the next `recv` instead of losing
/// them with the future.
#[test]
fn a_dropped_one_shot_recv_loses_nothing() {
    let config = rt::CoreConfig {
        io: rt::IoChoice::IoUring,
        recv_buffers: 0,
        ..rt::CoreConfig::default()
    };
    rt::block_on_with(&config, async {
        assert_eq!(rt::recv_buffers_free(), None, "no provided buffers");
        let (client, server_side) = connected_pair().await;
        let mut first = Box::pin(server_side.recv(Vec::new()));
        // One poll submits the receive; nothing has been sent yet.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(first.as_mut().poll(&mut cx).is_pending());
        let (r, _) = client.write_all(b"hello".to_vec()).await;
        r.unwrap();
        // Sent on loopback: the bytes are queued on the socket or were
        // taken by the receive; wait until the receive has them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while unread(&server_side) > 0 {
            assert!(Instant::now() < deadline, "the receive never read");
            rt::yield_now().await;
        }
        drop(first);
        let (n, buf) = time::timeout(Duration::from_secs(5), server_side.recv(Vec::new()))
            .await
            .expect("the bytes were lost with the dropped future");
        assert_eq!(&buf[..n.unwrap()], b"hello");
        // And the stream goes on receiving.
        let (r, _) = client.write_all(b"again".to_vec()).await;
        r.unwrap();
        assert_eq!(recv_exactly(&server_side, 5).await, b"again");
    })
    .unwrap();
}

/// Waits (bounded by `deadline`) until `closed_now` reports the peer gone.
async fn closed(s: &TcpStream, deadline: Instant) -> std::io::Error {
    loop {
        if let Some(e) = s.closed_now() {
            return e;
        }
        assert!(Instant::now() < deadline, "the peer's end never showed");
        rt::yield_now().await;
    }
}

/// `closed_now` looks without taking: an open stream with bytes waiting is
/// open; a peer that wrote and then closed is seen gone behind the bytes,
/// which stay for the next read; a reset is its error.
#[test]
fn closed_now_sees_the_peer_gone_behind_unread_bytes_and_takes_nothing() {
    rt::block_on(async {
        let (client, server_side) = connected_pair().await;
        assert!(client.closed_now().is_none(), "a fresh stream");
        let (r, _) = server_side.write_all(b"bye".to_vec()).await;
        r.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while unread(&client) < 3 {
            assert!(Instant::now() < deadline, "the bytes never arrived");
            rt::yield_now().await;
        }
        assert!(client.closed_now().is_none(), "bytes waiting, still open");
        server_side.shutdown(std::net::Shutdown::Write).unwrap();
        let gone = closed(&client, deadline).await;
        assert_eq!(gone.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(unread(&client), 3, "the look took nothing");
        assert_eq!(recv_exactly(&client, 3).await, b"bye");

        let (client, server_side) = connected_pair().await;
        socket2::SockRef::from(&server_side)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(server_side); // an abortive close: RST
        let reset = closed(&client, deadline).await;
        assert_eq!(reset.kind(), std::io::ErrorKind::ConnectionReset);
    });
}

#[test]
fn connect_refused_is_an_error() {
    rt::block_on(async {
        // Bind then drop to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = TcpStream::connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    });
}

#[test]
fn many_tasks_and_accepts() {
    rt::block_on(async {
        let mut listener = TcpListener::bind(loopback(), 1024).unwrap();
        let addr = listener.local_addr();
        let n = 200;
        let acceptor = rt::spawn(async move {
            let mut conns = Vec::new();
            for _ in 0..n {
                conns.push(listener.accept().await.unwrap());
            }
            conns.len()
        });
        let mut handles = Vec::new();
        for _ in 0..n {
            handles.push(rt::spawn(
                async move { TcpStream::connect(addr).await.unwrap() },
            ));
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(acceptor.await.unwrap(), n);
    });
}

/// Reads `want` bytes through the multishot receive.
async fn recv_exactly(s: &TcpStream, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        let (n, b) = s.recv(got).await;
        got = b;
        assert!(n.unwrap() > 0, "closed after {} of {want} bytes", got.len());
    }
    got
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// A multishot receive delivers a stream far larger than all provided
/// buffers, in order, recycling them; the end of stream is reported after
/// the data.
#[test]
fn multishot_receive_streams_in_order() {
    block_on_uring(async {
        let (client, server_side) = connected_pair().await;
        let free = rt::recv_buffers_free().expect("this kernel has provided-buffer rings");
        let data = pattern(8 << 20);
        let sender = rt::spawn({
            let data = data.clone();
            async move {
                let (r, _) = client.write_all(data).await;
                r.unwrap();
                client.shutdown(std::net::Shutdown::Write).unwrap();
                client
            }
        });
        let got = recv_exactly(&server_side, data.len()).await;
        assert!(got == data, "bytes arrived out of order or damaged");
        let (n, _) = server_side.recv(Vec::new()).await;
        assert_eq!(n.unwrap(), 0, "end of stream after the data");
        drop(sender.await);
        assert_eq!(
            rt::recv_buffers_free(),
            Some(free),
            "every buffer came back"
        );
    });
}

/// Accepts `n` connections from `listener`: (client, accepted) pairs.
async fn accept_pairs(
    listener: TcpListener,
    n: usize,
) -> (Vec<(TcpStream, TcpStream)>, TcpListener) {
    let addr = listener.local_addr();
    let mut listener = listener;
    let mut pairs = Vec::new();
    for _ in 0..n {
        let accept = rt::spawn(async move {
            let s = listener.accept().await.unwrap();
            (s, listener)
        });
        let client = TcpStream::connect(addr).await.unwrap();
        let (server_side, l) = accept.await.unwrap();
        listener = l;
        pairs.push((client, server_side));
    }
    (pairs, listener)
}

/// Arms `hog`'s receive with a first message, then floods it with
/// `flood` while nobody reads it; the returned task ends when all of it
/// was sent.
async fn flood(client: TcpStream, hog: &TcpStream, flood: Vec<u8>) -> rt::JoinHandle<TcpStream> {
    let (r, _) = client.write_all(b"x".to_vec()).await;
    r.unwrap();
    assert_eq!(recv_exactly(hog, 1).await, b"x");
    rt::spawn(async move {
        let (r, _) = client.write_all(flood).await;
        r.unwrap();
        client
    })
}

/// One connection whose reader is busy while its peer pipelines megabytes
/// holds a bounded share of the worker's provided buffers (the rest waits
/// in its socket, pushing back on the peer), so other connections keep
/// their multishot receives; when its reader gets to it, every byte is
/// there, in order.
#[test]
fn a_connection_nobody_reads_holds_a_bounded_share_of_buffers() {
    block_on_uring(async {
        let free = rt::recv_buffers_free().expect("this kernel has provided-buffer rings");
        let listener = TcpListener::bind(loopback(), 128).unwrap();
        let (mut pairs, _listener) = accept_pairs(listener, 2).await;
        let (other_client, other) = pairs.pop().unwrap();
        let (hog_client, hog) = pairs.pop().unwrap();
        let data = pattern(8 << 20);
        let sender = flood(hog_client, &hog, data.clone()).await;
        // Many loop turns while the flood goes on: each exchange on the
        // other connection is one.
        for i in 0..200u32 {
            let msg = i.to_be_bytes().to_vec();
            let (r, _) = other_client.write_all(msg.clone()).await;
            r.unwrap();
            assert_eq!(recv_exactly(&other, 4).await, msg);
            let held = free - rt::recv_buffers_free().unwrap();
            assert!(
                held <= free / 5,
                "exchange {i}: {held} of {free} buffers held"
            );
        }
        assert!(recv_exactly(&hog, data.len()).await == data);
        drop(sender.await);
        assert_eq!(
            rt::recv_buffers_free(),
            Some(free),
            "every buffer came back"
        );
    });
}

/// When many connections' unread data holds every provided buffer, other
/// connections still receive (one-shot), and the hogs read all their data
/// once they get to it; dropping a stream gives its buffers back.
#[test]
fn exhausted_buffers_fall_back_and_come_back() {
    block_on_uring(async {
        let free = rt::recv_buffers_free().expect("this kernel has provided-buffer rings");
        let listener = TcpListener::bind(loopback(), 128).unwrap();
        // Enough hogs that their capped shares add up to every buffer.
        let hogs = free / 4;
        let (mut pairs, _listener) = accept_pairs(listener, hogs + 1).await;
        let (other_client, other) = pairs.pop().unwrap();
        let data = pattern(256 << 10);
        let mut senders = Vec::new();
        let mut readers = Vec::new();
        for (client, hog) in pairs {
            senders.push(flood(client, &hog, data.clone()).await);
            readers.push(hog);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while rt::recv_buffers_free() != Some(0) {
            assert!(Instant::now() < deadline, "buffers never ran out");
            time::sleep(Duration::from_millis(1)).await;
        }
        // Another connection is not starved.
        let (r, _) = other_client.write_all(b"still served".to_vec()).await;
        r.unwrap();
        assert_eq!(recv_exactly(&other, 12).await, b"still served");
        // Every hog gets every byte, in order.
        for hog in &readers {
            assert!(recv_exactly(hog, data.len()).await == data);
        }
        for s in senders {
            drop(s.await);
        }
        // Unread data dies with its stream and the buffers return.
        let (r, _) = other_client.write_all(pattern(64 << 10)).await;
        r.unwrap();
        let mut first = Vec::new();
        while first.is_empty() {
            let (n, b) = other.recv(first).await;
            first = b;
            n.unwrap();
        }
        drop(other);
        while rt::recv_buffers_free() != Some(free) {
            assert!(
                Instant::now() < deadline,
                "buffers of a dropped stream never came back"
            );
            rt::yield_now().await;
        }
    });
}

/// A worker that holds every wait to gather completions (the policy that
/// decides when is unit-tested in `rt::coalesce`) still delivers every
/// byte in order to many busy peers, and a timer set meanwhile still fires.
#[test]
fn held_waits_lose_nothing() {
    const CONNS: usize = 32;
    const ROUNDS: usize = 300;
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let config = rt::CoreConfig {
            coalesce_mode: rt::CoalesceMode::Always,
            io: rt::IoChoice::IoUring,
            ..rt::CoreConfig::default()
        };
        rt::block_on_with(&config, async move {
            let mut listener = TcpListener::bind(loopback(), 128).unwrap();
            tx.send(listener.local_addr()).unwrap();
            let mut echoes = Vec::new();
            for _ in 0..CONNS {
                let conn = listener.accept().await.unwrap();
                echoes.push(rt::spawn(async move {
                    let mut buf = Vec::with_capacity(4096);
                    loop {
                        buf.clear();
                        let (n, b) = conn.recv(buf).await;
                        if n.unwrap() == 0 {
                            return;
                        }
                        let spin = Instant::now();
                        while spin.elapsed() < Duration::from_micros(30) {
                            std::hint::spin_loop();
                        }
                        let (r, b) = conn.write_all(b).await;
                        r.unwrap();
                        buf = b;
                    }
                }));
            }
            let timer = rt::spawn(rt::time::sleep(Duration::from_millis(20)));
            for e in echoes {
                e.await.unwrap();
            }
            timer.await.unwrap();
            rt::held_waits()
        })
        .unwrap()
    });
    let addr: SocketAddr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    rt::block_on(async move {
        let mut clients = Vec::new();
        for c in 0..CONNS {
            let conn = TcpStream::connect(addr).await.unwrap();
            clients.push(rt::spawn(async move {
                for round in 0..ROUNDS {
                    let msg: Vec<u8> = (0..64).map(|i| (c * 31 + round * 7 + i) as u8).collect();
                    let (r, _) = conn.write_all(msg.clone()).await;
                    r.unwrap();
                    let got = recv_exactly(&conn, msg.len()).await;
                    assert_eq!(got, msg, "connection {c}, round {round}");
                }
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
    });
    let held = server.join().unwrap();
    assert!(held > 0, "32 busy peers never made the worker hold a wait");
}

#[test]
fn a_panicking_task_resolves_its_handle_with_an_error() {
    rt::block_on(async {
        let h = rt::spawn(async {
            rt::yield_now().await;
            panic!("task panics (expected by the test)");
        });
        assert_eq!(h.await, Err(rt::JoinError::Panicked));
        // The worker goes on.
        assert_eq!(rt::spawn(async { 7 }).await, Ok(7));
    });
}

#[test]
fn a_panicking_posted_closure_does_not_kill_the_worker() {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        rt::block_on(async move {
            tx.send(rt::current_worker()).unwrap();
            rt::shutdown_signal().await;
        })
    });
    let handle = rx.recv().unwrap();
    handle.post(|| panic!("posted closure panics (expected by the test)"));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    handle.post(move || done_tx.send(()).unwrap());
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the worker still runs posted work");
    handle.shutdown();
    worker.join().expect("the worker ended normally");
}

#[test]
#[should_panic(expected = "already runs a worker")]
fn nested_block_on_is_refused() {
    rt::block_on(async {
        rt::block_on(async {});
    });
}

/// A worker that ends with operations in flight (one-shot reads on one
/// connection, a multishot receive on another, a multishot accept on a
/// listener) cancels them, waits for the kernel to let go, and closes
/// every socket: both peers see their connection end, the listener refuses
/// connections, and memory allocated afterwards is not written by a late
/// completion into a freed read buffer.
#[test]
fn teardown_with_operations_in_flight_closes_everything_and_frees_nothing_early() {
    use std::io::{Read, Write};
    let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = outside.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        block_on_uring(async move {
            let mut listener = TcpListener::bind(loopback(), 16).unwrap();
            tx.send(listener.local_addr()).unwrap();
            let reads = std::rc::Rc::new(TcpStream::connect(addr).await.unwrap());
            let received = TcpStream::connect(addr).await.unwrap();
            let baseline = rt::ops_in_flight();
            rt::spawn(async move {
                let _ = listener.accept().await;
            });
            rt::spawn(async move {
                let _ = received.recv(Vec::new()).await;
            });
            for _ in 0..4 {
                let s = reads.clone();
                rt::spawn(async move {
                    let _ = s.read(Vec::with_capacity(64 << 10)).await;
                });
            }
            // Every task has submitted its operation: the worker ends with
            // six in flight and their tasks unfinished.
            while rt::ops_in_flight() < baseline + 6 {
                rt::yield_now().await;
            }
        })
    });
    let mut peers: Vec<std::net::TcpStream> = (0..2).map(|_| outside.accept().unwrap().0).collect();
    let inner = rx.recv().unwrap();
    worker.join().expect("the worker ended normally");
    // Fresh allocations the size of the read buffers: a read the kernel
    // still held would write into one of them if its buffer had been freed.
    let poison: Vec<Vec<u8>> = (0..32).map(|_| vec![0xAA; 64 << 10]).collect();
    for peer in &mut peers {
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        peer.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Fails once the other side is closed (a reset): that is the point.
        let _ = peer.write_all(&[0x55; 64 << 10]);
        match peer.read(&mut [0u8; 16]) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("the worker's socket was left open: {other:?}"),
        }
    }
    assert!(
        std::net::TcpStream::connect(inner).is_err(),
        "the listener was left open"
    );
    assert!(
        poison.iter().all(|b| b.iter().all(|&x| x == 0xAA)),
        "a late completion wrote into freed memory"
    );
}

/// Sockets in CLOSE_WAIT whose local port is `port`: connections the peer
/// closed and this process never did (a leaked fd stays there for good).
fn close_wait_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f[1].rsplit(':').next().unwrap();
            u16::from_str_radix(local_port, 16).unwrap() == port && f[3] == "08"
        })
        .count()
}

/// A listener dropped while the kernel accepts connections for it: its
/// multishot accept is armed and cancelled in the same ring entry, after
/// the backlog filled, so the kernel accepts the whole backlog first and
/// every one of those completions lands on an orphaned operation. Each
/// socket must be closed, not leaked.
#[test]
fn a_dropped_listener_leaks_no_accepted_socket() {
    let port = block_on_uring(async {
        let mut listener = TcpListener::bind(loopback(), 128).unwrap();
        let addr = listener.local_addr();
        let clients: Vec<_> = (0..20)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let baseline = rt::ops_in_flight();
        {
            // Arms the accept without entering the ring.
            let mut accept = std::pin::pin!(listener.accept());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(accept.as_mut().poll(&mut cx).is_pending());
        }
        drop(listener);
        // The orphaned accept ends once its cancel completes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while rt::ops_in_flight() > baseline {
            assert!(Instant::now() < deadline, "the accept was never cancelled");
            rt::time::sleep(Duration::from_millis(1)).await;
        }
        drop(clients);
        addr.port()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while close_wait_on(port) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} accepted sockets were never closed",
            close_wait_on(port)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn block_on_epoll<F: std::future::Future>(fut: F) -> F::Output {
    let config = rt::CoreConfig {
        io: rt::IoChoice::Epoll,
        ..rt::CoreConfig::default()
    };
    rt::block_on_with(&config, fut).unwrap()
}

/// On the epoll backend, 8 MiB each way through one connection fills the
/// socket buffers, so both directions wait on EAGAIN and are woken by
/// edges; the data arrives intact and in order, and the end of stream is
/// reported on every read after it (a read that found EOF must not leave
/// the socket waiting for an edge that never comes).
#[test]
fn epoll_streams_through_backpressure_and_reports_eof_twice() {
    block_on_epoll(async {
        assert_eq!(rt::io_backend(), rt::Backend::Epoll);
        assert_eq!(rt::io_selection().reason, "requested");
        assert_eq!(rt::ring_mode(), None);
        const LEN: usize = 8 << 20;
        let (a, b) = connected_pair().await;
        let (a, b) = (std::rc::Rc::new(a), std::rc::Rc::new(b));
        let pump = |from: std::rc::Rc<TcpStream>| {
            rt::spawn(async move {
                let (r, _) = from.write_all(pattern(LEN)).await;
                r.unwrap();
                from.shutdown(std::net::Shutdown::Write).unwrap();
            })
        };
        let (wa, wb) = (pump(a.clone()), pump(b.clone()));
        let (ga, gb) = (recv_exactly(&a, LEN).await, recv_exactly(&b, LEN).await);
        assert!(ga == pattern(LEN) && gb == pattern(LEN), "data corrupted");
        wa.await.unwrap();
        wb.await.unwrap();
        for _ in 0..2 {
            // Bounded only so that the failure is an assertion, not a hang.
            let (n, _) = time::timeout(Duration::from_secs(10), b.recv(Vec::new()))
                .await
                .expect("a second read after the end of stream waited for an edge");
            assert_eq!(n.unwrap(), 0);
        }
    });
}
