//! `ks-wire-latency`: the gateway's FIX session to a `ks-venue` process
//! over loopback, measured, with a bare TCP echo beside it as the baseline.
//!
//! * `round-trip` — NewOrderSingle written by [`FixVenue::send`] until its
//!   ExecutionReport (150=0) comes out of [`FixVenue::poll`], against an
//!   echo of the same NewOrderSingle bytes through a process that does
//!   nothing but `poll(2)`, read and write them back (the same wait and
//!   socket calls as the venue, no FIX, no book). Both client sides spin on
//!   non-blocking reads, as the gateway does.
//! * `mass-cancel` — 10,000 orders resting at the venue; from the call to
//!   [`Venue::mass_cancel`] (35=q) until the 35=r and the last
//!   ExecutionReport (150=4) are out of `poll`.
//!
//! Prints hdrhistogram percentiles (µs).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use killswitch::order::{OrderId, Price, Qty, ScopeTags, Side};
use killswitch::venue::{MassCancelScope, NewOrder, Venue, VenueEvent};
use killswitch_tools::fix::client::{FixVenue, FixVenueConfig};
use killswitch_tools::fix::codec::utc_timestamp;
use killswitch_tools::fix::messages::{new_order_single, NewOrderFields};

#[derive(Parser, Debug)]
#[command(
    name = "ks-wire-latency",
    about = "FIX over loopback against ks-venue, beside a bare TCP echo"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// NewOrderSingle -> ExecutionReport round trips, and the echo baseline.
    RoundTrip {
        /// Measured round trips of each kind.
        #[arg(long, default_value_t = 20_000)]
        iterations: u64,
        /// Unmeasured round trips first.
        #[arg(long, default_value_t = 2_000)]
        warmup: u64,
    },
    /// 35=q over 10,000 resting orders -> last 150=4.
    MassCancel {
        /// Resting orders per round.
        #[arg(long, default_value_t = 10_000)]
        orders: u64,
        /// Measured rounds.
        #[arg(long, default_value_t = 20)]
        rounds: u64,
    },
    /// (Internal) the echo server the baseline talks to.
    #[command(hide = true)]
    EchoServer,
}

fn sibling(name: &str) -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} not found: build it first (cargo build --release -p killswitch-tools)",
                path.display()
            ),
        ))
    }
}

/// A child process that prints its address on the first stdout line.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(mut cmd: Command) -> io::Result<Server> {
        let mut child = cmd.stdout(Stdio::piped()).spawn()?;
        let mut out = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte)? == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&line).to_string();
        let addr = text
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no address in {text:?}")))?;
        Ok(Server { child, addr })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venue() -> io::Result<(Server, FixVenue)> {
    let mut cmd = Command::new(sibling("ks-venue")?);
    cmd.args(["--venue", "BENCH:0", "--instruments", "I0"]);
    let server = Server::start(cmd)?;
    let mut cfg = FixVenueConfig::new("BENCH", server.addr, "BENCHER", "BENCH");
    cfg.symbols = vec![(0, "I0".into())];
    cfg.heartbeat = Duration::from_secs(30);
    let mut fix = FixVenue::new(cfg);
    fix.connect(Duration::from_secs(10))
        .map_err(io::Error::other)?;
    Ok((server, fix))
}

fn order(id: u64) -> NewOrder {
    NewOrder {
        id: OrderId(id),
        tags: ScopeTags::default(),
        side: Side::Buy,
        price: Price::from_units(90),
        qty: Qty::from_lots(1),
    }
}

fn print(name: &str, h: &Histogram<u64>) {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    println!(
        "{name:<28} n={:<7} min {:>8.1} µs  p50 {:>8.1}  p90 {:>8.1}  p99 {:>8.1}  p99.9 {:>8.1}  max {:>9.1}",
        h.len(),
        h.min() as f64 / 1e3,
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1e3
    );
}

