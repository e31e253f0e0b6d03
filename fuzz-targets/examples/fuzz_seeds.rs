//! Writes the seed corpus of every fuzz target from the repository's test
//! vectors, example configs and documented payloads:
//! `cargo run -p mrv-fuzz-targets --example fuzz_seeds -- fuzz/seeds`.
//! The committed corpus (`fuzz/corpus/`) is these seeds plus what the
//! fuzzer found, minimised (`cargo fuzz cmin`); see docs/RELIABILITY.md.

use mrv_shared::report::jws::parse_compact;
use mrv_shared::wire::{Ack, AckStatus, binary, json};
use std::path::{Path, PathBuf};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn read(rel: &str) -> Vec<u8> {
    let p = Path::new(ROOT).join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

struct Seeds {
    dir: PathBuf,
    n: usize,
}

impl Seeds {
    fn put(&mut self, target: &str, bytes: &[u8]) {
        let d = self.dir.join(target);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join(format!("seed-{:03}", self.n)), bytes).expect("write seed");
        self.n += 1;
    }
}

const JSON_EXAMPLE: &str = r#"{"v":1,"site":"site-a","device":"th-logger-3","seq":42,"boot":1,"fw":"acme-2.1","time_ms":1764115200000,"readings":[{"channel":"energy","quantity":"energy","kind":"counter","value":123456},{"channel":"power","quantity":"power","value":870250,"offset_ms":500,"quality":4}]}"#;

