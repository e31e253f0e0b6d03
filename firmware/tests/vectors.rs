//! Byte-exact vectors for the firmware's own formats, committed as files
//! in `tests/vectors/` with a comment per field: the analyser UART frame,
//! the modem link frame and the flash journal layout.
#![allow(clippy::unwrap_used)]

use embedded_storage::nor_flash::ReadNorFlash;
use mrv_firmware::drivers::ch4_uart::{BiogasReading, FrameParser, encode};
use mrv_firmware::serial_link::{AckParser, encode_ack_frame};
use mrv_firmware::storage::journal::{Journal, Snapshot};
use mrv_firmware::storage::ram_flash::RamFlash;
use mrv_shared::wire::{Ack, AckStatus};

/// Reads a vector file: on each non-comment line, the leading two-digit
/// hex tokens are bytes; the rest of the line is its comment.
fn vector(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        for tok in line.split_whitespace() {
            match u8::from_str_radix(tok, 16) {
                Ok(b) if tok.len() == 2 => out.push(b),
                _ => break,
            }
        }
    }
    out
}

#[test]
fn ch4_uart_frames_match_the_vectors() {
    for (name, r) in [
        (
            "ch4_uart_ch4_only.txt",
            BiogasReading {
                ch4_centi_pct: 5850,
                flow_ml_min: None,
            },
        ),
        (
            "ch4_uart_with_flow.txt",
            BiogasReading {
                ch4_centi_pct: 6012,
                flow_ml_min: Some(20_833),
            },
        ),
    ] {
        let v = vector(name);
        let (b, n) = encode(&r);
        assert_eq!(&b[..n], &v[..], "{name}");
        let mut p = FrameParser::new();
        let got: Vec<_> = v.iter().filter_map(|x| p.push(*x)).collect();
        assert_eq!(got, [Ok(r)], "{name}");
    }
}

#[test]
fn modem_ack_frame_matches_the_vector() {
    let v = vector("serial_link_ack.txt");
    let ack = Ack {
        acked_seq: 77,
        status: AckStatus::Ok,
    };
    assert_eq!(encode_ack_frame(&ack).to_vec(), v);
    let mut p = AckParser::new();
    let got: Vec<_> = v.iter().filter_map(|b| p.push(*b)).collect();
    assert_eq!(got, [ack]);
}

#[test]
fn journal_layout_matches_the_vector() {
    let v = vector("journal_first_sector.txt");
    assert_eq!(v.len(), 80);
    let mut j = Journal::open(RamFlash::new(3), 0, 3).unwrap();
    j.write_state(Snapshot {
        boot: 2,
        next_seq: 17,
        acked_seq: 15,
        counters: [123_456, 0, 0, 0],
    })
    .unwrap();
    let mut flash = j.into_flash();
    let mut got = vec![0u8; 80];
    flash.read(0, &mut got).unwrap();
    assert_eq!(got, v);
    // And it replays to the same state.
    let j = Journal::open(flash, 0, 3).unwrap();
    assert_eq!(j.snapshot().next_seq, 17);
    assert_eq!(j.snapshot().counters[0], 123_456);
}
