//! The node firmware on an emulated Cortex-M4 (QEMU `mps2-an386`) feeding a
//! real gateway: provisioned with `mrv-gateway provision`, its frames go
//! over the emulated UART and the bridge (its network co-processor) to the
//! gateway's MQTT endpoint, are verified, acked, and end up in a signed
//! report. QEMU is killed mid-run (a power cut) and restarted; bad bytes
//! are slipped onto the UART both ways.
//!
//! Skipped with a loud message only where QEMU is not installed (under
//! `CI` it must be: scripts/install-test-deps.sh installs it).

use mrv_e2e::qemu::{ConsoleLine, Qemu, QemuRun, UartTap, erased_psram, mps2_image};
use mrv_e2e::{TestSite, require_tool, stored_seqs, wait_until_subscribed};
use mrv_firmware::bridge::{Bridge, BridgeConfig};
use mrv_firmware::serial_link::{
    ACK_FRAME, AckParser, TYPE_PUBLISH, encode_ack_frame, encode_link_frame,
};
use mrv_gateway::clock::ManualClock;
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::report::jwk::Jwk;
use mrv_shared::wire::{Ack, AckStatus};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const DEVICE: &str = "node-q1";
const WAIT: Duration = Duration::from_secs(20);

fn report_section() -> String {
    format!(
        r#"
[[devices]]
id = "{DEVICE}"
kind = "solar_meter"
serial = "QEMU-MPS2-AN386"
meter_class = "emulated"
public_key = "PUBLIC_KEY"
channels = [{{ id = "energy", quantity = "energy", kind = "counter" }}]

[report]
period_minutes = 60
grace_seconds = 5
key_file = "keys/gateway.key"
clock_source = "manual test clock"

[report.calculations.pv]
methodology = "solar_pv"
inputs = [{{ role = "generation", device = "{DEVICE}", channel = "energy" }}]

[report.calculations.pv.parameters.ef]
value = "0.5113"
unit = "tCO2/MWh"
source = "illustrative grid EF"
"#
    )
}

/// Runs `mrv-gateway provision` as an operator would; returns the record
/// and the public key (`x` of the JWK it wrote).
fn provision(dir: &std::path::Path, site: &SiteId) -> (std::path::PathBuf, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mrv-e2e-gateway"))
        .args([
            "provision",
            "--site",
            site.as_str(),
            "--device",
            DEVICE,
            "--out",
        ])
        .arg(dir)
        .output()
        .expect("provision runs");
    assert!(
        out.status.success(),
        "provision failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwk: Jwk = serde_json::from_slice(
        &std::fs::read(dir.join(format!("{DEVICE}.pub.jwk"))).expect("public JWK written"),
    )
    .expect("a JWK");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("public_key = \"{}\"", jwk.x)),
        "{text}"
    );
    assert!(text.contains("0x08004000"), "{text}");
    (dir.join(format!("{DEVICE}.mrvk")), jwk.x)
}