fn round_trip(iterations: u64, warmup: u64) -> Result<(), Box<dyn std::error::Error>> {
    let (_server, mut fix) = venue()?;
    let mut wire = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut events = Vec::new();
    let mut id = 0;
    for i in 0..warmup + iterations {
        id += 1;
        let t0 = Instant::now();
        fix.send(&order(id))?;
        'wait: loop {
            events.clear();
            fix.poll(&mut events);
            for e in &events {
                if *e == (VenueEvent::Acked { id: OrderId(id) }) {
                    break 'wait;
                }
            }
        }
        let dt = t0.elapsed().as_nanos() as u64;
        if i >= warmup {
            wire.record(dt.max(1))?;
        }
        if id % 1000 == 0 {
            fix.mass_cancel(MassCancelScope::All)?; // keep the book small
        }
    }
    // The baseline: the same NewOrderSingle bytes, echoed.
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("echo-server");
    let echo = Server::start(cmd)?;
    let stream = TcpStream::connect(echo.addr)?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    let mut payload = Vec::new();
    let now = utc_timestamp(std::time::SystemTime::now());
    let body = new_order_single(&NewOrderFields {
        cl_ord_id: "123456",
        account: "0",
        symbol: "I0",
        side: Side::Buy,
        qty: Qty::from_lots(1).0,
        price: Price::from_units(90).0,
        transact_time: &now,
    });
    let mut session = killswitch_tools::fix::session::SessionState::new(
        "BENCHER",
        "BENCH",
        Duration::from_secs(30),
        false,
    );
    session.send(&body, false, &mut payload);
    let mut echo_hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut buf = vec![0u8; payload.len()];
    for i in 0..warmup + iterations {
        let t0 = Instant::now();
        (&stream).write_all(&payload)?;
        let mut got = 0;
        while got < payload.len() {
            match (&stream).read(&mut buf[got..]) {
                Ok(0) => return Err("echo server closed".into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        let dt = t0.elapsed().as_nanos() as u64;
        if i >= warmup {
            echo_hist.record(dt.max(1))?;
        }
    }
    println!(
        "message: NewOrderSingle of {} bytes (echo: same bytes back)",
        payload.len()
    );
    print("FIX NOS -> ExecutionReport", &wire);
    print("bare TCP echo", &echo_hist);
    println!(
        "ratio p50 {:.2}x  p99 {:.2}x (target p50 <= 2x)",
        wire.value_at_quantile(0.5) as f64 / echo_hist.value_at_quantile(0.5) as f64,
        wire.value_at_quantile(0.99) as f64 / echo_hist.value_at_quantile(0.99) as f64
    );
    Ok(())
}

fn mass_cancel(orders: u64, rounds: u64) -> Result<(), Box<dyn std::error::Error>> {
    let (_server, mut fix) = venue()?;
    let mut to_last = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
    let mut events = Vec::new();
    let mut id = 0;
    for _ in 0..rounds {
        let first = id + 1;
        for _ in 0..orders {
            id += 1;
            fix.send(&order(id))?;
        }
        let mut acked = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked < orders {
            events.clear();
            fix.poll(&mut events);
            acked += events
                .iter()
                .filter(|e| matches!(e, VenueEvent::Acked { .. }))
                .count() as u64;
            if Instant::now() > deadline {
                return Err(format!("only {acked} of {orders} acks within 60 s").into());
            }
        }
        let t0 = Instant::now();
        fix.mass_cancel(MassCancelScope::All)?;
        let mut cancelled = 0;
        while cancelled < orders {
            events.clear();
            fix.poll(&mut events);
            cancelled += events
                .iter()
                .filter(|e| matches!(e, VenueEvent::Canceled { id } if id.0 >= first))
                .count() as u64;
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(format!("only {cancelled} of {orders} cancels within 60 s").into());
            }
        }
        to_last.record(t0.elapsed().as_nanos() as u64)?;
    }
    println!("{orders} resting orders, {rounds} rounds: 35=q -> last ExecutionReport 150=4");
    print("mass cancel over the wire", &to_last);
    Ok(())
}

/// The baseline's server: poll(2), read, write the same bytes back.
fn echo_server() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("echo listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    let (stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut p = libc::pollfd {
            fd: stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on the stack for the duration of the call.
        unsafe { libc::poll(&mut p, 1, 20) };
        loop {
            match (&stream).read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => (&stream).write_all(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::RoundTrip { iterations, warmup } => round_trip(iterations, warmup),
        Cmd::MassCancel { orders, rounds } => mass_cancel(orders, rounds),
        Cmd::EchoServer => echo_server(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ks-wire-latency: {e}");
            ExitCode::from(1)
        }
    }
}
