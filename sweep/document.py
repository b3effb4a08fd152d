"""The report's document: headings, paragraphs, bullet lists, tables and figures, rendered as markdown and as one HTML page."""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from typing import Any, Union

from sweep.plots import Figure


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str  # inline markdown: `code` and **bold**


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[Any]]


Block = Union[Heading, Para, Bullets, Table, Figure]


# --------------------------------------------------------------------------- markdown


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            out += [_md_table(b.header, b.rows), ""]
        elif isinstance(b, Figure):
            out += [f"![{b.path.stem}]({b.path.name})", ""] + ([_files_line(b), ""] if b.files else [])
    return "\n".join(out)


def _files_line(figure: Figure) -> str:
    """Where a figure's vector copy and data are (the sweep folder, the parent run's artifacts)."""
    return ("Beside it: " + ", ".join(f"`{f.name}`" for f in figure.files)
            + " (the CSVs hold the points drawn, in the figure's units: series, x, mean, ci_low, ci_high, seeds).")


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    def clean(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(clean(x) for x in row) + " |" for row in rows])


# --------------------------------------------------------------------------- html

_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1100px;
color:#1b1b1b;line-height:1.45;padding:0 1em}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;
border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;
padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
code{background:#f1f1f1;padding:0 .2em;border-radius:3px}img{max-width:100%;height:auto;display:block;margin:.5em 0}
ul li{margin:.2em 0}"""


def _inline(text: str) -> str:
    """Escape, then the markdown marks the report uses: `code`, [links](url) and **bold**."""
    s = html.escape(str(text))
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\[([^\]]+)\]\((https?://[^)\s]+)\)", r'<a href="\2">\1</a>', s)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)


def to_html(blocks: list[Block], title: str) -> str:
    """One self-contained page: no file or network reference, plots as data URIs."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):  # an id per section: report.html#search-history
            anchor = re.sub(r"[^a-z0-9]+", "-", b.text.lower()).strip("-")
            out.append(f'<h{b.level} id="{anchor}">{_inline(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{_inline(x)}</td>" for x in row) + "</tr>" for row in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            out.append(f'<img alt="{html.escape(b.path.stem)}" src="data:image/png;base64,{data}">')
            if b.files:
                out.append(f"<p>{_inline(_files_line(b))}</p>")
    out.append("</body></html>")
    return "\n".join(out)
