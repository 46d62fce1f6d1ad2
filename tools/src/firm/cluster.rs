//! A throwaway NATS cluster of real `nats-server` processes on loopback
//! ports, each with JetStream in its own temp directory: what the process
//! tests and `ks-firm-latency` run against. Servers can be killed and
//! restarted (same store, same ports) to test failover and reconnection.
//!
//! Not for production: the firm's cluster is run by the firm (see README.md).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `nats-server` is: `$NATS_SERVER`, then `PATH`, then Debian's
/// `/usr/sbin` (not on a normal user's `PATH`).
pub fn nats_server_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "nats-server is not installed: `apt-get install -y nats-server` (Debian's package; \
             .ci/run installs it), or set NATS_SERVER to its path"
                .to_string()
        })
}

struct Node {
    client_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Running servers; all are killed on drop.
pub struct NatsCluster {
    dir: tempfile::TempDir,
    binary: PathBuf,
    nodes: Vec<Node>,
}

/// Why a cluster did not start: a server that exited at start (most likely
/// a port taken meanwhile: worth another try with new ports) or anything else.
enum StartError {
    PortTaken(String),
    Other(String),
}

impl From<String> for StartError {
    fn from(e: String) -> Self {
        StartError::Other(e)
    }
}

/// How waiting for one server to listen ended badly.
enum Listen {
    Exited(String),
    Other(String),
}

/// `n` distinct free loopback ports (all held while picking, so no duplicates).
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

impl NatsCluster {
    /// Starts `n` servers (a cluster when `n > 1`) and waits until each
    /// accepts connections. JetStream may still be electing its leaders:
    /// callers retry their first requests (the `firm` commands do).
    pub fn start(n: usize) -> Result<NatsCluster, String> {
        // The ports are free when picked, not held until the servers bind
        // them: another process (a parallel test's cluster) can take one
        // meanwhile. A server that cannot bind exits at start: pick again.
        let mut last = String::new();
        for _ in 0..3 {
            match Self::start_once(n) {
                Ok(c) => return Ok(c),
                Err(StartError::PortTaken(e)) => last = e,
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last)
    }

    fn start_once(n: usize) -> Result<NatsCluster, StartError> {
        let binary = nats_server_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("ks-nats-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let ports = free_ports(2 * n).map_err(|e| format!("free ports: {e}"))?;
        let (clients, routes) = ports.split_at(n);
        let mut nodes = Vec::new();
        for i in 0..n {
            let store = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&store).map_err(|e| format!("{}: {e}", store.display()))?;
            let mut conf = format!(
                "server_name: \"n{i}\"\nlisten: \"127.0.0.1:{}\"\n\
                 jetstream {{ store_dir: \"{}\", max_memory_store: 67108864, max_file_store: 268435456 }}\n",
                clients[i],
                store.display()
            );
            if n > 1 {
                let others: Vec<String> = (0..n)
                    .filter(|j| *j != i)
                    .map(|j| format!("\"nats-route://127.0.0.1:{}\"", routes[j]))
                    .collect();
                conf.push_str(&format!(
                    "cluster {{ name: \"ks-test\", listen: \"127.0.0.1:{}\", routes: [{}] }}\n",
                    routes[i],
                    others.join(", ")
                ));
            }
            let config = store.join("server.conf");
            std::fs::File::create(&config)
                .and_then(|mut f| f.write_all(conf.as_bytes()))
                .map_err(|e| format!("{}: {e}", config.display()))?;
            nodes.push(Node {
                client_port: clients[i],
                config,
                log: store.join("server.log"),
                child: None,
            });
        }
        let mut cluster = NatsCluster { dir, binary, nodes };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_listening(i).map_err(|e| match e {
                Listen::Exited(e) => StartError::PortTaken(e),
                Listen::Other(e) => StartError::Other(e),
            })?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| format!("{}: {e}", node.log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until server `i` itself says it listens on its port (a
    /// connection alone could reach another process on that port).
    fn wait_listening(&mut self, i: usize) -> Result<(), Listen> {
        let end = Instant::now() + Duration::from_secs(30);
        let port = self.nodes[i].client_port;
        let said = format!("Listening for client connections on 127.0.0.1:{port}");
        loop {
            let whole = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
            if whole.contains(&said) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.nodes[i].child.as_mut().map(|c| c.try_wait()) {
                return Err(Listen::Exited(format!(
                    "nats-server n{i} exited at start ({status}):\n{}",
                    self.log(i)
                )));
            }
            if Instant::now() > end {
                return Err(Listen::Other(format!(
                    "nats-server n{i} did not listen on port {port} within 30 s:\n{}",
                    self.log(i)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:<port>` of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Every server's URL, comma-separated (the `--nats` form).
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills server `i` with SIGKILL (a crash, not a shutdown) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts server `i` again with its store and ports.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_listening(i).map_err(|e| match e {
            Listen::Exited(e) | Listen::Other(e) => e,
        })
    }

    /// The log of server `i` (for failure messages).
    pub fn log(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Every server's log tail.
    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| format!("--- nats-server n{i}\n{}", self.log(i)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The directory holding the servers' stores and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
