//! Server-side HTML of the diagnostics pages (pure functions of the API views).
//!
//! Every page is complete without JavaScript: the device table, values (in
//! display units, see [`mrv_shared::display`]) and charts (inline SVG, see
//! [`super::chart`]) are rendered here, so a technician's browser with no
//! internet (and a headless test browser) sees the data at once. The small
//! script in `assets/app.js` only refreshes the live part every few seconds,
//! appends the MQTT tail and submits the Modbus probe form. No CDN, no
//! external font: the CSS and script are compiled into the binary.
//!
//! Layout: usable from 400 px wide (a phone) to a desktop; at narrow widths
//! the device table turns into one card per device and wide tables scroll
//! inside their own box, so the page itself never scrolls sideways.
//!
//! Invariant: every piece of text that came from outside (device ids,
//! details, log lines, config, rejected payloads) goes through [`esc`].

use super::api::{
    BufferView, ChannelSeries, DeviceDetail, DeviceRow, EventView, HealthView, QuarantineEntry,
    StatusView, UploadsView,
};
use super::chart::{self, ChartSpec};
use super::logs::LogLine;
use super::probe::ProbeTarget;
use super::state::Range;
use std::fmt::Write as _;

/// The stylesheet (`/assets/style.css`).
pub const STYLE_CSS: &str = include_str!("assets/style.css");
/// The script (`/assets/app.js`).
pub const APP_JS: &str = include_str!("assets/app.js");

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Bytes with a binary unit: "512 B", "9.5 KiB", "1.0 GiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// "12 s", "5 min", "3 h", "2 d".
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// Unix ms as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn utc(ms: u64) -> String {
    crate::clock::utc_seconds(ms)
}

fn layout(title: &str, site: &str, active: &str, body: &str) -> String {
    let mut nav = String::new();
    for (href, label) in [
        ("/", "Overview"),
        ("/events", "Events"),
        ("/logs", "Logs"),
        ("/modbus", "Modbus"),
        ("/quarantine", "Quarantine"),
        ("/metrics", "Metrics"),
    ] {
        let cls = if href == active {
            " class=\"active\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{cls}>{label}</a>");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · {}</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
         <script src=\"/assets/app.js\" defer></script></head><body>\
         <header><span class=\"brand\">MRV Gateway</span><span class=\"site\">{}</span>\
         <nav>{nav}</nav></header><main>{body}</main></body></html>\n",
        esc(title),
        esc(site),
        esc(site)
    )
}

fn status_badge(status: &str) -> String {
    format!(
        "<span class=\"badge st-{}\">{}</span>",
        esc(status),
        esc(status)
    )
}

fn value_html(v: &super::api::ChannelValue) -> String {
    if v.available {
        format!(
            "<b title=\"{} {}\">{}</b>",
            v.value,
            esc(&v.unit),
            esc(&v.display)
        )
    } else {
        format!(
            "<b class=\"unavailable\" title=\"{}\">unavailable</b>",
            esc(&v.quality.join(", "))
        )
    }
}

/// The health banner: one chip per part, coloured by status.
pub fn health_banner(h: &HealthView) -> String {
    let mut b = format!(
        "<section class=\"health h-{}\" id=\"health\" aria-label=\"gateway health\">",
        esc(&h.overall)
    );
    for i in &h.items {
        let _ = write!(
            b,
            "<div class=\"hitem h-{st}\" data-part=\"{n}\"><b>{n}</b> <span class=\"hst\">{st}</span>\
             <div class=\"small\">{}</div></div>",
            esc(&i.detail),
            n = esc(&i.name),
            st = esc(&i.status),
        );
    }
    b.push_str("</section>");
    b
}

