"""The inline script that keeps a status page live: it polls the page's JSON twin every second.

It renders each section from the layout declaration embedded in the page
(``<script id="layout" type="application/json">``) with the same formats as
:data:`gateway.web.layout.FORMATS`; without scripts the served page stays
as it was rendered. The page's Content-Security-Policy allows exactly this
script, by hash.
"""

from __future__ import annotations

import base64
import hashlib

LIVE_SCRIPT = """
"use strict";
(function () {
  var layout = JSON.parse(document.getElementById("layout").textContent);
  var units = ["B", "KiB", "MiB", "GiB", "TiB"];
  function esc(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#x27;");
  }
  function bytes(n) {
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(n) < 1024 || i === units.length - 1) {
        return i === 0 ? n.toFixed(0) + " B" : n.toFixed(1) + " " + units[i];
      }
      n /= 1024;
    }
  }
  function seconds(s) {
    s = Math.max(0, s);
    if (s < 10) { return s.toFixed(1) + " s"; }
    var w = Math.floor(s);
    if (w < 60) { return w + " s"; }
    if (w < 3600) { return Math.floor(w / 60) + " min " + (w % 60) + " s"; }
    if (w < 86400) { return Math.floor(w / 3600) + " h " + (Math.floor(w / 60) % 60) + " min"; }
    return Math.floor(w / 86400) + " d " + (Math.floor(w / 3600) % 24) + " h";
  }
  function progress(row) {
    var done = bytes(row.done || 0);
    if (row.fraction === null || row.fraction === undefined) {
      return "<progress></progress> " + done;
    }
    var p = Math.floor(row.fraction * 1000);
    return "<progress max='1000' value='" + p + "'></progress> " + (p / 10).toFixed(1) +
      "% (" + done + " of " + bytes(row.total || 0) + ")";
  }
  var formats = {
    text: function (v) { return esc(v); },
    count: function (v) { return Math.trunc(v).toLocaleString("en-US"); },
    bytes: function (v) { return bytes(v); },
    rate: function (v) { return bytes(v) + "/s"; },
    seconds: function (v) { return seconds(v); },
    ms: function (v) { return (v * 1000).toFixed(1) + " ms"; },
    time: function (v) {
      return new Date(v * 1000).toISOString().slice(0, 19).replace("T", " ") + "Z";
    },
    ago: function (v, row, now) { return seconds(now - v) + " ago"; },
    bool: function (v) { return v ? "yes" : "no"; },
    state: function (v) { return "<span class='s-" + esc(v) + "'>" + esc(v) + "</span>"; },
    progress: function (v, row) { return progress(row); }
  };
  function cell(col, row, now) {
    var v = row[col.key];
    if ((v === null || v === undefined) && col.format !== "progress") { return "\\u2013"; }
    return formats[col.format](v, row, now);
  }
  function lookup(data, path) {
    return path.split(".").reduce(function (o, k) {
      return (o !== null && typeof o === "object" && !Array.isArray(o)) ? o[k] : null;
    }, data);
  }
  function table(section, data) {
    var now = data.now || 0, value = lookup(data, section.path), cols = section.columns;
    if (!section.rows) {
      var fields = (value && typeof value === "object") ? value : {};
      return "<tbody>" + cols.map(function (c) {
        return "<tr><th>" + esc(c.title) + "</th><td class='c-" + c.key + "'>" +
          cell(c, fields, now) + "</td></tr>";
      }).join("") + "</tbody>";
    }
    var head = cols.map(function (c) { return "<th>" + esc(c.title) + "</th>"; }).join("");
    var rows = Array.isArray(value) ? value : [];
    var body = rows.length === 0
      ? "<tr><td colspan='" + cols.length + "'>" + esc(section.empty) + "</td></tr>"
      : rows.map(function (row) {
        return "<tr>" + cols.map(function (c) {
          return "<td class='c-" + c.key + "'>" + cell(c, row, now) + "</td>";
        }).join("") + "</tr>";
      }).join("");
    return "<thead><tr>" + head + "</tr></thead><tbody>" + body + "</tbody>";
  }
  var status = document.getElementById("live");
  function tick() {
    fetch(layout.json, {cache: "no-store", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        layout.sections.forEach(function (section) {
          var element = document.getElementById(section.id);
          if (element) { element.querySelector("table").innerHTML = table(section, data); }
        });
        status.textContent = "live, updated " + formats.time(data.now);
        status.className = "live";
      })
      .catch(function (error) {
        status.textContent = "cannot reach the node (" + error.message + "); retrying";
        status.className = "stale";
      })
      .then(function () { setTimeout(tick, 1000); });
  }
  setTimeout(tick, 1000);
})();
"""


def script_hash() -> str:
    """The CSP source expression that allows exactly :data:`LIVE_SCRIPT`."""
    digest = hashlib.sha256(LIVE_SCRIPT.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"
