//! `mrv-sim`: runs N simulated devices against an MQTT broker and prints
//! progress once a second.
//!
//! Device ids are `<prefix>-<n>` (n from 1), kinds round-robin over solar
//! meter, irrigation pump, digester, paddy water level unless `--kind` fixes
//! one. With `--key-seed`, every device signs its frames with
//! `derive_signing_key(seed, id)` and the public keys are printed at start.

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use mrv_firmware::sim::{
    self, DeviceKind, Faults, SimConfig, SimDevice, WireFormat, derive_signing_key,
    verifying_key_bytes,
};
use mrv_shared::ids::{DeviceId, SiteId};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    Mix,
    Solar,
    Pump,
    Digester,
    Paddy,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Binary,
    Json,
}

/// Simulated JCM site devices publishing signed frames over MQTT.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// MQTT broker host.
    #[arg(long, default_value = "127.0.0.1", env = "MRV_SIM_HOST")]
    host: String,
    /// MQTT broker port.
    #[arg(long, default_value_t = 1883, env = "MRV_SIM_PORT")]
    port: u16,
    /// MQTT username (with --password).
    #[arg(long, env = "MRV_SIM_USERNAME")]
    username: Option<String>,
    /// MQTT password.
    #[arg(long, env = "MRV_SIM_PASSWORD", requires = "username")]
    password: Option<String>,
    /// Site id.
    #[arg(long, default_value = "site-a")]
    site: String,
    /// Number of devices.
    #[arg(long, short = 'n', default_value_t = 4)]
    devices: usize,
    /// Device id prefix.
    #[arg(long, default_value = "dev")]
    prefix: String,
    /// Device kinds.
    #[arg(long, value_enum, default_value_t = KindArg::Mix)]
    kind: KindArg,
    /// Sample interval, ms.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Samples per frame.
    #[arg(long, default_value_t = 10)]
    samples_per_frame: usize,
    /// Ack timeout before a re-send, ms.
    #[arg(long, default_value_t = 5000)]
    ack_timeout_ms: u64,
    /// Outbox capacity, frames.
    #[arg(long, default_value_t = 1000)]
    max_outbox: usize,
    /// Wire format.
    #[arg(long, value_enum, default_value_t = FormatArg::Binary)]
    format: FormatArg,
    /// Stop producing after this many frames per device, wait for all acks, exit.
    #[arg(long)]
    max_frames: Option<u64>,
    /// Sign frames with keys derived from this seed (demo only).
    #[arg(long)]
    key_seed: Option<String>,
    /// Fault: reboot every N frames.
    #[arg(long)]
    reboot_every: Option<u64>,
    /// Fault: garbage payload every N frames.
    #[arg(long)]
    garbage_every: Option<u64>,
    /// Fault: relative noise on instantaneous values (0.1 = 10 %).
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    /// Fault: device clock skew, ms.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_skew_ms: i64,
    /// Give up waiting for acks after this many seconds (with --max-frames).
    #[arg(long, default_value_t = 120)]
    ack_wait_s: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let a = Args::parse();
    let site = SiteId::new(&a.site).context("--site")?;
    let faults = Faults {
        noise: a.noise,
        reboot_every_frames: a.reboot_every,
        clock_skew_ms: a.clock_skew_ms,
        garbage_every_frames: a.garbage_every,
        ..Faults::default()
    };
    let mut devices = Vec::with_capacity(a.devices);
    for n in 1..=a.devices {
        let id = DeviceId::new(&format!("{}-{n}", a.prefix)).context("--prefix")?;
        let kind = match a.kind {
            KindArg::Mix => DeviceKind::ALL[(n - 1) % DeviceKind::ALL.len()],
            KindArg::Solar => DeviceKind::SolarMeter,
            KindArg::Pump => DeviceKind::IrrigationPump,
            KindArg::Digester => DeviceKind::Digester,
            KindArg::Paddy => DeviceKind::PaddyWaterLevel,
        };
        let signing_key = a.key_seed.as_deref().map(|s| derive_signing_key(s, &id));
        if let Some(k) = &signing_key {
            let pk: String = verifying_key_bytes(k)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            println!("device {id} kind {kind:?} public_key {pk}");
        }
        devices.push(SimDevice {
            id,
            kind,
            signing_key,
            faults: faults.clone(),
        });
    }
    let cfg = SimConfig {
        broker_host: a.host.clone(),
        broker_port: a.port,
        credentials: a.username.clone().zip(a.password.clone()),
        site,
        devices,
        sample_interval: Duration::from_millis(a.interval_ms),
        samples_per_frame: a.samples_per_frame,
        ack_timeout: Duration::from_millis(a.ack_timeout_ms),
        max_outbox: a.max_outbox,
        format: match a.format {
            FormatArg::Binary => WireFormat::Binary,
            FormatArg::Json => WireFormat::Json,
        },
        max_frames: a.max_frames,
    };
    println!(
        "mrv-sim: {} devices -> {}:{} every {} ms, {} samples/frame",
        a.devices, a.host, a.port, a.interval_ms, a.samples_per_frame
    );
    let handle = sim::start(cfg).await?;
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let outcome = {
        let wait = async {
            match a.max_frames {
                Some(_) => {
                    handle
                        .wait_all_acked(Duration::from_secs(a.ack_wait_s))
                        .await
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = tick.tick() => print_progress(&handle, t0),
                _ = tokio::signal::ctrl_c() => break Ok(()),
                done = &mut wait => {
                    break if done {
                        Ok(())
                    } else {
                        Err(anyhow::anyhow!("not every frame was acked within {} s", a.ack_wait_s))
                    };
                }
            }
        }
    };
    print_progress(&handle, t0);
    handle.stop().await;
    outcome
}

fn print_progress(handle: &sim::SimHandle, t0: Instant) {
    let t = handle.stats().totals;
    println!(
        "[{:>6.1}s] connected {} produced {} sent {} resent {} acked(sum of seqs) {} outbox {} dropped-samples {} boots {}",
        t0.elapsed().as_secs_f64(),
        t.connected,
        t.frames_produced,
        t.frames_sent,
        t.frames_resent,
        t.highest_acked_seq,
        t.outbox_len,
        t.samples_dropped,
        t.boots,
    );
}
