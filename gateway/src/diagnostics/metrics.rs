//! `/metrics`: the gateway's state in the Prometheus text exposition format
//! (version 0.0.4), rendered from the same views as the JSON API.
//!
//! Families (all gauges unless `_total`, which are counters since start):
//!
//! | metric | labels |
//! |---|---|
//! | `mrv_up`, `mrv_uptime_seconds` | |
//! | `mrv_ingest_messages_total`, `mrv_ingest_frames_stored_total`, `mrv_ingest_readings_stored_total`, `mrv_ingest_duplicates_total`, `mrv_ingest_refused_buffer_full_total`, `mrv_ingest_signatures_verified_total` | |
//! | `mrv_ingest_rejects_total` | `reason` |
//! | `mrv_buffer_bytes`, `mrv_buffer_disk_bytes`, `mrv_buffer_max_bytes`, `mrv_buffer_depth_frames`, `mrv_buffer_unreported_readings`, `mrv_buffer_full`, `mrv_buffer_oldest_unreported_age_seconds` | |
//! | `mrv_report_head_seq`, `mrv_upload_backlog_reports`, `mrv_upload_lag_seconds`, `mrv_upload_errors_total` | |
//! | `mrv_device_last_frame_age_seconds`, `mrv_device_up` | `device` |
//! | `mrv_modbus_polls_total`, `mrv_modbus_errors_total` | `device` (+ `kind` for errors) |
//!
//! `mrv_upload_lag_seconds` is the time since the uploader's last success
//! (`last_success_ms` of its status); `mrv_upload_errors_total` its `errors`
//! field. Both are absent while no uploader is attached.

use super::api::{DeviceRow, StatusView};
use std::fmt::Write as _;

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, x)| format!("{k}=\"{}\"", label(x)))
                .collect();
            let _ = writeln!(self.0, "{name}{{{}}} {v}", l.join(","));
        }
    }
    fn one(&mut self, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], v);
    }
}

/// Renders the metrics text.
pub fn render(s: &StatusView, rows: &[DeviceRow]) -> String {
    let mut o = Out(String::with_capacity(4096));
    o.one("mrv_up", "gauge", "1 while the gateway answers.", 1);
    o.one(
        "mrv_uptime_seconds",
        "gauge",
        "Seconds since the diagnostics server started.",
        s.uptime_s,
    );
    let i = &s.ingest;
    o.one(
        "mrv_ingest_messages_total",
        "counter",
        "MQTT publishes received on the uplink topics.",
        i.messages,
    );
    o.one(
        "mrv_ingest_frames_stored_total",
        "counter",
        "Frames durably stored.",
        i.frames_stored,
    );
    o.one(
        "mrv_ingest_readings_stored_total",
        "counter",
        "Readings durably stored.",
        i.readings_stored,
    );
    o.one(
        "mrv_ingest_duplicates_total",
        "counter",
        "Frames received again after being stored.",
        i.duplicates,
    );
    o.one(
        "mrv_ingest_refused_buffer_full_total",
        "counter",
        "Frames refused because the buffer was full.",
        i.refused_buffer_full,
    );
    o.one(
        "mrv_ingest_signatures_verified_total",
        "counter",
        "Frames whose device signature verified.",
        i.signatures_verified,
    );
    o.family(
        "mrv_ingest_rejects_total",
        "counter",
        "Rejected payloads by reason.",
    );
    for (reason, n) in &i.rejects {
        o.sample("mrv_ingest_rejects_total", &[("reason", reason)], n);
    }
    let b = &s.buffer;
    o.one(
        "mrv_buffer_bytes",
        "gauge",
        "Logical bytes kept in the buffer (what the limit counts).",
        b.bytes,
    );
    o.one(
        "mrv_buffer_disk_bytes",
        "gauge",
        "Bytes of the buffer on disk.",
        b.disk_bytes,
    );
    o.one(
        "mrv_buffer_max_bytes",
        "gauge",
        "Buffer byte limit.",
        b.max_bytes,
    );
    o.one(
        "mrv_buffer_depth_frames",
        "gauge",
        "Frames not yet covered by a report.",
        b.depth_frames,
    );
    o.one(
        "mrv_buffer_unreported_readings",
        "gauge",
        "Readings not yet covered by a report.",
        b.unreported_readings,
    );
    o.one(
        "mrv_buffer_full",
        "gauge",
        "1 while the buffer refuses new frames.",
        u8::from(b.full),
    );
    if let Some(a) = b.oldest_unreported_age_s {
        o.one(
            "mrv_buffer_oldest_unreported_age_seconds",
            "gauge",
            "Age of the oldest frame not yet in a report.",
            a,
        );
    }
    let u = &s.uploads;
    if let Some(h) = u.head_seq {
        o.one(
            "mrv_report_head_seq",
            "gauge",
            "Sequence number of the newest stored report.",
            h,
        );
    }
    if let Some(bl) = u.backlog {
        o.one(
            "mrv_upload_backlog_reports",
            "gauge",
            "Reports stored but not yet confirmed by the backend.",
            bl,
        );
    }
    if let Some(up) = &u.upload {
        if let Some(t) = up
            .get("last_success_ms")
            .and_then(serde_json::Value::as_u64)
        {
            o.one(
                "mrv_upload_lag_seconds",
                "gauge",
                "Seconds since the last successful upload.",
                s.now_ms.saturating_sub(t) / 1000,
            );
        }
        if let Some(e) = up.get("errors").and_then(serde_json::Value::as_u64) {
            o.one(
                "mrv_upload_errors_total",
                "counter",
                "Failed upload attempts.",
                e,
            );
        }
    }
    o.family(
        "mrv_device_last_frame_age_seconds",
        "gauge",
        "Seconds since the device's last stored frame.",
    );
    for r in rows {
        if let Some(a) = r.age_s {
            o.sample("mrv_device_last_frame_age_seconds", &[("device", &r.id)], a);
        }
    }
    o.family("mrv_device_up", "gauge", "1 when the device status is ok.");
    for r in rows {
        o.sample(
            "mrv_device_up",
            &[("device", &r.id)],
            u8::from(r.status == "ok"),
        );
    }
    if let Some(m) = &s.modbus {
        o.family(
            "mrv_modbus_polls_total",
            "counter",
            "Modbus polls done, by device.",
        );
        for (dev, st) in m {
            o.sample("mrv_modbus_polls_total", &[("device", dev)], st.polls);
        }
        o.family(
            "mrv_modbus_errors_total",
            "counter",
            "Modbus polls with a failure, by device and kind.",
        );
        for (dev, st) in m {
            for (kind, n) in &st.errors {
                o.sample(
                    "mrv_modbus_errors_total",
                    &[("device", dev), ("kind", kind)],
                    n,
                );
            }
        }
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn samples_with_labels_follow_the_text_format() {
        let mut o = Out(String::new());
        o.family("m_total", "counter", "Help.");
        o.sample("m_total", &[("device", "pv-01"), ("kind", "timeout")], 3);
        assert_eq!(
            o.0,
            "# HELP m_total Help.\n# TYPE m_total counter\nm_total{device=\"pv-01\",kind=\"timeout\"} 3\n"
        );
    }
}
