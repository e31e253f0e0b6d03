// MRV Gateway diagnostics: live refresh, MQTT tail, Modbus probe.
// Compiled into the binary; talks only to the gateway that served it.
"use strict";
(function () {
  function refresh(el) {
    var every = parseInt(el.getAttribute("data-refresh"), 10) || 5000;
    setInterval(function () {
      fetch(location.href, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById("live");
          if (fresh) el.innerHTML = fresh.innerHTML;
        })
        .catch(function () { /* offline for a moment: keep the old values */ });
    }, every);
  }

  function tail(el) {
    var device = el.getAttribute("data-device");
    var after = 0;
    function line(e) {
      var span = document.createElement("span");
      span.className = e.kind;
      var t = new Date(e.time_ms).toISOString().replace("T", " ").slice(0, 19);
      span.textContent = t + "  " + e.kind + "  " + e.summary + "\n";
      el.appendChild(span);
      while (el.childNodes.length > 300) el.removeChild(el.firstChild);
    }
    function poll() {
      fetch("/api/devices/" + encodeURIComponent(device) + "/tail?after_ms=" + after, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : { entries: [] }; })
        .then(function (v) {
          var stick = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
          v.entries.forEach(function (e) { line(e); after = Math.max(after, e.time_ms); });
          if (stick) el.scrollTop = el.scrollHeight;
        })
        .catch(function () {});
    }
    poll();
    setInterval(poll, 1000);
  }

  function probe(form) {
    var out = document.getElementById("probe-result");
    var pick = form.elements.device;
    function fill() {
      var o = pick.options[pick.selectedIndex];
      var configured = !!o.value;
      if (configured) {
        form.elements.address.value = o.getAttribute("data-address");
        form.elements.unit.value = o.getAttribute("data-unit");
      }
      form.elements.address.disabled = configured;
      form.elements.unit.disabled = configured;
    }
    if (pick) { pick.addEventListener("change", fill); fill(); }
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var f = new FormData(form);
      var body = {
        device: f.get("device") ? f.get("device") : null,
        address: form.elements.address.value,
        unit: parseInt(form.elements.unit.value, 10) || 0,
        table: f.get("table"),
        start: parseInt(f.get("start"), 10) || 0,
        count: parseInt(f.get("count"), 10) || 0,
        profile: f.get("profile") ? f.get("profile") : null
      };
      out.textContent = "reading...";
      fetch("/api/modbus/probe", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(body)
      })
        .then(function (r) { return r.json(); })
        .then(function (v) {
          var lines = [];
          if (v.error) lines.push("error: " + v.error);
          if (v.words && v.words.length) {
            v.words.forEach(function (w, i) { lines.push((body.start + i) + ": " + w + " (0x" + w.toString(16).padStart(4, "0") + ")"); });
          }
          (v.decoded || []).forEach(function (d) { lines.push(d); });
          lines.push("(" + v.elapsed_ms + " ms)");
          out.textContent = lines.join("\n");
        })
        .catch(function (e) { out.textContent = "error: " + e; });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    if (live && live.hasAttribute("data-refresh")) refresh(live);
    var t = document.getElementById("tail");
    if (t) tail(t);
    var p = document.getElementById("probe");
    if (p) probe(p);
  });
})();
