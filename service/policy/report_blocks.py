"""The reviewer's report as a small list of blocks, written as Markdown or HTML (the PDF: report_pdf).

Every format is written from the same blocks, so the Markdown, the HTML and the PDF say the same things.
Block kinds: h1 h2 h3 h4 p alert facts list table quote code pagebreak. `facts` is a list of (label, value)
pairs (the cover page); `alert` a paragraph that must stand out (NOT APPROVED); `code` holds regular
expressions and appears only in the appendix.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Block:
    kind: str
    content: Any


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_text(value: str) -> str:
    """A line of prose as Markdown shows it: a leading '#', '>' or '-' would become markup, so it is escaped."""
    return "\\" + value if value[:1] in {"#", ">", "-", "+", "*"} else value


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        kind, content = block.kind, block.content
        if kind in {"h1", "h2", "h3", "h4"}:
            out.append("#" * int(kind[1]) + " " + content)
        elif kind == "p":
            out.append(_md_text(content))
        elif kind == "alert":
            out.append(f"**{content}**")
        elif kind == "facts":
            out.append("\n".join(f"- **{label}:** {value}" for label, value in content))
        elif kind == "quote":
            out.append("> " + content.replace("\n", "\n> "))
        elif kind == "code":
            fence = "````" if "```" in content else "```"
            out.append(f"{fence}\n{content.rstrip(chr(10))}\n{fence}")
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in content))
        elif kind == "table":
            header, *rows = content
            lines = ["| " + " | ".join(_md_cell(c) for c in header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "pagebreak":
            out.append("---")
    return "\n\n".join(out) + "\n"


# Standalone (no CDN, no script). Long words, links and regular expressions wrap instead of running off the
# page: `overflow-wrap: anywhere` everywhere, pre-wrap in code, fixed table layout.
_CSS = """
*{box-sizing:border-box}
html{font-size:16px}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;line-height:1.45;color:#1b1b1b;
  max-width:52rem;margin:0 auto;padding:1.5rem 1rem;overflow-wrap:anywhere}
h1{font-size:1.8rem;margin:.2rem 0 1rem}h2{font-size:1.35rem;margin-top:2.2rem;border-bottom:2px solid #ddd;
  padding-bottom:.2rem}h3{font-size:1.12rem;margin-top:1.6rem}h4{font-size:1rem;margin:1.1rem 0 .3rem}
p,li,td,th,dd,dt{overflow-wrap:anywhere}
.alert{border:2px solid #b00020;background:#fff1f1;color:#7a0014;padding:.6rem .8rem;font-weight:700}
dl.facts{display:grid;grid-template-columns:minmax(8rem,14rem) minmax(0,1fr);gap:.35rem 1rem;margin:1rem 0}
dl.facts dt{font-weight:700}dl.facts dd{margin:0}
table{border-collapse:collapse;width:100%;table-layout:fixed;margin:.6rem 0}
td,th{border:1px solid #ccc;padding:.3rem .45rem;text-align:left;vertical-align:top}th{background:#f3f3f3}
blockquote{margin:.4rem 0;padding:.5rem .8rem;border-left:4px solid #8aa4c8;background:#f5f8fc;white-space:pre-wrap}
pre{white-space:pre-wrap;word-break:break-all;overflow-wrap:anywhere;background:#f4f4f4;padding:.5rem .7rem;
  font-size:.8rem;max-width:100%}
code{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace}
.pagebreak{break-after:page;border:0;border-top:1px dashed #ccc;margin:2rem 0}
@media print{body{max-width:none;padding:0}.pagebreak{border:0}}
"""


_INLINE_CODE = re.compile(r"`([^`\n]+)`")


def _prose(text: str) -> str:
    """Escaped prose with `inline code` (commands, file keys) as <code>."""
    return _INLINE_CODE.sub(r"<code>\1</code>", html.escape(text))


def to_html(blocks: list[Block], title: str) -> str:
    esc = html.escape
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
    ]
    for block in blocks:
        kind, content = block.kind, block.content
        if kind in {"h1", "h2", "h3", "h4"}:
            out.append(f"<{kind}>{esc(content)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_prose(content)}</p>")
        elif kind == "alert":
            out.append(f'<p class="alert" role="alert">{_prose(content)}</p>')
        elif kind == "facts":
            items = "".join(f"<dt>{esc(label)}</dt><dd>{_prose(value)}</dd>" for label, value in content)
            out.append(f'<dl class="facts">{items}</dl>')
        elif kind == "quote":
            out.append(f"<blockquote>{esc(content)}</blockquote>")
        elif kind == "code":
            out.append(f"<pre><code>{esc(content)}</code></pre>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_prose(item)}</li>" for item in content) + "</ul>")
        elif kind == "table":
            header, *rows = content
            head = "".join(f"<th>{esc(str(c))}</th>" for c in header)
            body = "".join("<tr>" + "".join(f"<td>{_prose(str(c))}</td>" for c in row) + "</tr>" for row in rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "pagebreak":
            out.append('<hr class="pagebreak">')
    out.append("</body></html>")
    return "\n".join(out) + "\n"