fn device_table(rows: &[DeviceRow]) -> String {
    let mut t = String::from(
        "<table id=\"devices\" class=\"devices\"><thead><tr><th>Device</th><th>Kind</th>\
         <th>Status</th><th>Last frame</th><th>Values</th><th>Quality</th>\
         <th>Signature</th><th>Acked seq</th><th>Missing</th><th>Rejects</th></tr></thead><tbody>",
    );
    if rows.is_empty() {
        t.push_str(
            "<tr><td colspan=\"10\" class=\"muted\">no devices registered or seen yet</td></tr>",
        );
    }
    for r in rows {
        let values: Vec<String> = r
            .values
            .iter()
            .map(|v| {
                format!(
                    "<span class=\"val\" data-channel=\"{}\">{}&nbsp;{}</span>",
                    esc(&v.channel),
                    esc(&v.channel),
                    value_html(v)
                )
            })
            .collect();
        let quality = if r.quality.is_empty() {
            "<span class=\"good\">good</span>".to_string()
        } else {
            format!("<span class=\"bad\">{}</span>", esc(&r.quality.join(", ")))
        };
        let _ = write!(
            t,
            "<tr class=\"device-row st-{st}\" data-device=\"{id}\" title=\"{reason}\">\
             <td data-label=\"Device\"><a href=\"/devices/{id}\">{id}</a><div class=\"muted small\">{serial}</div></td>\
             <td data-label=\"Kind\">{kind}</td><td data-label=\"Status\">{badge}<div class=\"small\">{reason}</div></td>\
             <td data-label=\"Last frame\">{last}</td>\
             <td class=\"values\" data-label=\"Values\">{values}</td><td data-label=\"Quality\">{quality}</td>\
             <td class=\"sig-{sig}\" data-label=\"Signature\">{sig}</td>\
             <td data-label=\"Acked seq\">{acked}</td><td data-label=\"Missing\">{missing}</td>\
             <td class=\"rejects\" data-label=\"Rejects\">{rejects}</td></tr>",
            st = esc(&r.status),
            id = esc(&r.id),
            serial = esc(&r.serial),
            kind = esc(&r.kind),
            badge = status_badge(&r.status),
            reason = esc(&r.status_reason),
            last = r
                .age_s
                .map_or_else(|| "never".to_string(), |a| format!("{} ago", age(a))),
            values = if values.is_empty() {
                "<span class=\"muted\">-</span>".to_string()
            } else {
                values.join(" ")
            },
            sig = esc(&r.signature),
            acked = r.acked_seq,
            missing = r.missing_frames,
            rejects = if r.rejects == 0 {
                "0".to_string()
            } else {
                format!(
                    "<a class=\"bad\" href=\"/quarantine?device={}\">{}</a>",
                    esc(&r.id),
                    r.rejects
                )
            },
        );
    }
    t.push_str("</tbody></table>");
    t
}

fn buffer_card(b: &BufferView) -> String {
    let mut c = String::from("<section class=\"card\" id=\"buffer\"><h2>Buffer</h2>");
    if let Some(a) = &b.alarm {
        let _ = write!(
            c,
            "<div class=\"alarm\" id=\"buffer-alarm\">{}</div>",
            esc(a)
        );
    }
    let _ = write!(
        c,
        "<dl><dt>Depth (unreported frames)</dt><dd id=\"buffer-depth\">{}</dd>\
         <dt>Unreported readings</dt><dd>{}</dd>\
         <dt>Bytes</dt><dd>{} of {} ({:.1} %)<div class=\"bar\"><span style=\"width:{:.1}%\"></span></div></dd>\
         <dt>On disk</dt><dd>{}</dd><dt>Oldest unreported</dt><dd>{}</dd>\
         <dt>Kept</dt><dd>{} frames, {} readings</dd><dt>Full events</dt><dd>{}</dd></dl></section>",
        b.depth_frames,
        b.unreported_readings,
        bytes(b.bytes),
        bytes(b.max_bytes),
        b.fill_percent,
        b.fill_percent.min(100.0),
        bytes(b.disk_bytes),
        b.oldest_unreported_age_s
            .map_or_else(|| "-".to_string(), |a| format!("{} ago", age(a))),
        b.frames,
        b.readings,
        b.full_events
    );
    c
}

fn json_scalar(v: &serde_json::Value, key: &str, now_ms: u64) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::Number(n) if key.ends_with("_ms") => n.as_u64().map_or_else(
            || n.to_string(),
            |t| {
                if t > now_ms {
                    format!("{} (in {})", utc(t), age((t - now_ms) / 1000))
                } else {
                    format!("{} ({} ago)", utc(t), age((now_ms - t) / 1000))
                }
            },
        ),
        serde_json::Value::String(s) => esc(s),
        other => esc(&other.to_string()),
    }
}

