//! Connecting through a unix-domain socket.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tidepool_drivers::redis::{Config, Connection, PubSub};
use tidepool_engine::rt;
use tidepool_testkit::lookup::RedisBinaries;

/// A redis-server listening only on a unix socket, killed on drop.
struct UnixServer {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

impl UnixServer {
    fn start() -> UnixServer {
        let bins = RedisBinaries::from_env().expect("redis-server");
        let dir = std::env::temp_dir().join(format!("tidepool-redis-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("redis.sock");
        let child = Command::new(&bins.server)
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocketperm",
                "700",
            ])
            .arg("--unixsocket")
            .arg(&sock)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not open {sock:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        UnixServer { child, dir, sock }
    }
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn commands_and_pubsub_over_a_unix_socket() {
    let server = UnixServer::start();
    let url = format!("redis+unix://{}?db=2", server.sock.display());
    rt::block_on(async {
        let c = Connection::open(&url).await.unwrap();
        c.set("unix:k", "v").await.unwrap();
        assert_eq!(c.get::<String>("unix:k").await.unwrap(), "v");
        let info: String = c.cmd_as(["CLIENT", "INFO"]).await.unwrap();
        assert!(info.contains(" db=2 "), "{info}");
        let ps = PubSub::connect(&Config::unix(server.sock.to_str().unwrap()))
            .await
            .unwrap();
        ps.subscribe(&["unix:chan"]).await.unwrap();
        c.cmd(["PUBLISH", "unix:chan", "hi"]).await.unwrap();
        let m = rt::time::timeout(Duration::from_secs(5), ps.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.payload, b"hi");
    });
}
