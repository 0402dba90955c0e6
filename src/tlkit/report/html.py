"""HTML building blocks shared by the run, compare and rank pages: one self-contained file each,
CSS inline, images as data URIs, no script and nothing fetched from anywhere."""

from __future__ import annotations

import html
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tlkit import __version__
from tlkit.errors import UserError
from tlkit.outputs import page_tag

CSS = """
:root { --ink: #1f2937; --muted: #5b6678; --line: #dde3ea; --bg: #f6f8fa;
        --frozen: #7fa8d8; --trainable: #f2a93b; --head: #4caf6a; --bad: #d9534f; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif;
       color: var(--ink); background: var(--bg); }
header { background: #23324a; color: white; padding: 18px 32px; }
header h1 { margin: 0; font-size: 22px; font-weight: 600; }
header p { margin: 4px 0 0; color: #c9d3e0; }
nav { padding: 8px 32px; background: white; border-bottom: 1px solid var(--line); }
nav a { margin-right: 14px; color: #2d5c9e; text-decoration: none; font-size: 13px; }
main { max-width: 1180px; margin: 0 auto; padding: 8px 32px 40px; }
section { background: white; border: 1px solid var(--line); border-radius: 6px;
          margin: 18px 0; padding: 6px 22px 18px; }
h2 { font-size: 17px; margin: 14px 0 8px; }
h3 { font-size: 14px; margin: 12px 0 6px; color: var(--muted); }
p.note { color: var(--muted); font-size: 12.5px; margin: 6px 0; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; }
th { background: var(--bg); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.mark td { background: #fff6e5; }
pre { background: var(--bg); border: 1px solid var(--line); padding: 10px; overflow-x: auto;
      font-size: 12px; line-height: 1.4; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 140px; }
.card .v { font-size: 20px; font-weight: 600; }
.card .k { font-size: 12px; color: var(--muted); }
.badge { display: inline-block; padding: 2px 9px; border-radius: 10px; font-size: 12.5px;
         font-weight: 600; color: white; background: var(--muted); }
.badge.good { background: var(--head); } .badge.bad { background: var(--bad); }
.badge.warn { background: var(--trainable); } .badge.info { background: var(--frozen); }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px;
               vertical-align: -1px; border: 1px solid #33415c; }
.stacks { display: flex; flex-wrap: wrap; gap: 4px 18px; }
.stacks img { width: calc(50% - 9px); min-width: 420px; }
img.square { max-width: 720px; }
pre.long { max-height: 560px; overflow: auto; }
details summary { cursor: pointer; color: var(--muted); margin: 6px 0; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 10px; }
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """A whole document: ``sections`` are (anchor, heading, body HTML); empty bodies are left
    out, and the navigation lists the rest."""
    shown = [(a, h, b) for a, h, b in sections if b]
    nav = "".join(f'<a href="#{esc(a)}">{esc(h)}</a>' for a, h, _ in shown)
    body = "".join(f'<section id="{esc(a)}"><h2>{esc(h)}</h2>{b}</section>' for a, h, b in shown)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return ("<!DOCTYPE html>\n" + page_tag("page") +  # tlkit's mark: the next page may replace it
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
            f"<nav>{nav}</nav><main>{body}</main>"
            f"<footer>written by tlkit {esc(__version__)} on {esc(stamp)}</footer>"
            "</body></html>\n")


def table(head: Sequence[str], rows: Iterable[Sequence[object]], numeric: Iterable[int] = (),
          marked: Iterable[int] = ()) -> str:
    """Cells are escaped; ``numeric`` columns align right; ``marked`` rows are highlighted."""
    num, mark = set(numeric), set(marked)

    def cls(j: int) -> str:
        return ' class="num"' if j in num else ""

    top = "".join(f"<th{cls(j)}>{esc(h)}</th>" for j, h in enumerate(head))
    body = "".join(
        ("<tr class=\"mark\">" if i in mark else "<tr>")
        + "".join(f"<td{cls(j)}>{esc(c)}</td>" for j, c in enumerate(row)) + "</tr>"
        for i, row in enumerate(rows))
    return f"<table><thead><tr>{top}</tr></thead><tbody>{body}</tbody></table>"


def facts(pairs: Iterable[tuple[str, object]]) -> str:
    """A two-column table: a name and its value per row."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f"<table><tbody>{rows}</tbody></table>"


def img(uri: str, alt: str, cls: str = "") -> str:
    return f'<img src="{uri}" alt="{esc(alt)}"' + (f' class="{esc(cls)}">' if cls else ">")


def pre(text: str, cls: str = "") -> str:
    return (f'<pre class="{esc(cls)}">' if cls else "<pre>") + f"{esc(text)}</pre>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def badge(text: str, kind: str = "") -> str:
    return f'<span class="badge {esc(kind)}">{esc(text)}</span>'


def cards(items: Iterable[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
        for k, v in items) + "</div>"


def details(summary: str, body: str) -> str:
    return f"<details><summary>{esc(summary)}</summary>{body}</details>"


def verdict_kind(verdict: str | None) -> str:
    return {"positive transfer": "good", "negative transfer": "bad",
            "transfer beats the classical baseline": "good",
            "the classical baseline is better": "bad"}.get(verdict or "", "")


def fmt(value: object, spec: str = ".4f") -> str:
    """A number as the tables show it; '-' for none or not a number."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, (int, float)):
        if value != value:  # NaN
            return "-"
        return format(value, spec) if isinstance(value, float) else f"{value:,}"
    return str(value)


def write_page(path: Path, text: str) -> Path:
    """Written whole, then renamed: a reader never sees half a page. A place that cannot be
    written (a read-only run directory, a full disk) is a UserError naming it. Where a page may
    be written is the caller's to check first (``tlkit.outputs.check_output``, kind "page")."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")  # tlkit's pattern for leftovers
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise UserError(f"cannot write {path} ({e.strerror or e}); the folder is read-only or "
                        "full: write the page elsewhere with --out FILE") from None
    return path