fn last_stats(lines: &[ConsoleLine]) -> ConsoleLine {
    lines
        .iter()
        .rfind(|l| l.kind == "stats")
        .cloned()
        .expect("a stats line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulated_node_reaches_a_signed_report_across_a_power_cut_and_bad_bytes() {
    if !require_tool("qemu-system-arm") {
        return;
    }
    let Some(image) = mps2_image() else {
        return;
    };
    let site = TestSite::new(0, "");
    let (record, x) = provision(&site.dir.path().join("provisioning"), &site.site);
    let text = std::fs::read_to_string(&site.config_path).expect("config");
    std::fs::write(
        &site.config_path,
        text + &report_section().replace("PUBLIC_KEY", &x),
    )
    .expect("config");
    mrv_gateway::keys::generate(&site.dir.path().join("data/keys"), "gateway").expect("keygen");
    // Frames carry no device time: the gateway stamps receipt time, all in
    // one report period on this clock.
    let t0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let clock = ManualClock::new(t0 + 60_000);
    let registry = mrv_gateway::cli::registry::registry_of(&site.config());
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(clock.clone()))
        .await
        .expect("gateway starts");
    wait_until_subscribed(&gw).await;
    let device = DeviceId::new(DEVICE).expect("valid");
    let bridge = Bridge::start(BridgeConfig {
        uart_listen: "127.0.0.1:0".parse().expect("addr"),
        broker_host: "127.0.0.1".into(),
        broker_port: site.mqtt_port,
        credentials: None,
        site: site.site.clone(),
        device: device.clone(),
        line_idle: Duration::from_millis(100),
    })
    .await
    .expect("bridge starts");
    let tap = UartTap::start(bridge.uart_addr).await;
    let psram = site.dir.path().join("psram.bin");
    erased_psram(&psram);
    let run = QemuRun {
        image,
        psram,
        provisioning: Some(record),
        modem: Some(tap.addr),
        icount_shift: None,
    };

    // Boot 1: the key read back from flash is the provisioned one.
    let qemu = Qemu::start(&run);
    let boot = qemu.wait_for("boot", WAIT, |l| l.kind == "boot");
    assert_eq!(
        (boot.num("boot"), boot.num("next_seq"), boot.num("outbox")),
        (1, 1, 0),
        "{}",
        boot.text
    );
    assert_eq!(
        boot.get("key"),
        x,
        "the node signs with the provisioned key"
    );
    assert_eq!(boot.get("device"), DEVICE);
    assert_eq!(boot.get("site"), site.site.as_str());
    qemu.wait_for("acks", WAIT, |l| {
        l.kind == "stats" && l.num("acked_seq") >= 3
    });

    // Bad input to the node, between whole acks: noise, a cut ack (then a
    // quiet line), an ack with a wrong CRC. The same bytes through a host
    // parser say what the node must count.
    let noise = [0x11u8, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77];
    let good = encode_ack_frame(&Ack {
        acked_seq: 1,
        status: AckStatus::Ok,
    });
    let mut bad_crc = good;
    bad_crc[10] ^= 0x01;
    let mut model = AckParser::new();
    for b in noise.iter().chain(&good[..9]) {
        assert_eq!(model.push(*b), None);
    }
    model.line_idle();
    for b in &bad_crc {
        assert_eq!(model.push(*b), None);
    }
    let before = last_stats(&qemu.lines());
    tap.inject_to_node(&noise, Duration::ZERO);
    // The quiet line must reach the guest as a gap: the pause starts when
    // the bytes are written to QEMU's socket, and a loaded host can read
    // them late (200 ms was seen to merge the cut ack with the next bytes
    // under a loaded CI run), so keep it long.
    tap.inject_to_node(&good[..9], Duration::from_millis(1_000));
    tap.inject_to_node(&bad_crc, Duration::ZERO);
    // ... and to the bridge: boot noise and a publish frame with a bad CRC.
    let mut bad_publish = encode_link_frame(TYPE_PUBLISH, b"MF-not-a-frame").expect("short");
    let n = bad_publish.len();
    bad_publish[n - 1] ^= 0xFF;
    tap.inject_to_bridge(b"\r\nboot noise\r\n");
    tap.inject_to_bridge(&bad_publish);
    let m = *model.counters();
    let after = qemu.wait_for("the bad bytes counted", WAIT, |l| {
        l.kind == "stats" && l.num("bad_crc") >= 1 && l.num("truncated") >= 1
    });
    // At least what the host parser counts on the same bytes, in each
    // class, and nothing of another class. Not exactly: real acks keep
    // flowing between the injections, and twice in this session's CI runs
    // (on a 2-vCPU Intel VM) the node counted one more cut frame and 7 or
    // 11 more noise bytes than the model (a real ack caught up in the cut
    // one; not reproduced, the earlier runs matched exactly). The node must
    // go on acking afterwards (checked below).
    let counted = (
        after.num("noise"),
        after.num("truncated"),
        after.num("bad_crc"),
        after.num("bad_type") + after.num("bad_length") + after.num("bad_payload"),
    );
    let model = (
        u64::from(m.noise_bytes),
        u64::from(m.truncated),
        u64::from(m.bad_crc),
        0,
    );
    assert!(
        counted.0 >= model.0
            && counted.1 >= model.1
            && counted.2 >= model.2
            && counted.3 == 0
            && counted.0 <= model.0 + 2 * ACK_FRAME as u64
            && counted.1 <= model.1 + 2,
        "node counted {counted:?}, the host parser {model:?}: {}",
        after.text
    );
    assert_eq!(after.num("errors"), 0, "{}", after.text);
    // The node keeps running: more frames sealed and acked after that.
    let later = qemu.wait_for("acks after the bad bytes", WAIT, |l| {
        l.kind == "stats" && l.num("acked_seq") >= after.num("acked_seq") + 2
    });
    assert!(later.num("produced") > before.num("produced"));

    // Acks stop reaching the node; its outbox fills; then the power goes.
    tap.hold_acks(true);
    qemu.wait_for("a backlog", WAIT, |l| {
        l.kind == "stats" && l.num("outbox") >= 4
    });
    let lines = qemu.kill();
    let last_sealed = lines
        .iter()
        .filter(|l| l.kind == "seal")
        .map(|l| l.num("seq"))
        .max()
        .expect("frames were sealed");
    let acked_before = last_stats(&lines).num("acked_seq");

    // Boot 2 from the same flash: counters, seqs and outbox carry on.
    tap.hold_acks(false);
    let qemu = Qemu::start(&run);
    let boot2 = qemu.wait_for("boot 2", WAIT, |l| l.kind == "boot");
    assert_eq!(boot2.num("boot"), 2, "{}", boot2.text);
    let next = boot2.num("next_seq");
    // The frame being sealed at the cut may have reached flash unlogged.
    assert!(
        next == last_sealed + 1 || next == last_sealed + 2,
        "{} after seal {last_sealed}",
        boot2.text
    );
    assert!(boot2.num("acked_seq") >= acked_before, "{}", boot2.text);
    assert_eq!(
        boot2.num("outbox"),
        next - 1 - boot2.num("acked_seq"),
        "{}",
        boot2.text
    );
    assert!(boot2.num("outbox") >= 4, "{}", boot2.text);
    assert!(boot2.num("pulses") > 0, "{}", boot2.text);
    let target = next + 3;
    let done = qemu.wait_for("boot 2 frames acked", WAIT, |l| {
        l.kind == "stats" && l.num("acked_seq") >= target
    });
    let lines = qemu.kill();
    let first_of_boot2 = lines
        .iter()
        .filter(|l| l.kind == "seal")
        .map(|l| l.num("seq"))
        .min()
        .expect("boot 2 sealed frames");
    assert_eq!(first_of_boot2, next, "boot 2 numbers on from the journal");

    // The gateway stored every frame once, gap-free, each verified. QEMU is
    // gone, but the bridge may still be handing a frame it read before the
    // kill to the gateway: wait until the buffer has been quiet for 500 ms
    // (else such a frame is stored after this count and shows up in the
    // report as one frame too many).
    let acked = done.num("acked_seq");
    let mut stored = stored_seqs(&gw.state.buffer);
    let mut quiet_since = std::time::Instant::now();
    let deadline = quiet_since + Duration::from_secs(10);
    while quiet_since.elapsed() < Duration::from_millis(500) && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = stored_seqs(&gw.state.buffer);
        if now != stored {
            stored = now;
            quiet_since = std::time::Instant::now();
        }
    }
    let seqs = stored.get(&device).cloned().unwrap_or_default();
    let max = *seqs.keys().next_back().expect("frames stored");
    assert!(max >= acked);
    assert_eq!(
        seqs,
        (1..=max).map(|s| (s, 1)).collect::<BTreeMap<u64, u32>>(),
        "each seq stored exactly once"
    );
    let frames: Vec<_> = gw
        .state
        .buffer
        .scan(None)
        .map(|f| f.expect("scan").frame)
        .collect();
    let key = mrv_gateway::config::parse_public_key(&x).expect("key");
    let mut last_energy = 0;
    for f in &frames {
        mrv_shared::wire::signature::verify_frame(f, &key).expect("device signature");
        assert_eq!(f.boot, if f.seq < next { 1 } else { 2 }, "seq {}", f.seq);
        for s in f.samples.iter().filter(|s| s.channel == 0) {
            assert!(s.value >= last_energy, "the energy counter never goes back");
            last_energy = s.value;
        }
        let level: Vec<i64> = f
            .samples
            .iter()
            .filter(|s| s.channel == 2)
            .map(|s| s.value)
            .collect();
        assert!(level.iter().all(|v| *v == -50), "12 mA = -50 mm: {level:?}");
    }
    let ingest = &gw.state.ingest;
    use mrv_gateway::ingest::stats::IngestStats;
    assert_eq!(ingest.rejects_total(), 0, "nothing bad reached MQTT");
    let b = bridge.stats();
    assert_eq!(b.uart_connections, 2);
    assert_eq!(
        b.link.noise_bytes as usize,
        b"\r\nboot noise\r\n".len() + n - 1
    );
    assert_eq!(b.link.bad_crc, 1);
    assert_eq!(b.wrong_device, 0);
    assert!(b.acks_relayed >= acked);
    assert!(IngestStats::get(&ingest.signatures_verified) >= max);

    // The report: signed, chained, device signatures checked, and holding
    // exactly the stored frames.
    clock.set(t0 + 3_600_000 + 10_000);
    let reports = gw.state.reports.clone().expect("reports are built");
    bridge.stop().await;
    gw.shutdown().await;
    let head = reports.head().expect("a report was built");
    let files: Vec<_> = (1..=head.seq).map(|s| reports.path(s)).collect();
    let keys = mrv_gateway::keys::load_public_keys(&[site.dir.path().join("data/keys")])
        .expect("gateway key");
    // Against the site's device registry: the provisioned key is the only
    // one the node's frames may carry.
    let trust = mrv_shared::report::DeviceTrust::Registry(registry.trusted().expect("registry"));
    let (verdicts, _) = mrv_gateway::cli::verify::verify_files(&files, &keys, &trust, false, None);
    assert!(verdicts.iter().all(|v| v.problem.is_none()), "{verdicts:?}");
    let mut in_reports = BTreeMap::new();
    for f in &files {
        let r = mrv_shared::report::verify::verify_jws(&std::fs::read(f).expect("read"), &keys)
            .expect("report verifies");
        for fr in r.report.readings.frames {
            assert_eq!(fr.device, device);
            assert!(
                fr.sig.is_some(),
                "frame {} carries its device signature",
                fr.seq
            );
            *in_reports.entry(fr.seq).or_insert(0u32) += 1;
        }
    }
    assert_eq!(in_reports, seqs, "every stored frame is in a report, once");
    eprintln!(
        "qemu node: {max} frames in {} report(s); boot 2 resumed at seq {next} with {} unacked; node dropped {} noise bytes, {} cut and {} bad-CRC acks; bridge dropped {} noise bytes, {} bad-CRC frames",
        head.seq,
        boot2.num("outbox"),
        after.num("noise"),
        after.num("truncated"),
        after.num("bad_crc"),
        b.link.noise_bytes,
        b.link.bad_crc
    );
}