fn uploads_card(u: &UploadsView, now_ms: u64) -> String {
    let mut c = String::from("<section class=\"card\" id=\"uploads\"><h2>Reports and uploads</h2>");
    if !u.reports_configured {
        c.push_str("<p class=\"muted\">reports: not configured</p>");
    } else {
        let _ = write!(
            c,
            "<dl><dt>Newest report</dt><dd>{}</dd><dt>Backlog (not delivered)</dt><dd id=\"upload-backlog\">{}</dd>\
             <dt>Delivered up to</dt><dd>{}</dd></dl>",
            u.head_seq
                .map_or_else(|| "none yet".into(), |s| format!("#{s}")),
            u.backlog.map_or_else(|| "-".into(), |b| b.to_string()),
            u.delivered_upto
                .map_or_else(|| "-".into(), |b| format!("#{b}")),
        );
    }
    if let Some(r) = u
        .upload
        .as_ref()
        .and_then(|v| v.get("rejected"))
        .filter(|r| !r.is_null())
    {
        let _ = write!(
            c,
            "<div class=\"alarm\" id=\"upload-alarm\">backend refused a report: {}</div>",
            esc(&r.to_string())
        );
    }
    if let Some(e) = u
        .upload
        .as_ref()
        .and_then(|v| v.get("last_error"))
        .and_then(|e| e.as_str())
    {
        let _ = write!(
            c,
            "<div class=\"bad\" id=\"upload-error\">last error: {}</div>",
            esc(e)
        );
    }
    match &u.upload {
        Some(serde_json::Value::Object(m)) => {
            c.push_str("<dl>");
            // The fields a technician needs first, then nothing else: the
            // full status is in `/api/uploads`.
            const SHOWN: [(&str, &str); 7] = [
                ("url", "backend"),
                ("last_success_ms", "last success"),
                ("next_retry_ms", "next retry"),
                ("consecutive_failures", "failures in a row"),
                ("reports_confirmed", "confirmed since start"),
                ("requests", "requests"),
                ("alarms", "refusals"),
            ];
            let picked: Vec<(&str, &str, &serde_json::Value)> = SHOWN
                .iter()
                .filter_map(|(k, label)| m.get(*k).map(|v| (*k, *label, v)))
                .collect();
            let all: Vec<(&str, &str, &serde_json::Value)> =
                m.iter().map(|(k, v)| (k.as_str(), k.as_str(), v)).collect();
            let rows = if picked.is_empty() { all } else { picked };
            for (k, label, v) in rows {
                let _ = write!(
                    c,
                    "<dt>{}</dt><dd>{}</dd>",
                    esc(&label.replace('_', " ")),
                    json_scalar(v, k, now_ms)
                );
            }
            c.push_str("</dl>");
        }
        Some(v) => {
            let _ = write!(c, "<pre>{}</pre>", esc(&v.to_string()));
        }
        None => c.push_str("<p class=\"muted\">upload: not configured</p>"),
    }
    c.push_str("</section>");
    c
}

fn events_table(events: &[EventView]) -> String {
    let mut t = String::from(
        "<div class=\"scroll\"><table class=\"events\" id=\"events\"><thead><tr><th>#</th><th>Time (UTC)</th>\
         <th>Kind</th><th>Device</th><th>Detail</th></tr></thead><tbody>",
    );
    if events.is_empty() {
        t.push_str("<tr><td colspan=\"5\" class=\"muted\">no events</td></tr>");
    }
    for e in events.iter().rev() {
        // Activity that is not a recorded event: signed reports, failed uploads.
        let _ = write!(
            t,
            "<tr class=\"ev-{k}\"><td>{}</td><td>{}</td><td>{k}</td><td>{}</td><td>{}</td></tr>",
            if e.recorded {
                e.id.to_string()
            } else {
                "-".into()
            },
            utc(e.time_ms),
            e.device.as_deref().map(esc).unwrap_or_default(),
            esc(&e.detail),
            k = esc(&e.kind),
        );
    }
    t.push_str("</tbody></table></div>");
    t
}

