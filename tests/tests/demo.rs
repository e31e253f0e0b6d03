//! The README's main command: `demo` runs a whole site on embedded defaults,
//! reports progress, injects one fault and ends with a summary drawn from
//! the signed reports; here it runs as a child process.

use std::process::Command;

#[test]
fn demo_site_collects_from_every_device_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_mrv-e2e-gateway"))
        .args([
            "--log",
            "warn",
            "demo",
            "--duration",
            "8",
            "--interval-ms",
            "100",
            "--diagnostics-port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // 4 simulated devices + 2 Modbus meters, all seen within the run.
    let last = stdout
        .lines()
        .rfind(|l| l.contains("online"))
        .expect("progress lines");
    assert!(last.contains("devices 6/6 online"), "{last}");
    let stored: u64 = last
        .split("stored ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("stored frame count");
    assert!(stored > 20, "{last}");
    assert!(stdout.contains("MRV backend"), "{stdout}");
    // The saved config names the port the page really listened on.
    let url = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("diagnostics   http://"))
        .expect("diagnostics line in the banner");
    let addr = url.trim_end_matches('/');
    let saved = std::fs::read_to_string(dir.path().join("gateway.toml")).expect("saved config");
    assert!(
        saved.contains(&format!("[diagnostics]\nlisten = \"{addr}\"")),
        "banner says {addr}, config says:\n{saved}"
    );
    assert!(dir.path().join("buffer").exists() && dir.path().join("keys/gateway.key").exists());
}

/// The demo's story (issue 15): a device switched off for a while and a
/// forged frame in its name, then a summary from the signed reports. Every
/// figure the summary prints is checked against the report files it names
/// and against the `verify` command it prints, run here.
#[test]
fn demo_tells_the_story_of_a_fault_in_signed_and_verified_reports() {
    use base64::Engine;
    use mrv_shared::report::model::Report;
    use std::time::{SystemTime, UNIX_EPOCH};
    let bin = env!("CARGO_BIN_EXE_mrv-e2e-gateway");
    let dir = tempfile::tempdir().expect("tmp");
    // The fault runs 2 s to 6 s after the devices start; the run ends just
    // after the 1-minute report period holding it (start-up slack 3 s).
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let fault_end_ms = now_ms + 9_000;
    let period_end_ms = fault_end_ms - fault_end_ms % 60_000 + 60_000;
    let duration_s = (period_end_ms - now_ms).div_ceil(1000) + 1;
    let out = Command::new(bin)
        .args(["--log", "warn", "demo", "--duration"])
        .arg(duration_s.to_string())
        .args([
            "--interval-ms",
            "100",
            "--fault-after",
            "2",
            "--offline-for",
            "4",
            "--diagnostics-port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let summary = stdout
        .split("\nSummary\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    eprintln!("Summary\n{summary}");
    let line = |prefix: &str| -> &str {
        summary
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in the summary:\n{summary}"))
    };

    // The gateway's report files, as the summary's verify command names them.
    let mut reports: Vec<Report> = std::fs::read_dir(dir.path().join("reports"))
        .expect("reports dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jws"))
        .map(|p| {
            let jws = std::fs::read_to_string(&p).expect("report");
            let payload = jws.trim().split('.').nth(1).expect("compact JWS");
            let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .expect("base64url payload");
            serde_json::from_slice(&json).expect("a schema-2 report")
        })
        .collect();
    reports.sort_by_key(|r| r.header.seq);
    let n = reports.len();
    assert!(n >= 1, "no report signed:\n{stdout}");
    let signed = line("reports");
    assert!(
        signed.contains(&format!("{n} signed by the gateway"))
            && signed.contains(&format!("{n} accepted by the MRV backend"))
            && signed.contains(", 0 refused"),
        "{signed}"
    );
    assert!(line("verified").contains(&format!("{n} valid, 0 invalid")));

    // Every report states completeness: each device has its interval.
    for r in &reports {
        assert!(
            r.devices.iter().all(|d| d.sample_interval_ms.is_some()),
            "report {} has a device without an expected interval",
            r.header.seq
        );
        assert_eq!(r.calculations.len(), 4, "pv, pump, biogas, rice");
        for c in &r.calculations {
            assert!(c.completeness.iter().all(|b| b.expected.is_some()));
        }
    }

    // Completeness per device: the summary's counts are the reports' sums.
    let mut per_device: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for s in reports.iter().flat_map(|r| &r.series) {
        let e = per_device.entry(s.device.to_string()).or_default();
        e.0 += s.usable;
        e.1 += s.expected.expect("an expected count");
    }
    assert_eq!(
        per_device.len(),
        6,
        "4 simulated devices and 2 Modbus meters"
    );
    for (device, (usable, expected)) in &per_device {
        let l = summary
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{device} ")))
            .unwrap_or_else(|| panic!("no completeness line for {device}:\n{summary}"));
        assert!(l.contains(&format!("({usable} of {expected})")), "{l}");
        assert_eq!(
            l.contains("switched off: the injected fault"),
            device == "solar-01",
            "{l}"
        );
    }

    // The fault as the reports record it: a gap of about the time off in
    // solar-01's series, the forged frame refused and recorded.
    // (Gaps after its first sample: the first report's period began before
    // the devices started; a gap cut by a period boundary is one gap.)
    let energy: Vec<_> = reports
        .iter()
        .flat_map(|r| &r.series)
        .filter(|s| s.device.as_str() == "solar-01" && s.channel.as_str() == "energy")
        .collect();
    let first_sample = energy
        .iter()
        .filter_map(|s| s.first_ms)
        .min()
        .expect("solar-01 sampled");
    let mut gaps: Vec<(u64, u64)> = energy
        .iter()
        .flat_map(|s| &s.gaps)
        .filter(|g| g.reason == "no_data" && g.start_ms >= first_sample)
        .map(|g| (g.start_ms, g.end_ms))
        .collect();
    gaps.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in gaps {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    // (On a loaded machine a sample may come late: short gaps of a few
    // intervals happen; the switched-off time is the one long gap.)
    let off: Vec<u64> = merged
        .iter()
        .map(|(a, b)| b - a)
        .filter(|ms| *ms >= 2_000)
        .collect();
    assert!(
        off.len() == 1 && (3_500..=7_000).contains(&off[0]),
        "solar-01 was off 4 s once; its gaps after the first sample: {merged:?}"
    );
    let gap_text = format!("{:.1} s", off[0] as f64 / 1000.0);
    let fault = line("fault");
    assert!(
        fault.contains("solar-01 switched off")
            && fault.contains(&format!("the reports show it as a gap of {gap_text}")),
        "{fault}"
    );
    let forged = line("forged frame");
    assert!(
        forged.contains("refused by the gateway (bad_signature, quarantined)")
            && forged.contains("recorded as signature_rejected in report seq"),
        "{forged}"
    );
    assert!(
        reports.iter().flat_map(|r| &r.events).any(|e| {
            e.kind == mrv_shared::event::EventKind::SignatureRejected
                && e.device.as_ref().is_some_and(|d| d.as_str() == "solar-01")
        }),
        "no signature_rejected event for solar-01 in the reports"
    );

    // The printed command verifies the same files offline, and its exact
    // totals are the summary's ER per calculation.
    let command = summary
        .lines()
        .skip_while(|l| !l.contains("verify offline:"))
        .nth(1)
        .expect("the verify command");
    let mut words = command.split_whitespace();
    assert_eq!(words.next(), Some("mrv-gateway"));
    let verify = Command::new(bin).args(words).output().expect("verify runs");
    let verified = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && verified.contains(&format!("{n} reports, {n} valid, 0 invalid")),
        "{verified}\n{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let mut totals = 0;
    for t in verified.lines().filter(|l| l.starts_with("TOTAL")) {
        // `TOTAL   demo-gw pv: ER 123/456 tCO2e exactly, 0 tCO2e rounded down once`
        let (id, rest) = t
            .split_once(": ER ")
            .map(|(a, b)| (a.rsplit(' ').next().unwrap_or(a), b))
            .expect("a total line");
        let exact = rest.split(' ').next().expect("an exact ER");
        let l = line(&format!("{id} "));
        assert!(
            l.contains(&format!(") {exact} exactly")),
            "verify: {t}\nsummary: {l}"
        );
        totals += 1;
    }
    assert_eq!(totals, 4, "{verified}");
}
