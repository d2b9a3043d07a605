"""Renderers for the run report's blocks: Markdown, one self-contained HTML page, and plain-text tables.

A document is a title plus sections of blocks: ("p", text), ("table", (headers, rows)), ("img", (path, alt)),
("list", items), ("code", text). Both page renderers read the same blocks, so the Markdown and the HTML always say
the same thing. In text, `x` marks code.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

Block = tuple[str, Any]
TEXT_COLUMNS = ("#", "stage", "status", "output", "artifact", "layer")


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(title: str, sections: list[tuple[str, list[Block]]], run_dir: Path) -> str:
    """Markdown; images are linked relative to the run directory."""
    out = [f"# {title}", ""]
    for name, blocks in sections:
        out += [f"## {name}", ""]
        for kind, value in blocks:
            if kind == "p" and value:
                out += [value, ""]
            elif kind == "table":
                out += [md_table(*value), ""]
            elif kind == "img":
                path, alt = value
                out += [f"![{alt}]({Path(path).relative_to(run_dir).as_posix()})", ""]
            elif kind == "list":
                out += [f"- {item}" for item in value] + [""]
            elif kind == "code":
                out += ["```yaml", value.rstrip(), "```", ""]
    return "\n".join(out)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1000px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #4c72b0; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.8em; color: #2a4d8f; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: right; }
th { background: #eef2f8; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .85em; }
code { background: #f6f8fa; padding: 0 .2em; }
"""


def _inline_code(text: str) -> str:
    """Escape, then turn `x` into <code>x</code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(title: str, sections: list[tuple[str, list[Block]]]) -> str:
    """One self-contained HTML page: inline CSS, images embedded as base64 data URIs."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for name, blocks in sections:
        out.append(f'<section id="{name.lower().replace(" ", "-")}"><h2>{html.escape(name)}</h2>')
        for kind, value in blocks:
            if kind == "p" and value:
                out.append(f"<p>{_inline_code(value)}</p>")
            elif kind == "table":
                headers, rows = value
                out.append(
                    "<table><thead><tr>"
                    + "".join(f"<th>{html.escape(h)}</th>" for h in headers)
                    + "</tr></thead><tbody>"
                )
                out += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows]
                out.append("</tbody></table>")
            elif kind == "img":
                path, alt = value
                encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                out.append(f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}"></p>')
            elif kind == "list":
                out.append("<ul>" + "".join(f"<li>{_inline_code(item)}</li>" for item in value) + "</ul>")
            elif kind == "code":
                out.append(f"<pre><code>{html.escape(value)}</code></pre>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def text_table(headers: list[str], rows: list[list[str]], *, left: tuple[str, ...] = TEXT_COLUMNS) -> str:
    """Aligned plain-text columns: the columns named in `left` (words) left-aligned, numbers right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if h in left else str(c).rjust(w) for c, w, h in zip(cells, widths, headers, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])