/// The site overview page (`/`).
pub fn overview(s: &StatusView, rows: &[DeviceRow], events: &[EventView]) -> String {
    let mut b = String::from("<div id=\"live\" data-refresh=\"5000\">");
    b.push_str(&health_banner(&s.health));
    if let Some(a) = &s.buffer.alarm {
        let _ = write!(b, "<div class=\"alarm banner\">{}</div>", esc(a));
    }
    let d = &s.devices;
    let _ = write!(
        b,
        "<section class=\"summary\"><div><b>{}</b> devices</div><div class=\"st-ok\"><b>{}</b> ok</div>\
         <div class=\"st-degraded\"><b>{}</b> degraded</div><div class=\"st-stale\"><b>{}</b> stale</div><div class=\"st-failing\"><b>{}</b> failing</div>\
         <div class=\"st-silent\"><b>{}</b> silent</div><div class=\"muted\">{} · gateway {} · v{} · up {} · {} UTC</div></section>",
        d.total,
        d.ok,
        d.degraded,
        d.stale,
        d.failing,
        d.silent,
        esc(&s.site.name),
        esc(&s.gateway),
        esc(&s.version),
        age(s.uptime_s),
        utc(s.now_ms),
    );
    b.push_str("<h2>Devices</h2>");
    b.push_str(&device_table(rows));
    b.push_str("<div class=\"cards\">");
    b.push_str(&buffer_card(&s.buffer));
    b.push_str(&uploads_card(&s.uploads, s.now_ms));
    let i = &s.ingest;
    let _ = write!(
        b,
        "<section class=\"card\" id=\"ingest\"><h2>Ingest</h2><dl><dt>Messages</dt><dd>{}</dd>\
         <dt>Frames stored</dt><dd>{}</dd><dt>Readings stored</dt><dd>{}</dd><dt>Duplicates</dt><dd>{}</dd>\
         <dt>Signatures verified</dt><dd>{}</dd><dt>Refused (buffer full)</dt><dd>{}</dd>\
         <dt>Rejected</dt><dd><a href=\"/quarantine\">{}</a></dd></dl>",
        i.messages,
        i.frames_stored,
        i.readings_stored,
        i.duplicates,
        i.signatures_verified,
        i.refused_buffer_full,
        i.rejects_total
    );
    if !i.rejects.is_empty() {
        b.push_str("<ul class=\"small\">");
        for (k, v) in &i.rejects {
            let _ = write!(b, "<li>{}: {v}</li>", esc(k));
        }
        b.push_str("</ul>");
    }
    b.push_str("</section>");
    b.push_str("<section class=\"card\" id=\"modbus-card\"><h2>Modbus</h2>");
    match &s.modbus {
        None => b.push_str("<p class=\"muted\">not configured</p>"),
        Some(m) if m.is_empty() => b.push_str("<p class=\"muted\">no device polled yet</p>"),
        Some(m) => {
            b.push_str("<dl>");
            for (dev, st) in m {
                let errors: u64 = st.errors.values().sum();
                let _ = write!(
                    b,
                    "<dt>{}</dt><dd>{} polls, {} failed{}</dd>",
                    esc(dev),
                    st.polls,
                    errors,
                    st.last_error
                        .as_deref()
                        .map(|e| format!("<div class=\"small bad\">{}</div>", esc(e)))
                        .unwrap_or_default()
                );
            }
            b.push_str("</dl>");
        }
    }
    b.push_str("</section></div><h2>Recent events</h2>");
    b.push_str(&events_table(events));
    b.push_str("</div>");
    layout("Overview", &s.site.id, "/", &b)
}

fn channel_block(c: &ChannelSeries) -> String {
    let quantity: mrv_shared::quantity::Quantity =
        serde_json::from_value(serde_json::Value::String(c.quantity.clone()))
            .unwrap_or(mrv_shared::quantity::Quantity::Count);
    let points = chart::series_points(c.range, &c.points, &c.buckets);
    let svg = chart::render(&ChartSpec {
        quantity,
        range: c.range,
        from_ms: c.from_ms,
        to_ms: c.to_ms,
        points: &points,
        gap_ms: c.gap_ms,
        not_kept: &c.not_kept,
    });
    format!(
        "<section class=\"channel\" data-channel=\"{ch}\"><h3>{ch} <span class=\"muted small\">{q}</span> \
         <span class=\"current\">{}</span></h3>{svg}</section>",
        esc(c.latest_display.as_deref().unwrap_or("-")),
        ch = esc(&c.channel),
        q = esc(&c.quantity.replace('_', " ")),
    )
}

