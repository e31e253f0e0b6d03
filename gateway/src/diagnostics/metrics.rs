//! `/metrics`: the gateway's state in the Prometheus text exposition format
//! (version 0.0.4), rendered from the same views as the JSON API.
//!
//! Families (all gauges unless `_total`, which are counters since start):
//!
//! | metric | labels |
//! |---|---|
//! | `mrv_up`, `mrv_uptime_seconds` | |
//! | `mrv_mapping_messages_total`, `mrv_mapping_duplicates_total`, `mrv_mapping_retained_ignored_total`, `mrv_lorawan_uplinks_lost_total`, `mrv_lorawan_session_resets_total`, `mrv_lorawan_logs_total` | |
//! | `mrv_lorawan_device_uplinks_lost_total`, `mrv_lorawan_device_epoch` | `device`, `dev_eui` |
//! | `mrv_chart_memory_bytes`, `mrv_chart_memory_budget_bytes`, `mrv_chart_series`, `mrv_chart_points_dropped_total`, `mrv_chart_buckets_dropped_total` | |
//! | `mrv_mapping_dedup_memory_bytes`, `mrv_mapping_dedup_memory_budget_bytes`, `mrv_mapping_dedup_keys`, `mrv_mapping_dedup_keys_dropped_total` | |
//! | `mrv_ingest_messages_total`, `mrv_ingest_frames_stored_total`, `mrv_ingest_readings_stored_total`, `mrv_ingest_duplicates_total`, `mrv_ingest_refused_buffer_full_total`, `mrv_ingest_signatures_verified_total` | |
//! | `mrv_ingest_rejects_total` | `reason` |
//! | `mrv_mqtt_connections`, `mrv_mqtt_connections_accepted_total`, `mrv_mqtt_refused_total` (`reason`: `connection_limit`, `auth`, `malformed`, `oversized`, `protocol`, `not_authorized_publish`, `subscribe`, `timeout`), `mrv_mqtt_publishes_total` (`qos`), `mrv_mqtt_pubacks_total`, `mrv_mqtt_waits_for_space_total`, `mrv_mqtt_broker_sessions_lost_total`, `mrv_mqtt_broker_logins_refused_total` | |
//! | `mrv_ingest_write_failures_total`, `mrv_buffer_reopens_total`, `mrv_ingest_refused_unavailable_total` | |
//! | `mrv_disk_free_bytes`, `mrv_disk_total_bytes`, `mrv_disk_min_free_bytes`, `mrv_disk_low`, `mrv_disk_critical` | |
//! | `mrv_buffer_bytes`, `mrv_buffer_disk_bytes`, `mrv_buffer_max_bytes`, `mrv_buffer_depth_frames`, `mrv_buffer_unreported_readings`, `mrv_buffer_full`, `mrv_buffer_oldest_unreported_age_seconds` | |
//! | `mrv_report_head_seq`, `mrv_upload_backlog_reports`, `mrv_upload_lag_seconds`, `mrv_upload_errors_total` | |
//! | `mrv_device_last_frame_age_seconds`, `mrv_device_up` | `device` |
//! | `mrv_device_status` | `device`, `status` (1 for the device's current status) |
//! | `mrv_device_rejects_total` | `device`, `reason` (payloads naming a device; the rest only in `mrv_ingest_rejects_total`) |
//! | `mrv_modbus_polls_total`, `mrv_modbus_errors_total` | `device` (+ `kind` for errors) |
//! | `mrv_device_last_frame_age_seconds`, `mrv_device_up`, `mrv_device_degraded` | `device` |
//! | `mrv_modbus_polls_total`, `mrv_modbus_polls_degraded_total`, `mrv_modbus_polls_down_total`, `mrv_modbus_errors_total` | `device` (+ `kind` for errors) |
//! | `mrv_modbus_up`, `mrv_modbus_values`, `mrv_modbus_values_unavailable` | `device` |
//!
//! `mrv_device_up` is 1 while a device reports values (status `ok` or
//! `degraded`); `mrv_device_degraded` is 1 while some of its values are
//! unavailable. `mrv_modbus_up` is 1 while a polled device answers every
//! value, 0 while degraded or down (tell them apart with
//! `mrv_modbus_values_unavailable`).
//!
//! `mrv_upload_backlog_bytes`, `mrv_upload_backlog_age_seconds` and
//! `mrv_upload_backlog_alarm` come from the uploader's backlog measures
//! (`upload::backlog`).
//! `mrv_upload_lag_seconds` is the time since the uploader's last success
//! (`last_success_ms` of its status); `mrv_upload_consecutive_failures`,
//! `mrv_upload_error` (last attempt failed), `mrv_upload_rejections_total`,
//! `mrv_upload_requests_total`, `mrv_upload_reports_confirmed_total` and
//! `mrv_upload_errors_total` come from the same status (`consecutive_failures`,
//! `last_error`, `alarms`, `requests`, `reports_confirmed`, `errors`). All
//! are absent while no uploader is attached.

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
    let m = &s.mqtt;
    o.one(
        "mrv_ingest_write_failures_total",
        "counter",
        "Buffer writes that failed (I/O error, disk full).",
        i.write_failures,
    );
    o.one(
        "mrv_buffer_reopens_total",
        "counter",
        "Times the buffer was reopened in-process after a failed write.",
        i.buffer_reopens,
    );
    o.one(
        "mrv_ingest_refused_unavailable_total",
        "counter",
        "Frames refused (not acked) while the buffer was being reopened.",
        i.refused_unavailable,
    );
    if let Some(d) = &s.disk {
        if let (Some(free), Some(total)) = (d.free_bytes, d.total_bytes) {
            o.one(
                "mrv_disk_free_bytes",
                "gauge",
                "Bytes free for the gateway on the data directory's file system.",
                free,
            );
            o.one(
                "mrv_disk_total_bytes",
                "gauge",
                "Size of the data directory's file system.",
                total,
            );
        }
        o.one(
            "mrv_disk_min_free_bytes",
            "gauge",
            "Free space below which new frames are refused.",
            d.min_free_bytes,
        );
        o.one(
            "mrv_disk_low",
            "gauge",
            "1 while free space is below the alarm threshold (warn_free_bytes).",
            u8::from(d.level != "ok"),
        );
        o.one(
            "mrv_disk_critical",
            "gauge",
            "1 while free space is below min_free_bytes and new frames are refused.",
            u8::from(d.level == "critical"),
        );
    }
    o.one(
        "mrv_mqtt_connections",
        "gauge",
        "Device connections open at the embedded MQTT endpoint.",
        m.connections_open,
    );
    o.one(
        "mrv_mqtt_connections_accepted_total",
        "counter",
        "Connections accepted by the embedded MQTT endpoint.",
        m.connections_accepted,
    );
    o.family(
        "mrv_mqtt_refused_total",
        "counter",
        "Connections, publishes and subscriptions the embedded MQTT endpoint refused, by reason.",
    );
    for (reason, n) in [
        ("connection_limit", m.connections_refused_limit),
        ("auth", m.auth_failures),
        ("malformed", m.malformed),
        ("oversized", m.oversized),
        ("protocol", m.protocol_errors),
        ("not_authorized_publish", m.publish_not_authorized),
        ("subscribe", m.subscribe_refused),
        ("timeout", m.timeouts),
    ] {
        o.sample("mrv_mqtt_refused_total", &[("reason", reason)], n);
    }
    o.family(
        "mrv_mqtt_publishes_total",
        "counter",
        "Publishes received by the embedded MQTT endpoint, by QoS (QoS 0 is best effort).",
    );
    for (q, n) in [
        ("0", m.qos0_received),
        ("1", m.qos1_received),
        ("2", m.qos2_received),
    ] {
        o.sample("mrv_mqtt_publishes_total", &[("qos", q)], n);
    }
    o.one(
        "mrv_mqtt_pubacks_total",
        "counter",
        "PUBACK/PUBREC sent, each after the frame's durable outcome.",
        m.pubacks_sent,
    );
    o.one(
        "mrv_mqtt_waits_for_space_total",
        "counter",
        "Publishes whose PUBACK waited for buffer space.",
        m.waits_for_space,
    );
    o.one(
        "mrv_mqtt_broker_sessions_lost_total",
        "counter",
        "External broker reconnects where it had lost the gateway's session.",
        m.broker_sessions_lost,
    );
    o.one(
        "mrv_mqtt_broker_logins_refused_total",
        "counter",
        "External broker connection attempts where it refused the gateway's login.",
        m.broker_logins_refused,
    );
    o.one(
        "mrv_mapping_messages_total",
        "counter",
        "Third-party messages mapped to a frame.",
        i.mapped_messages,
    );
    o.one(
        "mrv_mapping_duplicates_total",
        "counter",
        "Third-party messages recognised as duplicates.",
        i.mapped_duplicates,
    );
    o.one(
        "mrv_mapping_retained_ignored_total",
        "counter",
        "Retained messages replayed by the external broker, ignored.",
        i.retained_ignored,
    );
    o.one(
        "mrv_lorawan_uplinks_lost_total",
        "counter",
        "LoRaWAN uplinks lost (fCnt jumps within an epoch).",
        i.lorawan_uplinks_lost,
    );
    o.one(
        "mrv_lorawan_session_resets_total",
        "counter",
        "LoRaWAN frame-counter epochs started (join, devAddr change, fCnt backwards).",
        i.lorawan_session_resets,
    );
    o.one(
        "mrv_lorawan_logs_total",
        "counter",
        "ChirpStack log events received (codec errors and others).",
        i.lorawan_logs,
    );
    let (c, d) = (&s.chart_memory, &s.dedup_memory);
    for (name, kind, help, v) in [
        (
            "mrv_chart_memory_bytes",
            "gauge",
            "Diagnostics charts: estimated bytes held.",
            c.used_bytes,
        ),
        (
            "mrv_chart_memory_budget_bytes",
            "gauge",
            "Diagnostics charts: memory budget (diagnostics.chart_memory_bytes).",
            c.budget_bytes,
        ),
        (
            "mrv_chart_series",
            "gauge",
            "Diagnostics charts: series (device, channel) kept.",
            c.series,
        ),
        (
            "mrv_chart_points_dropped_total",
            "counter",
            "Diagnostics charts: raw points dropped before the chart window ended (quota full; their minutes stay in buckets).",
            c.points_dropped,
        ),
        (
            "mrv_chart_buckets_dropped_total",
            "counter",
            "Diagnostics charts: buckets dropped for the budget (drawn as not kept).",
            c.buckets_dropped,
        ),
        (
            "mrv_mapping_dedup_memory_bytes",
            "gauge",
            "Mapping dedup memory: estimated bytes held.",
            d.used_bytes,
        ),
        (
            "mrv_mapping_dedup_memory_budget_bytes",
            "gauge",
            "Mapping dedup memory: budget.",
            d.budget_bytes,
        ),
        (
            "mrv_mapping_dedup_keys",
            "gauge",
            "Mapping dedup memory: keys remembered (pending and stored).",
            d.keys,
        ),
        (
            "mrv_mapping_dedup_keys_dropped_total",
            "counter",
            "Mapping dedup memory: keys dropped for the budget before their window ended (a duplicate of one would be stored).",
            d.dropped_keys,
        ),
    ] {
        o.one(name, kind, help, v);
    }
    o.family(
        "mrv_lorawan_device_uplinks_lost_total",
        "counter",
        "LoRaWAN uplinks lost per device and devEui since start.",
    );
    for l in &s.lorawan {
        o.sample(
            "mrv_lorawan_device_uplinks_lost_total",
            &[("device", &l.device), ("dev_eui", &l.dev_eui)],
            l.uplinks_lost,
        );
    }
    o.family(
        "mrv_lorawan_device_epoch",
        "gauge",
        "LoRaWAN frame-counter epoch per device and devEui (0 at start; +1 per join, devAddr change, fCnt going backwards).",
    );
    for l in &s.lorawan {
        o.sample(
            "mrv_lorawan_device_epoch",
            &[("device", &l.device), ("dev_eui", &l.dev_eui)],
            l.epoch,
        );
    }
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
        let field = |k: &str| up.get(k).and_then(serde_json::Value::as_u64);
        if let Some(e) = field("errors") {
            o.one(
                "mrv_upload_errors_total",
                "counter",
                "Failed upload attempts.",
                e,
            );
        }
        if let Some(e) = field("consecutive_failures") {
            o.one(
                "mrv_upload_consecutive_failures",
                "gauge",
                "Transient upload failures since the last success.",
                e,
            );
        }
        if let Some(b) = field("backlog_bytes") {
            o.one(
                "mrv_upload_backlog_bytes",
                "gauge",
                "Bytes of the reports waiting for the backend's confirmation.",
                b,
            );
        }
        if let Some(a) = field("backlog_age_ms") {
            o.one(
                "mrv_upload_backlog_age_seconds",
                "gauge",
                "Seconds since the oldest report waiting for the backend ended its period (0: none waits).",
                a / 1000,
            );
        }
        o.one(
            "mrv_upload_backlog_alarm",
            "gauge",
            "1 while the upload backlog alarm is raised (count, bytes or age at its limit).",
            u8::from(up.get("backlog_alarm").is_some_and(|e| !e.is_null())),
        );
        o.one(
            "mrv_upload_error",
            "gauge",
            "1 while the uploader's last attempt failed.",
            u8::from(up.get("last_error").is_some_and(|e| !e.is_null())),
        );
        if let Some(e) = field("alarms") {
            o.one(
                "mrv_upload_rejections_total",
                "counter",
                "Reports the backend refused permanently.",
                e,
            );
        }
        if let Some(e) = field("requests") {
            o.one(
                "mrv_upload_requests_total",
                "counter",
                "Upload requests sent.",
                e,
            );
        }
        if let Some(e) = field("reports_confirmed") {
            o.one(
                "mrv_upload_reports_confirmed_total",
                "counter",
                "Reports the backend confirmed since start.",
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
    o.family(
        "mrv_device_up",
        "gauge",
        "1 when the device reports values (status ok or degraded).",
    );
    for r in rows {
        o.sample(
            "mrv_device_up",
            &[("device", &r.id)],
            u8::from(r.status == "ok" || r.status == "degraded"),
        );
    }
    o.family(
        "mrv_device_degraded",
        "gauge",
        "1 when the device reports only some of its values.",
    );
    for r in rows {
        o.sample(
            "mrv_device_degraded",
            &[("device", &r.id)],
            u8::from(r.status == "degraded"),
        );
    }
    o.family(
        "mrv_device_status",
        "gauge",
        "1 for the device's status (ok, degraded, stale, failing, silent).",
    );
    for r in rows {
        o.sample(
            "mrv_device_status",
            &[("device", &r.id), ("status", &r.status)],
            1,
        );
    }
    o.family(
        "mrv_device_rejects_total",
        "counter",
        "Rejected payloads naming the device, by reason, since start.",
    );
    for r in rows {
        for (reason, n) in &r.rejects_by_reason {
            o.sample(
                "mrv_device_rejects_total",
                &[("device", &r.id), ("reason", reason)],
                n,
            );
        }
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
            "mrv_modbus_polls_degraded_total",
            "counter",
            "Modbus polls that read some but not all values.",
        );
        for (dev, st) in m {
            o.sample(
                "mrv_modbus_polls_degraded_total",
                &[("device", dev)],
                st.polls_degraded,
            );
        }
        o.family(
            "mrv_modbus_polls_down_total",
            "counter",
            "Modbus polls that read no value.",
        );
        for (dev, st) in m {
            o.sample(
                "mrv_modbus_polls_down_total",
                &[("device", dev)],
                st.polls_down,
            );
        }
        o.family(
            "mrv_modbus_up",
            "gauge",
            "1 while the last poll read every value.",
        );
        for (dev, st) in m {
            o.sample(
                "mrv_modbus_up",
                &[("device", dev)],
                u8::from(st.state.as_deref() == Some("up")),
            );
        }
        o.family(
            "mrv_modbus_values",
            "gauge",
            "Values configured per polled device.",
        );
        for (dev, st) in m {
            o.sample("mrv_modbus_values", &[("device", dev)], st.values_total);
        }
        o.family(
            "mrv_modbus_values_unavailable",
            "gauge",
            "Values unavailable in the last poll.",
        );
        for (dev, st) in m {
            o.sample(
                "mrv_modbus_values_unavailable",
                &[("device", dev)],
                st.values_total.saturating_sub(st.values_good),
            );
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

    fn status_with_upload(upload: serde_json::Value) -> StatusView {
        let uploads =
            crate::diagnostics::api::uploads_view(None, Some(2), Some(5), Some(upload), true);
        serde_json::from_value(serde_json::json!({
            "site": {"id": "s", "name": "", "project": "", "methodology": ""},
            "gateway": "g", "version": "0", "now_ms": 100_000, "uptime_s": 5, "auth": false,
            "devices": {"total": 0, "ok": 0, "stale": 0, "failing": 0, "silent": 0},
            "buffer": {"depth_frames": 0, "unreported_readings": 0, "frames": 0, "readings": 0,
                "bytes": 0, "disk_bytes": 0, "max_bytes": 1, "fill_percent": 0.0,
                "oldest_unreported_ms": null, "oldest_unreported_age_s": null, "full": false,
                "full_events": 0, "alarm": null},
            "ingest": {"messages": 0, "frames_stored": 0, "readings_stored": 0, "duplicates": 0,
                "refused_buffer_full": 0, "commits": 0, "acks_published": 0,
                "signatures_verified": 0, "rejects": {}, "rejects_total": 0},
            "uploads": serde_json::to_value(uploads).expect("serialises"),
            "modbus": null
        }))
        .expect("a valid status")
    }

    #[test]
    fn upload_status_becomes_metrics_and_a_page_without_url_credentials() {
        let s = status_with_upload(serde_json::json!({
            "url": "https://site7:s3cret-pw@backend.invalid/mrv",
            "last_success_ms": 40_000, "last_error": "HTTP 503", "next_retry_ms": 130_000,
            "consecutive_failures": 3, "alarms": 1, "requests": 9, "reports_confirmed": 4,
            "rejected": {"seq": 6, "reason": "bad signature"}
        }));
        let m = render(&s, &[]);
        for line in [
            "mrv_upload_lag_seconds 60",
            "mrv_upload_backlog_reports 2",
            "mrv_upload_consecutive_failures 3",
            "mrv_upload_error 1",
            "mrv_upload_rejections_total 1",
            "mrv_upload_requests_total 9",
        ] {
            assert!(m.lines().any(|l| l == line), "missing {line} in\n{m}");
        }
        let html = crate::diagnostics::page::overview(&s, &[], &[]);
        assert!(
            !html.contains("s3cret-pw") && !html.contains("site7"),
            "{html}"
        );
        assert!(html.contains("backend.invalid/mrv"));
        assert!(html.contains("id=\"upload-alarm\"") && html.contains("last error: HTTP 503"));
        assert!(!m.contains("s3cret-pw"));
    }

    #[test]
    fn an_upload_backlog_alarm_becomes_metrics_and_a_warning_in_the_health_banner() {
        let alarm =
            "upload backlog: 49 reports, 7 bytes, oldest waiting 400 min since its period ended";
        let s = status_with_upload(serde_json::json!({
            "url": "https://backend.invalid/", "last_error": "connection refused",
            "backlog_bytes": 123_456, "backlog_age_ms": 24_000_000, "backlog_alarm": alarm,
        }));
        let m = render(&s, &[]);
        for line in [
            "mrv_upload_backlog_bytes 123456",
            "mrv_upload_backlog_age_seconds 24000",
            "mrv_upload_backlog_alarm 1",
        ] {
            assert!(m.lines().any(|l| l == line), "missing {line} in\n{m}");
        }
        let h = crate::diagnostics::api::health(
            &s,
            crate::diagnostics::api::HealthFacts {
                ingest_subscribed: true,
                ..Default::default()
            },
        );
        let up = h
            .items
            .iter()
            .find(|i| i.name == "upload")
            .expect("upload item");
        assert_eq!((up.status.as_str(), up.detail.as_str()), ("warn", alarm));
        // Without the alarm: 0, and the banner shows the last error.
        let s = status_with_upload(serde_json::json!({
            "url": "https://backend.invalid/", "last_error": "connection refused",
            "backlog_bytes": 0, "backlog_age_ms": 0, "backlog_alarm": null,
        }));
        assert!(
            render(&s, &[])
                .lines()
                .any(|l| l == "mrv_upload_backlog_alarm 0")
        );
        let h = crate::diagnostics::api::health(&s, Default::default());
        let up = h
            .items
            .iter()
            .find(|i| i.name == "upload")
            .expect("upload item");
        assert!(up.detail.contains("connection refused"), "{}", up.detail);
    }

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
