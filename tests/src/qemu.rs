//! Running the node's QEMU image (`firmware/image-mps2`, machine
//! `mps2-an386`) as a child process: its console lines parsed as they come,
//! its journal in a host file that outlives the process (so killing QEMU is
//! a power cut), its modem UART on a TCP socket, and [`UartTap`], a test
//! peer between that UART and the bridge that can hold acks back and slip
//! bad bytes onto the line at frame boundaries.

use mrv_firmware::serial_link::{ACK_FRAME, LinkDecode, TYPE_PUBLISH, decode_link_frame};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Size of the board's PSRAM (QEMU insists on exactly this).
pub const PSRAM_BYTES: usize = 16 * 1024 * 1024;

/// The image, built by `scripts/build-firmware-image.sh`; `None` (after a
/// loud message) when it is missing outside CI. Under `CI` a missing or
/// stale image fails the test.
pub fn mps2_image() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = match std::env::var_os("MRV_MPS2_IMAGE") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("thumbv7em-none-eabihf/release/mrv-node-mps2"),
    };
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let newest = ["firmware/src", "firmware/image-mps2/src", "shared/src"]
        .iter()
        .filter_map(|d| newest_mtime(&root.join(d)))
        .max();
    let problem = match (built, newest) {
        (None, _) => Some(format!("{} is not built", path.display())),
        (Some(b), Some(n)) if n > b => Some(format!(
            "{} is older than the firmware sources",
            path.display()
        )),
        _ => None,
    };
    match problem {
        None => Some(path),
        Some(p) if std::env::var_os("CI").is_some() => {
            panic!("{p}; scripts/build-firmware-image.sh builds it")
        }
        Some(p) => {
            eprintln!("SKIPPED: {p} (run scripts/build-firmware-image.sh)");
            None
        }
    }
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest_mtime(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// Writes a PSRAM backing file that reads as erased flash (all `0xFF`).
pub fn erased_psram(path: &Path) {
    std::fs::write(path, vec![0xFFu8; PSRAM_BYTES]).expect("write the PSRAM file");
}

/// One console line: `word key=value ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleLine {
    /// The first word (`boot`, `seal`, `stats`, ...).
    pub kind: String,
    /// The fields.
    pub fields: BTreeMap<String, String>,
    /// The line as printed.
    pub text: String,
}

impl ConsoleLine {
    fn parse(text: &str) -> ConsoleLine {
        let mut words = text.split_whitespace();
        let kind = words.next().unwrap_or("").to_string();
        let fields = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ConsoleLine {
            kind,
            fields,
            text: text.to_string(),
        }
    }

    /// Field `key` as text.
    pub fn get(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("console line without {key}: {}", self.text))
    }

    /// Field `key` as a number.
    pub fn num(&self, key: &str) -> u64 {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a number: {}", self.text))
    }
}

type Lines = Arc<(Mutex<Vec<ConsoleLine>>, Condvar)>;

/// How QEMU runs the image.
#[derive(Debug, Clone)]
pub struct QemuRun {
    /// The ELF.
    pub image: PathBuf,
    /// The PSRAM backing file (the journal).
    pub psram: PathBuf,
    /// A provisioning record to load at its flash offset.
    pub provisioning: Option<PathBuf>,
    /// Where the modem UART connects (`None`: not connected).
    pub modem: Option<SocketAddr>,
    /// `-icount shift=N`: virtual time advances 2^N ns per instruction.
    pub icount_shift: Option<u32>,
}

/// A running QEMU.
pub struct Qemu {
    child: Child,
    lines: Lines,
    cursor: Mutex<usize>,
}