/// A device page (`/devices/{id}?range=`): facts, charts over the range
/// (1 h, 24 h, 7 d), live tail.
pub fn device_page(site: &str, d: &DeviceDetail, range: Range) -> String {
    let r = &d.row;
    let mut b = format!(
        "<h1>{id} {}</h1><div id=\"live\" data-refresh=\"5000\"><dl class=\"facts\">\
         <dt>Kind</dt><dd>{}</dd><dt>Serial</dt><dd>{}</dd><dt>Status</dt><dd>{}</dd>\
         <dt>Last frame</dt><dd>{}</dd><dt>Firmware</dt><dd>{}</dd><dt>Boot</dt><dd>{}</dd>\
         <dt>Signature</dt><dd>{}</dd><dt>Acked seq</dt><dd>{}</dd><dt>Frames kept</dt><dd>{}</dd>\
         <dt>Missing frames</dt><dd>{}</dd><dt>Rejects</dt><dd>{} since start, {} recently \
         (<a href=\"/quarantine?device={id}\">quarantine</a>)</dd></dl>",
        status_badge(&r.status),
        esc(&r.kind),
        esc(&r.serial),
        esc(&r.status_reason),
        r.last_received_ms.map_or_else(
            || "never".into(),
            |t| format!("{} UTC ({} ago)", utc(t), age(r.age_s.unwrap_or(0)))
        ),
        esc(d.firmware.as_deref().unwrap_or("-")),
        d.boot.map_or_else(|| "-".into(), |b| b.to_string()),
        esc(&r.signature),
        r.acked_seq,
        r.frames,
        r.missing_frames,
        r.rejects,
        r.recent_rejects,
        id = esc(&r.id),
    );
    if let Some(e) = &r.modbus_error {
        let _ = write!(b, "<div class=\"alarm\">Modbus: {}</div>", esc(e));
    }
    let _ = write!(
        b,
        "<h2 id=\"range-title\">{}</h2><nav class=\"ranges\">",
        range.title()
    );
    for x in Range::ALL {
        let _ = write!(
            b,
            "<a href=\"?range={c}\"{}>{}</a>",
            if x == range {
                " class=\"active\" aria-current=\"page\""
            } else {
                ""
            },
            match x {
                Range::Hour => "1 h",
                Range::Day => "24 h",
                Range::Week => "7 d",
            },
            c = x.code(),
        );
    }
    b.push_str(
        "</nav><p class=\"muted small legend\"><span class=\"key-gap\"></span> no data \
         <span class=\"key-unavail\"></span> unavailable (quality flags) \
         <span class=\"key-band\"></span> min to max \
         <span class=\"key-not-kept\"></span> not kept (chart memory budget)</p><div class=\"charts\">",
    );
    if d.channels.is_empty() {
        b.push_str("<p class=\"muted\">no values received in the last 7 days</p>");
    }
    for c in &d.channels {
        b.push_str(&channel_block(c));
    }
    b.push_str("</div></div>");
    let _ = write!(
        b,
        "<h2>Live MQTT tail</h2><p class=\"muted small\">stored frames and rejected payloads of this device, newest last</p>\
         <pre id=\"tail\" class=\"tail\" data-device=\"{}\"></pre>",
        esc(&r.id)
    );
    layout(&r.id, site, "", &b)
}

/// A classic hex dump: offset, 16 bytes in hex, the same as ASCII.
pub fn hex_dump(bytes: &[u8]) -> String {
    let mut o = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(o, "{:08x}  {:<47}  |{}|", i * 16, hex.join(" "), ascii);
    }
    o
}

