//! Server-side HTML of the diagnostics pages (pure functions of the API views).
//!
//! Every page is complete without JavaScript: the device table, values and
//! charts (inline SVG) are rendered here, so a technician's browser with no
//! internet (and a headless test browser) sees the data at once. The small
//! script in `assets/app.js` only refreshes the live part every few seconds,
//! appends the MQTT tail and submits the Modbus probe form. No CDN, no
//! external font: the CSS and script are compiled into the binary.
//!
//! Invariant: every piece of text that came from outside (device ids,
//! details, log lines, config) goes through [`esc`].

use super::api::{
    BufferView, ChannelSeries, DeviceDetail, DeviceRow, EventView, StatusView, UploadsView,
};
use super::logs::LogLine;
use super::state::Point;
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

fn value_text(v: i64, unit: &str) -> String {
    format!("{v} {}", esc(unit))
}

fn device_table(rows: &[DeviceRow]) -> String {
    let mut t = String::from(
        "<table id=\"devices\" class=\"devices\"><thead><tr><th>Device</th><th>Kind</th>\
         <th>Status</th><th>Last frame</th><th>Values</th><th>Quality</th>\
         <th>Signature</th><th>Acked seq</th><th>Missing</th></tr></thead><tbody>",
    );
    if rows.is_empty() {
        t.push_str(
            "<tr><td colspan=\"9\" class=\"muted\">no devices registered or seen yet</td></tr>",
        );
    }
    for r in rows {
        let values: Vec<String> = r
            .values
            .iter()
            .map(|v| {
                format!(
                    "<span class=\"val\" data-channel=\"{}\">{}&nbsp;<b>{}</b></span>",
                    esc(&v.channel),
                    esc(&v.channel),
                    value_text(v.value, &v.unit)
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
             <td><a href=\"/devices/{id}\">{id}</a><div class=\"muted small\">{serial}</div></td>\
             <td>{kind}</td><td>{badge}<div class=\"small\">{reason}</div></td><td>{last}</td>\
             <td class=\"values\">{values}</td><td>{quality}</td><td class=\"sig-{sig}\">{sig}</td>\
             <td>{acked}</td><td>{missing}</td></tr>",
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
        "<table class=\"events\" id=\"events\"><thead><tr><th>#</th><th>Time (UTC)</th>\
         <th>Kind</th><th>Device</th><th>Detail</th></tr></thead><tbody>",
    );
    if events.is_empty() {
        t.push_str("<tr><td colspan=\"5\" class=\"muted\">no events</td></tr>");
    }
    for e in events.iter().rev() {
        let _ = write!(
            t,
            "<tr class=\"ev-{k}\"><td>{}</td><td>{}</td><td>{k}</td><td>{}</td><td>{}</td></tr>",
            e.id,
            utc(e.time_ms),
            e.device.as_deref().map(esc).unwrap_or_default(),
            esc(&e.detail),
            k = esc(&e.kind),
        );
    }
    t.push_str("</tbody></table>");
    t
}

/// The site overview page (`/`).
pub fn overview(s: &StatusView, rows: &[DeviceRow], events: &[EventView]) -> String {
    let mut b = String::from("<div id=\"live\" data-refresh=\"5000\">");
    if let Some(a) = &s.buffer.alarm {
        let _ = write!(b, "<div class=\"alarm banner\">{}</div>", esc(a));
    }
    let d = &s.devices;
    let _ = write!(
        b,
        "<section class=\"summary\"><div><b>{}</b> devices</div><div class=\"st-ok\"><b>{}</b> ok</div>\
         <div class=\"st-stale\"><b>{}</b> stale</div><div class=\"st-failing\"><b>{}</b> failing</div>\
         <div class=\"st-silent\"><b>{}</b> silent</div><div class=\"muted\">{} · gateway {} · v{} · up {} · {} UTC</div></section>",
        d.total,
        d.ok,
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
         <dt>Rejected</dt><dd>{}</dd></dl>",
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

/// Downsamples to at most `max` points keeping each bucket's min and max.
pub fn downsample(points: &[Point], max: usize) -> Vec<Point> {
    if points.len() <= max || max < 2 {
        return points.to_vec();
    }
    let buckets = max / 2;
    let per = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(max);
    for chunk in points.chunks(per) {
        let lo = chunk
            .iter()
            .min_by_key(|p| p.value)
            .expect("chunks are non-empty");
        let hi = chunk
            .iter()
            .max_by_key(|p| p.value)
            .expect("chunks are non-empty");
        if lo.t_ms <= hi.t_ms {
            out.push(*lo);
            if hi != lo {
                out.push(*hi);
            }
        } else {
            out.push(*hi);
            out.push(*lo);
        }
    }
    out
}

/// An inline SVG line chart of `points` over `[now - window, now]`.
pub fn chart_svg(points: &[Point], now_ms: u64, window_ms: u64, unit: &str) -> String {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    const PAD: f64 = 4.0;
    let pts = downsample(points, 600);
    // Zoom to the data while there is less than the window of it (a fresh
    // start), but never below one minute.
    let first = pts.first().map_or(now_ms, |p| p.t_ms);
    let start = now_ms
        .saturating_sub(window_ms)
        .max(first.min(now_ms.saturating_sub(60_000)));
    let window_ms = now_ms.saturating_sub(start).max(1);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" preserveAspectRatio=\"none\" \
         role=\"img\" aria-label=\"last hour\"><rect class=\"bg\" x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\"/>"
    );
    if pts.is_empty() {
        svg.push_str("<text x=\"10\" y=\"20\" class=\"muted\">no data in the window</text></svg>");
        return svg;
    }
    let min = pts.iter().map(|p| p.value).min().expect("non-empty");
    let max = pts.iter().map(|p| p.value).max().expect("non-empty");
    let span = (max - min).max(1) as f64;
    let x =
        |t: u64| PAD + (t.saturating_sub(start) as f64 / window_ms.max(1) as f64) * (W - 2.0 * PAD);
    // The top 16 px are kept for the max/min labels.
    let y = |v: i64| H - PAD - ((v - min) as f64 / span) * (H - 2.0 * PAD - 16.0);
    let mut d = String::new();
    for (k, p) in pts.iter().enumerate() {
        let _ = write!(
            d,
            "{}{:.1} {:.1}",
            if k == 0 { "M" } else { " L" },
            x(p.t_ms).clamp(0.0, W),
            y(p.value)
        );
    }
    if pts.len() == 1 {
        let _ = write!(
            d,
            " L{:.1} {:.1}",
            (x(pts[0].t_ms) + 2.0).min(W),
            y(pts[0].value)
        );
    }
    let _ = write!(
        svg,
        "<path class=\"line\" d=\"{d}\"/>\
         <text x=\"{}\" y=\"14\" class=\"axis\" text-anchor=\"end\">max {max} {u}</text>\
         <text x=\"{}\" y=\"{}\" class=\"axis\" text-anchor=\"end\">min {min} {u}</text>\
         <text x=\"6\" y=\"14\" class=\"axis\">last {}</text></svg>",
        W - 6.0,
        W - 6.0,
        H - 6.0,
        age(window_ms / 1000),
        u = esc(unit)
    );
    svg
}

fn channel_block(c: &ChannelSeries, now_ms: u64, window_ms: u64) -> String {
    let last = c.points.last();
    format!(
        "<section class=\"channel\" data-channel=\"{ch}\"><h3>{ch} <span class=\"muted small\">{q}</span> \
         <span class=\"current\">{}</span></h3>{}</section>",
        last.map_or_else(|| "-".to_string(), |p| value_text(p.value, &c.unit)),
        chart_svg(&c.points, now_ms, window_ms, &c.unit),
        ch = esc(&c.channel),
        q = esc(&c.quantity),
    )
}

/// A device page (`/devices/{id}`): facts, charts of the last hour, live tail.
pub fn device_page(site: &str, d: &DeviceDetail, now_ms: u64, window_ms: u64) -> String {
    let r = &d.row;
    let mut b = format!(
        "<h1>{id} {}</h1><div id=\"live\" data-refresh=\"5000\"><dl class=\"facts\">\
         <dt>Kind</dt><dd>{}</dd><dt>Serial</dt><dd>{}</dd><dt>Status</dt><dd>{}</dd>\
         <dt>Last frame</dt><dd>{}</dd><dt>Firmware</dt><dd>{}</dd><dt>Boot</dt><dd>{}</dd>\
         <dt>Signature</dt><dd>{}</dd><dt>Acked seq</dt><dd>{}</dd><dt>Frames kept</dt><dd>{}</dd>\
         <dt>Missing frames</dt><dd>{}</dd><dt>Recent rejects</dt><dd>{}</dd></dl>",
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
        r.recent_rejects,
        id = esc(&r.id),
    );
    if let Some(e) = &r.modbus_error {
        let _ = write!(b, "<div class=\"alarm\">Modbus: {}</div>", esc(e));
    }
    b.push_str("<h2>Last hour</h2><div class=\"charts\">");
    if d.channels.is_empty() {
        b.push_str("<p class=\"muted\">no values received since the gateway started</p>");
    }
    for c in &d.channels {
        b.push_str(&channel_block(c, now_ms, window_ms));
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
        "<h1>Recent log lines</h1><div id=\"live\" data-refresh=\"10000\"><table class=\"logs\"><thead><tr>\
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
    t.push_str("</tbody></table></div>");
    layout("Logs", site, "/logs", &t)
}

/// The Modbus page: poll status and the probe form.
pub fn modbus_page(site: &str, s: &StatusView) -> String {
    let mut b = String::from("<h1>Modbus</h1>");
    match &s.modbus {
        None => b.push_str("<p class=\"muted\">Modbus polling: not configured</p>"),
        Some(m) => {
            b.push_str(
                "<table><thead><tr><th>Device</th><th>Polls</th><th>Errors</th><th>Last success</th>\
                 <th>Last error</th><th>Requests/poll</th></tr></thead><tbody>",
            );
            for (dev, st) in m {
                let errs: Vec<String> =
                    st.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(dev),
                    st.polls,
                    esc(&errs.join(", ")),
                    st.last_success_ms.map_or_else(
                        || "never".into(),
                        |t| format!("{} ago", age(s.now_ms.saturating_sub(t) / 1000))
                    ),
                    esc(st.last_error.as_deref().unwrap_or("-")),
                    st.requests_per_poll
                );
            }
            b.push_str("</tbody></table>");
        }
    }
    b.push_str(
        "<h2>Probe</h2><p class=\"muted small\">Reads registers from a Modbus TCP device once \
         (nothing is stored). With a profile name, the profile's registers in the range are decoded.</p>\
         <form id=\"probe\" class=\"probe\"><label>Address <input name=\"address\" value=\"127.0.0.1:502\" required></label>\
         <label>Unit <input name=\"unit\" type=\"number\" min=\"0\" max=\"255\" value=\"1\"></label>\
         <label>Table <select name=\"table\"><option>holding</option><option>input</option></select></label>\
         <label>Start <input name=\"start\" type=\"number\" min=\"0\" max=\"65535\" value=\"0\"></label>\
         <label>Count <input name=\"count\" type=\"number\" min=\"1\" max=\"125\" value=\"10\"></label>\
         <label>Profile <input name=\"profile\" placeholder=\"optional\"></label>\
         <button type=\"submit\">Read</button></form><pre id=\"probe-result\" class=\"tail\"></pre>",
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

    fn p(t: u64, v: i64) -> Point {
        Point {
            t_ms: t,
            value: v,
            quality: 0,
        }
    }

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
    fn chart_has_one_path_point_per_input_and_scales_into_the_box() {
        let svg = chart_svg(&[p(0, 0), p(500, 10), p(1000, 5)], 1000, 1000, "W");
        assert!(
            svg.contains("<path class=\"line\" d=\"M4.0 116.0 L300.0 20.0 L596.0 68.0\""),
            "{svg}"
        );
        assert!(svg.contains("max 10 W") && svg.contains("min 0 W"));
        assert!(svg.contains(">last 1 s</text>"), "{svg}");
    }

    #[test]
    fn a_short_history_fills_the_chart_instead_of_a_sliver() {
        let now = 10_000_000;
        let svg = chart_svg(&[p(now - 120_000, 0), p(now, 1)], now, 3_600_000, "W");
        assert!(svg.contains("d=\"M4.0 116.0 L596.0 20.0\""), "{svg}");
    }

    #[test]
    fn empty_chart_says_so() {
        assert!(chart_svg(&[], 1000, 1000, "W").contains("no data"));
    }

    #[test]
    fn downsampling_keeps_extremes_and_bounds_the_size() {
        let pts: Vec<Point> = (0..10_000).map(|i| p(i, (i % 97) as i64)).collect();
        let d = downsample(&pts, 600);
        assert!(d.len() <= 600, "{}", d.len());
        assert_eq!(d.iter().map(|x| x.value).max(), Some(96));
        assert_eq!(d.iter().map(|x| x.value).min(), Some(0));
        assert!(d.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
    }
}
