//! Modbus poll-cycle benchmark (harness = false; prints figures).
//!
//! 100 simulated devices (tokio-modbus TCP servers on 127.0.0.1, in this
//! process) with 100 configured registers each (60 u16, 20 u32, 20 f32
//! spread over holding 0..=299 with small gaps). One cycle polls every
//! device once, all devices concurrently (as the per-device tasks do), and
//! ends when the last frame is assembled. Reports p50/p99/max of the cycle
//! time and the requests per cycle of the coalescing planner against the
//! naive one-request-per-register plan.
//!
//! Run: `cargo bench -p mrv-gateway-modbus --bench modbus` (add `-- --cycles N`).

use mrv_gateway_modbus::config::{ValidDevice, parse_section};
use mrv_gateway_modbus::planner::{Plan, naive_plan, plan};
use mrv_gateway_modbus::poll::{DevicePoller, execute};
use mrv_gateway_modbus::status::ModbusStatus;
use mrv_gateway_modbus::tcp_task::TcpReader;
use mrv_shared::ids::SiteId;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response};

const DEVICES: usize = 100;
const REGISTERS: usize = 100;

#[derive(Clone)]
struct Bank(Arc<Vec<u16>>);

impl tokio_modbus::server::Service for Bank {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Response, ExceptionCode>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let r = match req {
            Request::ReadHoldingRegisters(a, n) => {
                let (a, n) = (usize::from(a), usize::from(n));
                match self.0.get(a..a + n) {
                    Some(w) => Ok(Response::ReadHoldingRegisters(w.to_vec())),
                    None => Err(ExceptionCode::IllegalDataAddress),
                }
            }
            _ => Err(ExceptionCode::IllegalFunction),
        };
        Box::pin(std::future::ready(r))
    }
}

async fn serve_bank() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let bank = Bank(Arc::new((0..300u16).map(|i| i.wrapping_mul(7)).collect()));
    tokio::spawn(async move {
        let server = Server::new(l);
        let on_connected = |stream, _| {
            let b = bank.clone();
            async move { Ok(Some((b, stream))) }
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    port
}

/// 100 registers over holding 0..=299: u16 at 0..60 step 1 with a gap every
/// 10, then u32 and f32 pairs with 1-register gaps.
fn registers_toml() -> String {
    let mut s = String::new();
    let mut addr = 0u16;
    for i in 0..REGISTERS {
        let ty = match i {
            0..60 => "u16",
            60..80 => "u32",
            _ => "f32",
        };
        s.push_str(&format!(
            "[[modbus.devices.registers]]\nname = \"r{i}\"\nfunction = \"holding\"\naddress = {addr}\ntype = \"{ty}\"\nquantity = \"power\"\nunit = \"W\"\n"
        ));
        addr += match ty {
            "u16" if i % 10 == 9 => 3,
            "u16" => 1,
            _ => 3,
        };
    }
    s
}

/// Runs `cycles` poll cycles (plus one warm-up that connects); returns the
/// workers and the p99 cycle time.
async fn run_cycles(
    label: &str,
    naive_mode: bool,
    mut w: Vec<(DevicePoller, TcpReader)>,
    naive: &Plan,
    status: &ModbusStatus,
    cycles: usize,
) -> (Vec<(DevicePoller, TcpReader)>, Duration) {
    let mut times = Vec::with_capacity(cycles);
    for c in 0..=cycles {
        let t0 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for (mut poller, mut reader) in w.drain(..) {
            let status = status.clone();
            let naive = naive.clone();
            set.spawn(async move {
                if naive_mode {
                    let r = execute(&mut reader, &naive, 0).await;
                    assert!(r.iter().all(|x| x.is_ok()), "naive read failed");
                } else {
                    let out = poller.poll(&mut reader, 0, &status).await;
                    let f = out.frame.expect("a frame");
                    assert!(f.samples.iter().all(|s| s.quality.is_good()));
                }
                (poller, reader)
            });
        }
        while let Some(r) = set.join_next().await {
            w.push(r.expect("poll task"));
        }
        if c > 0 {
            times.push(t0.elapsed());
        }
    }
    times.sort();
    let p99 = percentile(&times, 0.99);
    println!(
        "{label}: {cycles} cycles, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&times, 0.50).as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        times.last().expect("cycles").as_secs_f64() * 1e3
    );
    (w, p99)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let cycles: usize = std::env::args()
        .skip_while(|a| a != "--cycles")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut ports = Vec::new();
        for _ in 0..DEVICES {
            ports.push(serve_bank().await);
        }
        let regs = registers_toml();
        let mut text = String::new();
        for (i, p) in ports.iter().enumerate() {
            text.push_str(&format!(
                "[[modbus.devices]]\nid = \"dev-{i}\"\nhost = \"127.0.0.1\"\nport = {p}\ntimeout_ms = 1000\n{regs}"
            ));
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let cfg = parse_section(&text, &dir.join("gateway.toml"))
            .expect("parses")
            .validate(&dir)
            .expect("valid");
        let dev0: &ValidDevice = &cfg.devices[0];
        let spans = dev0.map.spans();
        let ours = plan(&spans, &dev0.map.unreadable, dev0.limits).expect("plannable");
        let naive = naive_plan(&spans);
        println!("modbus poll cycle: {DEVICES} devices x {REGISTERS} registers, loopback, 2 worker threads");
        println!(
            "requests per cycle: planner {} ({} per device, max_gap {}), naive {} ({} per device)",
            ours.requests.len() * DEVICES,
            ours.requests.len(),
            dev0.limits.max_gap,
            naive.requests.len() * DEVICES,
            naive.requests.len()
        );

        let site = SiteId::new("bench").expect("valid");
        let status = ModbusStatus::new();
        let workers: Vec<(DevicePoller, TcpReader)> = cfg
            .devices
            .iter()
            .map(|d| {
                let (host, port) = match &d.link {
                    mrv_gateway_modbus::config::Link::Tcp { host, port } => (host.clone(), *port),
                    _ => unreachable!("all TCP"),
                };
                (
                    DevicePoller::new(site.clone(), d.clone()),
                    TcpReader::new(host, port, d.unit, d.timeout, d.poll_interval / 2),
                )
            })
            .collect();

        let (w, p99) = run_cycles("planner", false, workers, &naive, &status, cycles).await;
        let _ = run_cycles("naive  ", true, w, &naive, &status, cycles).await;
        println!(
            "target p99 <= 50 ms (planner): {}",
            if p99 <= Duration::from_millis(50) { "met" } else { "NOT met" }
        );
    });
}