/// The quarantine page: rejected payloads, newest first, hex and text.
pub fn quarantine_page(
    site: &str,
    entries: &[QuarantineEntry],
    device: Option<&str>,
    capacity: usize,
) -> String {
    let mut b = format!(
        "<h1>Quarantine{}</h1><p class=\"muted small\">The last {capacity} payloads the gateway \
         rejected, kept raw (at most 1024 bytes each) in memory. Counts since start are in \
         <a href=\"/metrics\">/metrics</a> (<code>mrv_device_rejects_total</code>); the same as JSON: \
         <a href=\"/api/quarantine{}\">/api/quarantine</a>.</p><div id=\"live\" data-refresh=\"10000\">",
        device.map_or_else(String::new, |d| format!(" of {}", esc(d))),
        device.map_or_else(String::new, |d| format!("?device={}", esc(d))),
    );
    if entries.is_empty() {
        b.push_str("<p class=\"muted\" id=\"quarantine-empty\">no rejected payloads</p>");
    }
    for e in entries.iter().rev() {
        let bytes: Vec<u8> = (0..e.payload_hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&e.payload_hex[2 * i..2 * i + 2], 16).ok())
            .collect();
        let _ = write!(
            b,
            "<section class=\"card qentry\" data-reason=\"{reason}\"><h3>{} UTC · <span class=\"bad\">{reason}</span> · {}</h3>\
             <dl><dt>Topic</dt><dd>{}</dd><dt>Why</dt><dd>{}</dd><dt>Length</dt><dd>{} bytes{}</dd></dl>\
             <details open><summary>hex</summary><pre class=\"hex\">{}</pre></details>\
             <details><summary>text</summary><pre class=\"text\">{}</pre></details></section>",
            utc(e.received_ms),
            e.device.as_deref().map_or_else(
                || "unknown device".to_string(),
                |d| format!("<a href=\"/devices/{0}\">{0}</a>", esc(d))
            ),
            esc(&e.topic),
            esc(&e.detail),
            e.len,
            if e.truncated {
                " (first 1024 kept)"
            } else {
                ""
            },
            esc(&hex_dump(&bytes)),
            esc(&e.payload_text),
            reason = esc(&e.reason),
        );
    }
    b.push_str("</div>");
    layout("Quarantine", site, "/quarantine", &b)
}

/// The events page.
pub fn events_page(site: &str, events: &[EventView]) -> String {
    let body = format!(
        "<h1>Events</h1><div id=\"live\" data-refresh=\"10000\">{}</div>",
        events_table(events)
    );
    layout("Events", site, "/events", &body)
}

/// The logs page.
pub fn logs_page(site: &str, lines: &[LogLine]) -> String {
    let mut t = String::from(
        "<h1>Recent log lines</h1><div id=\"live\" data-refresh=\"10000\"><div class=\"scroll\"><table class=\"logs\"><thead><tr>\
         <th>Time (UTC)</th><th>Level</th><th>Target</th><th>Message</th></tr></thead><tbody>",
    );
    for l in lines.iter().rev() {
        let _ = write!(
            t,
            "<tr class=\"lv-{lv}\"><td>{}</td><td>{lv}</td><td>{}</td><td>{}</td></tr>",
            utc(l.time_ms),
            esc(&l.target),
            esc(&l.message),
            lv = esc(&l.level)
        );
    }
    t.push_str("</tbody></table></div></div>");
    layout("Logs", site, "/logs", &t)
}

