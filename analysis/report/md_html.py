"""Markdown -> one self-contained HTML page, rendered by markdown-it-py (CommonMark plus pipe tables).

Raw HTML in the markdown is off, so names from paths, configs and logs reach the page as escaped text and can
never inject markup; markdown-it also refuses `javascript:`-style link targets. Images that lie next to the
markdown are embedded as base64 (the page stands alone) and keep their file name in `data-file`; an image
outside that folder or missing is shown as its alt text, so a report can never read files elsewhere.
"""

from __future__ import annotations

import base64
import html
import mimetypes
from pathlib import Path

from markdown_it import MarkdownIt

STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;line-height:1.4}"
    "table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #bbb;padding:2px 6px}"
    "img{max-width:100%}pre{background:#f4f4f4;padding:8px;overflow-x:auto}"
)


def _image_rule(base: Path):
    def render(self, tokens, idx, options, env) -> str:
        tok = tokens[idx]
        alt = self.renderInlineAsText(tok.children or [], options, env)
        src = str(tok.attrGet("src") or "")
        path = (base / src).resolve()
        if path.parent != base.resolve() or not path.is_file():
            return f"{html.escape(alt)} (figure missing)"
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return (
            f'<img alt="{html.escape(alt, quote=True)}" data-file="{html.escape(path.name, quote=True)}" '
            f'src="data:{mime};base64,{data}">'
        )

    return render


def markdown_to_html(md: str, base: Path, title: str) -> str:
    """The whole page for markdown `md` whose images are relative to the folder `base`."""
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    parser.add_render_rule("image", _image_rule(Path(base)))
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n" + parser.render(md) + "</body></html>\n"
    )


def render_file(md_path: str | Path) -> Path:
    """Write report.html (or <stem>.html) beside the markdown file, titled by its first heading; returns it."""
    md_path = Path(md_path)
    md = md_path.read_text(encoding="utf-8")
    title = next((ln.lstrip("#").strip() for ln in md.splitlines() if ln.startswith("# ")), md_path.stem)
    out = md_path.with_suffix(".html")
    out.write_text(markdown_to_html(md, md_path.parent, title), encoding="utf-8")
    return out
