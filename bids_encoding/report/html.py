"""The HTML pieces every report is built of: a page, sections, tables, figures and file links.

A page is one self-contained file: the style is inline, there is no script, and every image and
link is a path relative to the report, so it opens from disk (or a copied folder) with nothing
fetched from the network.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from ..derivatives import atomic_write

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #345}h2{border-bottom:1px solid #ccd;margin-top:2em}h3{margin-bottom:.3em}
nav a{margin-right:1em}table{border-collapse:collapse;margin:.5em 0}caption{text-align:left;font-size:90%;color:#555}
td,th{padding:3px 9px;border-bottom:1px solid #ddd;text-align:left;font-size:92%}th{background:#f3f5f8}
figure{margin:1em 0}figure img{max-width:100%;height:auto}figcaption{color:#555;font-size:90%}
code{background:#f4f4f4;padding:1px 4px}.methods{background:#f8f9fb;border-left:3px solid #345;padding:.5em 1em}
ul.files{font-size:88%;columns:2}details{margin:.5em 0}"""


def escape(value) -> str:
    return html.escape(str(value))


def cell(value) -> str:
    """A table value as text: floats with 3 significant digits, missing values as n/a."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def table(header: list[str], rows: list[list], caption: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell(c))}</td>" for c in row) + "</tr>" for row in rows)
    title = f"<caption>{caption}</caption>" if caption else ""
    return f"<table>{title}<tr>{head}</tr>{body}</table>"


def frame_table(frame, caption: str = "", max_rows: int = 20) -> str:
    """A pandas table; long ones folded under a <details> so the page stays readable."""
    rows = [list(row) for row in frame.itertuples(index=False)]
    if len(rows) <= max_rows:
        return table(list(frame.columns), rows, caption)
    return (f"<details><summary>{caption or 'table'} ({len(rows)} rows)</summary>"
            f"{table(list(frame.columns), rows)}</details>")


def figure(src: str, alt: str, caption: str, width: int = 800) -> str:
    return (f'<figure><img src="{escape(src)}" alt="{escape(alt)}" width="{width}">'
            f"<figcaption>{caption}</figcaption></figure>")


def file_link(relative: str) -> str:
    return f'<a href="{escape(relative)}"><code>{escape(Path(relative).name)}</code></a>'


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>' if body else ""


def write_page(path: Path, title: str, sections: list[tuple[str, str, str]], intro: str = "") -> Path:
    """One HTML file: a title, a table of contents of the non-empty sections (anchor, title, body), the sections."""
    shown = [(anchor, name, body) for anchor, name, body in sections if body]
    nav = "<nav>" + "".join(f'<a href="#{anchor}">{escape(name)}</a>' for anchor, name, _ in shown) + "</nav>"
    text = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body><h1>{escape(title)}</h1>{intro}{nav}"
            + "".join(section(*s) for s in shown) + "</body></html>\n")
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