/// The Modbus page: poll status and the probe form (offering the
/// configured TCP devices).
pub fn modbus_page(site: &str, s: &StatusView, targets: &[ProbeTarget]) -> String {
    let mut b = String::from("<h1>Modbus</h1>");
    match &s.modbus {
        None => b.push_str("<p class=\"muted\">Modbus polling: not configured</p>"),
        Some(m) => {
            b.push_str(
                "<div class=\"scroll\"><table id=\"modbus-status\"><thead><tr><th>Device</th><th>Polls</th><th>Errors</th><th>Last success</th>\
                 <th>Last error</th><th>Requests/poll</th></tr></thead><tbody>",
            );
            for (dev, st) in m {
                let total: u64 = st.errors.values().sum();
                let errs: Vec<String> =
                    st.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td class=\"errors\">{}{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(dev),
                    st.polls,
                    total,
                    if errs.is_empty() {
                        String::new()
                    } else {
                        format!(" <span class=\"small\">({})</span>", esc(&errs.join(", ")))
                    },
                    st.last_success_ms.map_or_else(
                        || "never".into(),
                        |t| format!("{} ago", age(s.now_ms.saturating_sub(t) / 1000))
                    ),
                    esc(st.last_error.as_deref().unwrap_or("-")),
                    st.requests_per_poll
                );
            }
            b.push_str("</tbody></table></div>");
        }
    }
    let first = targets.first();
    let mut options = String::from("<option value=\"\">other address (below)</option>");
    for t in targets {
        let _ = write!(
            options,
            "<option value=\"{id}\" data-address=\"{a}\" data-unit=\"{u}\" data-profile=\"{p}\"{sel}>{id} ({a}, unit {u}{ss})</option>",
            id = esc(&t.id),
            a = esc(&t.address),
            u = t.unit,
            p = esc(t.profile.as_deref().unwrap_or("")),
            sel = if Some(t) == first { " selected" } else { "" },
            ss = if t.sunspec { ", SunSpec" } else { "" },
        );
    }
    let _ = write!(
        b,
        "<h2>Probe</h2><p class=\"muted small\">Reads a Modbus TCP device once (nothing is stored, \
         the poller is not disturbed). A configured device is read with its own address, unit and \
         register map, SunSpec models discovered first; a profile name (e.g. <code>sunspec</code>) \
         decodes that profile instead. Count 0 skips the raw read. The same as \
         <code>mrv-gateway modbus read --profile</code>.</p>\
         <form id=\"probe\" class=\"probe\"><label>Device <select name=\"device\">{options}</select></label>\
         <label>Address <input name=\"address\" value=\"{}\" placeholder=\"host:502\"></label>\
         <label>Unit <input name=\"unit\" type=\"number\" min=\"0\" max=\"255\" value=\"{}\"></label>\
         <label>Table <select name=\"table\"><option>holding</option><option>input</option></select></label>\
         <label>Start <input name=\"start\" type=\"number\" min=\"0\" max=\"65535\" value=\"0\"></label>\
         <label>Count <input name=\"count\" type=\"number\" min=\"0\" max=\"125\" value=\"{}\"></label>\
         <label>Profile <input name=\"profile\" placeholder=\"optional\" value=\"\"></label>\
         <button type=\"submit\">Read</button></form><pre id=\"probe-result\" class=\"tail\"></pre>",
        esc(&first.map_or_else(|| "127.0.0.1:502".to_string(), |t| t.address.clone())),
        first.map_or(1, |t| t.unit),
        if first.is_some() { 0 } else { 10 },
    );
    layout("Modbus", site, "/modbus", &b)
}

/// The login page (answered with 401 when a token is required).
pub fn login_page(failed: bool) -> String {
    let msg = if failed {
        "<p class=\"bad\">wrong token</p>"
    } else {
        "<p class=\"muted\">This gateway requires an access token (see `diagnostics.token`).</p>"
    };
    layout(
        "Login",
        "",
        "",
        &format!(
            "<h1>Log in</h1>{msg}<form method=\"post\" action=\"/login\" class=\"probe\">\
             <label>Token <input name=\"token\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\">Log in</button></form>"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }

    #[test]
    fn formats_utc_and_ages() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_764_115_200_000 + 3_723_000), "2025-11-26 01:02:03");
        assert_eq!(age(5), "5 s");
        assert_eq!(age(600), "10 min");
        assert_eq!(age(10_800), "3 h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(9682), "9.5 KiB");
        assert_eq!(bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn hex_dump_shows_offsets_hex_and_ascii() {
        let d = hex_dump(b"{\"seq\":1}\x00\xff more than sixteen");
        let first = d.lines().next().expect("a line");
        assert!(
            first.starts_with("00000000  7b 22 73 65 71 22 3a 31 7d 00 ff"),
            "{d}"
        );
        assert!(first.ends_with("|{\"seq\":1}.. more|"), "{d}");
        assert!(d.lines().nth(1).is_some_and(|l| l.starts_with("00000010")));
    }
}