fn jws_files() -> Vec<PathBuf> {
    let mut out = vec![Path::new(ROOT).join("shared/tests/vectors/report_pv_golden.jws")];
    for kind in ["good", "tamper"] {
        let base = Path::new(ROOT).join("shared/tests/vectors").join(kind);
        for case in std::fs::read_dir(&base).expect("vectors").flatten() {
            for f in std::fs::read_dir(case.path()).expect("case").flatten() {
                if f.path().extension().is_some_and(|x| x == "jws") {
                    out.push(f.path());
                }
            }
        }
    }
    out.sort();
    out
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| Path::new(ROOT).join("fuzz/seeds"), PathBuf::from);
    let mut s = Seeds { dir, n: 0 };

    // Frames: the documented JSON example, the signed vector frame.
    let example = json::decode_frame(JSON_EXAMPLE.as_bytes()).expect("documented example");
    let vector: serde_json::Value =
        serde_json::from_slice(&read("shared/tests/vectors/frame_signed.json")).expect("json");
    let hex = vector["signing_bytes_hex"].as_str().expect("hex");
    let mut signed: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let sig =
        mrv_shared::report::jwk::unb64(vector["signature"].as_str().expect("sig")).expect("b64");
    signed.extend_from_slice(&sig);
    let signed_frame = binary::decode_frame_exact(&signed).expect("the vector frame decodes");
    let mut no_time = example.clone();
    no_time.base_time_ms = None;
    for f in [&example, &signed_frame, &no_time] {
        s.put("wire_binary", &binary::encode_frame(f));
        s.put("wire_json", &json::encode_frame(f));
    }
    s.put("wire_json", JSON_EXAMPLE.as_bytes());
    for status in [
        AckStatus::Ok,
        AckStatus::BufferFull,
        AckStatus::SeqRegressed,
    ] {
        let ack = Ack {
            acked_seq: 42,
            status,
        };
        s.put("wire_binary", &binary::encode_ack(&ack));
        s.put("wire_json", &json::encode_ack(&ack));
    }
    s.put("wire_json", b"mrv/site-a/pv-01/up");

    // Reports: every vector as uploaded (mode 0), its payload to be signed
    // by the fuzz key (mode 1), and a few edits of the good report (mode 2).
    for f in jws_files() {
        let bytes = std::fs::read(&f).expect("jws");
        s.put("report_verify", &[&[0u8][..], &bytes].concat());
        if let Ok(jws) = parse_compact(&bytes) {
            s.put("report_verify", &[&[1u8][..], &jws.payload].concat());
        }
    }
    for edits in [
        &[2u8, 10, 0, 0x81][..],
        &[2, 0x40, 0x01, b'A'],
        &[2, 0xff, 0xff, 0],
    ] {
        s.put("report_verify", edits);
    }

    // Configs.
    for f in [
        "config/gateway.example.toml",
        "config/mappings/shelly_gen2_switch.toml",
        "config/mappings/tasmota_energy_plug.toml",
    ] {
        let mut text = read("config/gateway.example.toml");
        if f != "config/gateway.example.toml" {
            text.extend_from_slice(b"\n");
            text.extend_from_slice(&read(f));
        }
        s.put("gateway_config", &text);
    }
    let minimal = "[site]\nid = \"site-a\"\n[gateway]\nid = \"gw-1\"\ndata_dir = \"data\"\n";
    s.put("gateway_config", minimal.as_bytes());
    s.put(
        "gateway_config",
        format!(
            "{minimal}[[modbus.devices]]\nid = \"pv-inverter-1\"\nhost = \"192.0.2.10\"\nport = 502\nunit = 1\nprofile = \"sunspec\"\n\
             [[modbus.devices.registers]]\nname = \"power\"\nfunction = \"holding\"\naddress = 100\ntype = \"i32\"\nscale = 0.1\nquantity = \"power\"\nunit = \"W\"\n"
        )
        .as_bytes(),
    );
    s.put(
        "gateway_config",
        format!(
            "{minimal}[[modbus.devices]]\nid = \"meter-1\"\nhost = \"127.0.0.1\"\nprofile = \"din_meter\"\n"
        )
        .as_bytes(),
    );

    // Modbus: every type in every order, unit scale, then a scaled one.
    for t in 0u8..10 {
        for o in 0u8..4 {
            let mut v = vec![t, o, 0, 32];
            v.extend_from_slice(&1i64.to_le_bytes());
            v.extend_from_slice(&1i64.to_le_bytes());
            v.extend_from_slice(&0i64.to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes());
            v.extend_from_slice(&[0x41, 0x20, 0, 0, 0x01, 0x02, 0x03, 0x04]);
            s.put("modbus_decode", &v);
        }
    }
    let mut v = vec![3u8, 0, 0x1d, 31];
    v.extend_from_slice(&1000i64.to_le_bytes());
    v.extend_from_slice(&10i64.to_le_bytes());
    v.extend_from_slice(&(-5i64).to_le_bytes());
    v.extend_from_slice(&0xfffeu16.to_le_bytes());
    v.extend_from_slice(&[0xff, 0xff, 0xff, 0xf0]);
    s.put("modbus_decode", &v);

    // Diagnostics queries, with a hostile quarantined message.
    for q in [
        &b"range=24h"[..],
        b"range=7d&limit=5&after_ms=1764590400000",
        b"device=pv-1\0mrv/site-a/pv-1/up\0pv-1\0{\"v\":1,\"x\":\"<script>alert(1)</script>\"}",
        b"limit=18446744073709551615&device=%3Cb%3E\0t<i>\0<b>\0\xff\xfe\x01'\"&",
        b"pv-01",
        b"localhost:8080",
    ] {
        s.put("diagnostics_query", q);
    }

    // Mapping payloads, one per mapping, as documented in config/mappings.
    for (choice, payload) in [
        (
            0u8,
            &br#"{"id":0,"source":"init","output":true,"apower":1500.25,"voltage":230.1,"freq":50.0,"current":6.523,"aenergy":{"total":12345.678,"by_minute":[1,2,3],"minute_ts":1764590400},"temperature":{"tC":41.2,"tF":106.2}}"#[..],
        ),
        (
            1,
            br#"{"Time":"2025-12-01T12:00:00Z","ENERGY":{"TotalStartTime":"2025-01-01T00:00:00","Total":123.456,"Yesterday":1.2,"Today":0.5,"Power":870,"ApparentPower":900,"ReactivePower":100,"Factor":0.97,"Voltage":230,"Current":3.9}}"#,
        ),
        (
            2,
            br#"{"dev":"a1","ts":1764590400.5,"n":5,"vals":[12.5,300]}"#,
        ),
        (
            3,
            br#"{"deduplicationId":"d-1","time":"2025-12-01T12:00:00.482+00:00","deviceInfo":{"applicationId":"app-1","deviceName":"awd-tube-3","devEui":"a84041000181c0d3","tags":{}},"devAddr":"00e1a2b3","fCnt":10,"fPort":2,"object":{"water_level_cm":-3.5},"rxInfo":[{"gatewayId":"0016c001f153a14c","rssi":-97,"snr":7.5}]}"#,
        ),
        (
            4,
            br#"{"deduplicationId":"j-1","time":"2025-12-01T12:00:00+00:00","deviceInfo":{"applicationId":"app-1","deviceName":"awd-tube-3","devEui":"a84041000181c0d3","tags":{}},"devAddr":"00e1a2b3"}"#,
        ),
        (5, b"other/topic\0{}"),
    ] {
        s.put("mapping_payload", &[&[choice, 0][..], payload].concat());
    }
    s.put("mapping_payload", &[&[0u8, 1][..], b"{}"].concat());
    println!("{} seeds in {}", s.n, s.dir.display());
}
