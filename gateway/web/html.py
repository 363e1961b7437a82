"""A status page as a whole HTML document: navigation, sections, the live script."""

from __future__ import annotations

import html
import json
from typing import Any

from gateway.web.layout import render_section, utc_time
from gateway.web.pages import Page
from gateway.web.script import LIVE_SCRIPT

HERE = " class='here'"

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;
align-items:baseline;flex-wrap:wrap}
header h1{font-size:1.1em;margin:0}
nav a{color:#cfe3ff;margin-right:1em;text-decoration:none}
nav a.here{color:#fff;font-weight:600;border-bottom:2px solid #7fb3ff}
main{padding:.5em 1.2em 2em;display:grid;gap:0 1em;
grid-template-columns:repeat(auto-fit,minmax(26em,1fr))}
section.wide{grid-column:1/-1}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:1em 0;
padding:.3em .9em .8em;overflow-x:auto}
h2{font-size:1em;margin:.6em 0}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #eef0f3;vertical-align:top}
tbody th{width:16em;font-weight:500;color:#4a5568}
thead th{font-weight:600;color:#4a5568;white-space:nowrap}
progress{width:12em;vertical-align:middle}
.s-connected{color:#17803d}.s-unreachable{color:#b42318;font-weight:600}.s-connecting{color:#9a6700}
#live{font-size:.85em;color:#9fb0c8}#live.stale{color:#ffb4a8}
footer{padding:0 1.2em 1.5em;color:#6b7280;font-size:.85em}
"""


def render_page(page: Page, pages: tuple[Page, ...], data: dict[str, Any]) -> str:
    """The page, rendered from its JSON twin ``data``."""
    node = data.get("node", {})
    name = " ".join(p for p in (node.get("kind", ""), "node", node.get("nickname", "")) if p)
    nav = "".join(
        f"<a href='{p.url}'{HERE if p is page else ''}>{html.escape(p.title)}</a>" for p in pages
    )
    layout = {
        "json": page.json_url,
        "sections": [s.to_json() for s in page.sections],
    }
    layout_json = json.dumps(layout).replace("</", "<\\/")
    sections = "".join(render_section(s, data) for s in page.sections)
    served = utc_time(float(data.get("now") or 0.0))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(page.title)} · {html.escape(name)}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<header><h1>{html.escape(name)}</h1><nav>{nav}</nav>"
        f"<span id='live'>served {served}; reload for news</span></header>"
        f"<main>{sections}</main>"
        f"<footer>This page as JSON: <a href='{page.json_url}'>{page.json_url}</a> · "
        "every part: <a href='/status.json'>/status.json</a> · "
        "Prometheus: <a href='/metrics'>/metrics</a></footer>"
        f"<script id='layout' type='application/json'>{layout_json}</script>"
        f"<script>{LIVE_SCRIPT}</script>"
        "</body></html>"
    )