impl Qemu {
    /// Starts QEMU.
    pub fn start(run: &QemuRun) -> Qemu {
        let mut cmd = Command::new("qemu-system-arm");
        cmd.args(["-machine", "mps2-an386,memory-backend=psram"])
            .arg("-object")
            .arg(format!(
                "memory-backend-file,id=psram,size=16M,mem-path={},share=on",
                run.psram.display()
            ))
            .args(["-nographic", "-monitor", "none"]);
        match run.modem {
            Some(addr) => {
                cmd.arg("-chardev").arg(format!(
                    "socket,id=modem,host={},port={},reconnect=1",
                    addr.ip(),
                    addr.port()
                ));
                cmd.args(["-serial", "chardev:modem"]);
            }
            None => {
                cmd.args(["-serial", "null"]);
            }
        }
        cmd.args(["-serial", "stdio"]);
        if let Some(s) = run.icount_shift {
            cmd.arg("-icount").arg(format!("shift={s}"));
        }
        cmd.arg("-kernel").arg(&run.image);
        if let Some(p) = &run.provisioning {
            cmd.arg("-device").arg(format!(
                "loader,file={},addr={:#x}",
                p.display(),
                mrv_shared::provisioning::FLASH_OFFSET
            ));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-arm starts");
        let out = child.stdout.take().expect("piped stdout");
        let lines: Lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let l = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let (m, cv) = &*l;
                m.lock()
                    .expect("lines lock")
                    .push(ConsoleLine::parse(&line));
                cv.notify_all();
            }
        });
        Qemu {
            child,
            lines,
            cursor: Mutex::new(0),
        }
    }

    /// Every console line so far.
    pub fn lines(&self) -> Vec<ConsoleLine> {
        self.lines.0.lock().expect("lines lock").clone()
    }

    /// Waits (at most `timeout`) for the first line for which `pred` holds,
    /// among the lines after the one the previous call returned.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&ConsoleLine) -> bool,
    ) -> ConsoleLine {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.lines;
        let mut lines = m.lock().expect("lines lock");
        let mut cursor = self.cursor.lock().expect("cursor lock");
        let mut seen = *cursor;
        loop {
            if let Some(i) = lines[seen..].iter().position(&mut pred) {
                *cursor = seen + i + 1;
                return lines[seen + i].clone();
            }
            seen = lines.len();
            if let Some(l) = lines.iter().find(|l| l.kind == "panic" || l.kind == "halt") {
                panic!("the node stopped: {}", l.text);
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no console line for {what} after {timeout:?}; last lines:\n{}",
                lines
                    .iter()
                    .rev()
                    .take(8)
                    .map(|l| l.text.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            lines = cv
                .wait_timeout(lines, deadline - now)
                .expect("lines lock")
                .0;
        }
    }

    /// Kills QEMU at once (SIGKILL): a power cut.
    pub fn kill(mut self) -> Vec<ConsoleLine> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.lines()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum TapCommand {
    ToNode(Vec<u8>, Duration),
    ToBridge(Vec<u8>),
}

/// A test peer between the node's UART and the bridge: forwards whole
/// link frames both ways, can drop acks for a while, and inserts bytes
/// between whole frames.
pub struct UartTap {
    /// Where QEMU's UART connects.
    pub addr: SocketAddr,
    hold_acks: Arc<AtomicBool>,
    commands: mpsc::UnboundedSender<TapCommand>,
}

impl UartTap {
    /// Listens on a free loopback port; each connection is forwarded to
    /// `bridge`.
    pub async fn start(bridge: SocketAddr) -> UartTap {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tap");
        let addr = listener.local_addr().expect("tap addr");
        let hold_acks = Arc::new(AtomicBool::new(false));
        let (commands, mut rx) = mpsc::unbounded_channel::<TapCommand>();
        let hold = Arc::clone(&hold_acks);
        tokio::spawn(async move {
            loop {
                let Ok((node, _)) = listener.accept().await else {
                    return;
                };
                let Ok(up) = TcpStream::connect(bridge).await else {
                    return;
                };
                let (mut node_r, mut node_w) = node.into_split();
                let (mut up_r, mut up_w) = up.into_split();
                let mut to_bridge = Vec::new();
                let mut nbuf = vec![0u8; 4096];
                let mut from_bridge = Vec::new();
                let mut ubuf = vec![0u8; 4096];
                loop {
                    tokio::select! {
                        n = node_r.read(&mut nbuf) => {
                            let Ok(n @ 1..) = n else { break };
                            to_bridge.extend_from_slice(&nbuf[..n]);
                            // Forward whole frames only, so that injected
                            // bytes land between frames.
                            while let LinkDecode::Frame { used, .. } =
                                decode_link_frame(&to_bridge, TYPE_PUBLISH, u16::MAX as usize)
                            {
                                if up_w.write_all(&to_bridge[..used]).await.is_err() {
                                    break;
                                }
                                to_bridge.drain(..used);
                            }
                        }
                        n = up_r.read(&mut ubuf) => {
                            let Ok(n @ 1..) = n else { break };
                            from_bridge.extend_from_slice(&ubuf[..n]);
                            // The bridge writes whole ack frames only.
                            while from_bridge.len() >= ACK_FRAME {
                                let ack: Vec<u8> = from_bridge.drain(..ACK_FRAME).collect();
                                if !hold.load(Ordering::SeqCst) {
                                    let _ = node_w.write_all(&ack).await;
                                }
                            }
                        }
                        cmd = rx.recv() => match cmd {
                            Some(TapCommand::ToNode(bytes, pause)) => {
                                let _ = node_w.write_all(&bytes).await;
                                tokio::time::sleep(pause).await;
                            }
                            Some(TapCommand::ToBridge(bytes)) => {
                                let _ = up_w.write_all(&bytes).await;
                            }
                            None => return,
                        },
                    }
                }
            }
        });
        UartTap {
            addr,
            hold_acks,
            commands,
        }
    }

    /// Drops acks (true) or forwards them again (false).
    pub fn hold_acks(&self, hold: bool) {
        self.hold_acks.store(hold, Ordering::SeqCst);
    }

    /// Writes `bytes` to the node between two acks, then keeps the line
    /// quiet for `pause`.
    pub fn inject_to_node(&self, bytes: &[u8], pause: Duration) {
        let _ = self
            .commands
            .send(TapCommand::ToNode(bytes.to_vec(), pause));
    }

    /// Writes `bytes` to the bridge between two frames.
    pub fn inject_to_bridge(&self, bytes: &[u8]) {
        let _ = self.commands.send(TapCommand::ToBridge(bytes.to_vec()));
    }
}
