"""Markdown -> one self-contained HTML page, for the small markdown subset the reports write.

Headings, bullet lists, pipe tables, images, fenced code and paragraphs. Every text fragment passes through
html.escape, so names from paths and configs can never inject markup; images next to the markdown are embedded
as base64, so the page stands alone.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path


def _inline(text: str) -> str:
    t = html.escape(text.replace("\\|", "|").replace("\\\\", "\\"))
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"(?<![\w*])_([^_]+)_(?![\w*])", r"<em>\1</em>", t)


def _img(alt: str, src: str, base: Path) -> str:
    path = (base / src).resolve()
    if path.parent != base.resolve() or not path.is_file():
        return f"<p>{html.escape(alt)} (figure missing)</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}">'


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def markdown_to_html(md: str, base: Path, title: str) -> str:
    """The small markdown subset this report writes: headings, lists, tables, images, code, paragraphs."""
    body, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("```")), len(lines))
            body.append("<pre><code>" + html.escape("\n".join(lines[i + 1 : j])) + "</code></pre>")
            i = j + 1
            continue
        if m := re.match(r"^(#{1,6}) (.*)", line):
            body.append(f"<h{len(m[1])}>{_inline(m[2])}</h{len(m[1])}>")
        elif m := re.match(r"^!\[(.*)\]\(([^)]+)\)$", line):
            body.append(_img(m[1], m[2], base))
        elif line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            rows = [_cells(r) for r in lines[i:j] if not re.match(r"^\|(-+\|)+$", r)]
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            rest = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rest}</tbody></table>")
            i = j
            continue
        elif line.startswith("- "):
            j = i
            while j < len(lines) and lines[j].startswith("- "):
                j += 1
            body.append("<ul>" + "".join(f"<li>{_inline(x[2:])}</li>" for x in lines[i:j]) + "</ul>")
            i = j
            continue
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;line-height:1.4}"
             "table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #bbb;padding:2px 6px}"
             "img{max-width:100%}pre{background:#f4f4f4;padding:8px;overflow-x:auto}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
