//! `mrv-uart-bridge`: stands in for a node's network co-processor. Listens
//! for the node's modem UART (e.g. QEMU's
//! `-chardev socket,id=modem,host=127.0.0.1,port=<port>,reconnect=1 -serial chardev:modem`)
//! and relays its frames to the gateway's MQTT endpoint and the acks back.
//! See `mrv_firmware::bridge`.

use anyhow::Context;
use clap::Parser;
use mrv_firmware::bridge::{Bridge, BridgeConfig};
use mrv_shared::ids::{DeviceId, SiteId};
use std::net::SocketAddr;
use std::time::Duration;

/// Relay a node's serial link to MQTT and acks back.
#[derive(Debug, Parser)]
#[command(name = "mrv-uart-bridge", version, about)]
struct Args {
    /// Where the node's UART connects (TCP).
    #[arg(long, default_value = "127.0.0.1:7700")]
    uart_listen: SocketAddr,
    /// MQTT broker (the gateway's endpoint) host.
    #[arg(long, default_value = "127.0.0.1")]
    broker_host: String,
    /// MQTT broker port.
    #[arg(long, default_value_t = 1883)]
    broker_port: u16,
    /// MQTT username (with MQTT_PASSWORD in the environment).
    #[arg(long)]
    username: Option<String>,
    /// The node's site id.
    #[arg(long)]
    site: String,
    /// The node's device id (also the MQTT client id).
    #[arg(long)]
    device: String,
    /// Cut a partial frame after this many ms without a byte.
    #[arg(long, default_value_t = 100)]
    line_idle_ms: u64,
    /// Print the counters every this many seconds (0 = never).
    #[arg(long, default_value_t = 10)]
    stats_every_s: u64,
    /// Log filter.
    #[arg(long, env = "MRV_LOG", default_value = "info")]
    log: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log)?)
        .with_writer(std::io::stderr)
        .init();
    let credentials = match &args.username {
        Some(u) => Some((
            u.clone(),
            std::env::var("MQTT_PASSWORD").context("--username needs MQTT_PASSWORD")?,
        )),
        None => None,
    };
    let bridge = Bridge::start(BridgeConfig {
        uart_listen: args.uart_listen,
        broker_host: args.broker_host,
        broker_port: args.broker_port,
        credentials,
        site: SiteId::new(&args.site).map_err(|e| anyhow::anyhow!("--site: {e}"))?,
        device: DeviceId::new(&args.device).map_err(|e| anyhow::anyhow!("--device: {e}"))?,
        line_idle: Duration::from_millis(args.line_idle_ms),
    })
    .await?;
    eprintln!("mrv-uart-bridge: node UART on {}", bridge.uart_addr);
    let every = Duration::from_secs(args.stats_every_s.max(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(every), if args.stats_every_s > 0 => {
                eprintln!("{:?}", bridge.stats());
            }
        }
    }
    bridge.stop().await;
    Ok(())
}
