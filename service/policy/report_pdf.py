"""The reviewer's report as PDF, written with fpdf2 from the same blocks as the Markdown and the HTML.

fpdf2 is pure Python and maintained (py-pdf); it embeds a subset of a TrueType font, so the report shows the
borrowers' words as written: Spanish, Vietnamese, curly quotes, "≤". The font is a Unicode TTF found on the
system (DejaVu, Liberation or Noto; `find_fonts`). A character the font has no glyph for (an emoji or Chinese
with DejaVu) is never dropped silently or left to crash: it is printed as a visible ``[U+1F3E0]`` marker.
With no Unicode font on the system the PDF falls back to the built-in Helvetica (Latin-1): typographic
quotes and dashes become their ASCII forms and every other character outside Latin-1 becomes such a marker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.enums import WrapMode, XPos, YPos
from fpdf.fonts import FontFace

from service.policy.report_blocks import Block

_FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path("/Library/Fonts"),
              Path("C:/Windows/Fonts"))
# Regular, bold, monospace: the first family found whole wins.
_FAMILIES = (
    ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf"),
    ("NotoSans-Regular.ttf", "NotoSans-Bold.ttf", "NotoSansMono-Regular.ttf"),
    ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf", "LiberationMono-Regular.ttf"),
)
# Invisible joiners and emoji presentation selectors carry no text of their own.
_INVISIBLE = {0x200B, 0x200C, 0x200D, 0xFE0E, 0xFE0F}
_ASCII = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
          "\u2026": "...", "\u2022": "-", "\u2264": "<=", "\u2265": ">=", "\u00a0": " "}


@dataclass(frozen=True)
class PdfFonts:
    regular: Path
    bold: Path
    mono: Path


def find_fonts(dirs: tuple[Path, ...] = _FONT_DIRS) -> PdfFonts | None:
    """A Unicode TrueType family (regular, bold, mono) on this system, or None."""
    for names in _FAMILIES:
        found: list[Path] = []
        for name in names:
            path = next((p for d in dirs if d.is_dir() for p in sorted(d.rglob(name))), None)
            if path is None:
                break
            found.append(path)
        if len(found) == 3:
            return PdfFonts(*found)
    return None


@cache
def font_coverage(path: Path) -> frozenset[int]:
    with TTFont(path, lazy=True) as font:
        cmap = font.getBestCmap() or {}
        return frozenset(cmap)


def marker(char: str) -> str:
    return f"[U+{ord(char):04X}]"


def sanitizer(covered: frozenset[int] | None) -> Callable[[str], str]:
    """The text as the font can print it: `covered` code points kept, others as visible markers; None is the
    built-in Latin-1 font."""

    def clean(text: str) -> str:
        out: list[str] = []
        for char in text:
            code = ord(char)
            if code in _INVISIBLE:
                continue
            if char in {"\n", "\t"}:
                out.append(char)
            elif covered is None:
                ascii_form = _ASCII.get(char, char)
                out.append(ascii_form if all(ord(c) < 256 for c in ascii_form) else marker(char))
            else:
                out.append(char if code in covered else marker(char))
        return "".join(out)

    return clean


class _Pdf(FPDF):
    def __init__(self, footer: str, fonts: PdfFonts | None) -> None:
        super().__init__(orientation="P", unit="mm", format="Letter")
        self.footer_text = footer
        self.set_margins(18, 16, 18)
        self.set_auto_page_break(auto=True, margin=16)
        if fonts is None:
            self.sans, self.mono = "helvetica", "courier"
            self.clean = {"": sanitizer(None), "B": sanitizer(None), "mono": sanitizer(None)}
        else:
            self.add_font("Sans", "", fonts.regular)
            self.add_font("Sans", "B", fonts.bold)
            self.add_font("Mono", "", fonts.mono)
            self.sans, self.mono = "Sans", "Mono"
            self.clean = {"": sanitizer(font_coverage(fonts.regular)), "B": sanitizer(font_coverage(fonts.bold)),
                          "mono": sanitizer(font_coverage(fonts.mono))}

    def footer(self) -> None:
        self.set_y(-11)
        self.set_font(self.sans, "", 8)
        self.set_text_color(110)
        self.cell(0, 5, self.clean[""](f"{self.footer_text} - page {self.page_no()} of {{nb}}"), align="C")
        self.set_text_color(0)

    def text_block(self, text: str, *, size: float = 10, style: str = "", height: float = 5, indent: float = 0,
                   fill: bool = False, color: tuple[int, int, int] = (0, 0, 0)) -> None:
        self.set_font(self.sans, style, size)
        self.set_text_color(*color)
        self.set_x(self.l_margin + indent)
        self.multi_cell(self.epw - indent, height, self.clean[style or ""](_plain(text)), align="L", fill=fill,
                        new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_text_color(0)


def _plain(text: str) -> str:
    """Prose as the PDF prints it: `inline code` marks dropped (the words stay)."""
    return text.replace("`", "")


def to_pdf(blocks: list[Block], *, title: str, footer: str,
           fonts: PdfFonts | Literal["system", "builtin"] = "system") -> bytes:
    """The blocks as a PDF. `fonts`: "system" finds a Unicode font (else the built-in one), "builtin" forces
    the built-in Latin-1 font, or a given family."""
    chosen = find_fonts() if fonts == "system" else None if fonts == "builtin" else fonts
    pdf = _Pdf(footer, chosen)
    pdf.set_title(title)
    pdf.set_creator("textback policy report")
    pdf.add_page()
    for block in blocks:
        _write(pdf, block)
    return bytes(pdf.output())


def _write(pdf: _Pdf, block: Block) -> None:
    kind, content = block.kind, block.content
    if kind == "h1":
        pdf.text_block(content, size=18, style="B", height=9)
        pdf.ln(2)
    elif kind == "h2":
        if pdf.get_y() > pdf.h - 50:
            pdf.add_page()
        pdf.ln(4)
        pdf.start_section(pdf.clean["B"](content), level=0)  # the PDF's outline (bookmarks)
        pdf.text_block(content, size=14, style="B", height=7)
        pdf.set_draw_color(190)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
        pdf.ln(2)
    elif kind in {"h3", "h4"}:
        if pdf.get_y() > pdf.h - 40:
            pdf.add_page()
        pdf.ln(3 if kind == "h3" else 1.5)
        if kind == "h3":
            pdf.start_section(pdf.clean["B"](content), level=1)
        pdf.text_block(content, size=12 if kind == "h3" else 10.5, style="B", height=6)
    elif kind == "p":
        pdf.text_block(content)
        pdf.ln(1.5)
    elif kind == "alert":
        pdf.set_draw_color(176, 0, 32)
        pdf.set_fill_color(255, 241, 241)
        pdf.text_block(content, style="B", fill=True, color=(122, 0, 20))
        pdf.ln(2)
    elif kind == "quote":
        pdf.set_fill_color(240, 244, 250)
        pdf.text_block(content, indent=4, fill=True)
        pdf.ln(1)
    elif kind == "list":
        for item in content:
            pdf.text_block(("\u2022 " if pdf.sans == "Sans" else "- ") + str(item), indent=3)
        pdf.ln(1.5)
    elif kind == "code":
        pdf.set_font(pdf.mono, "", 7.5)
        pdf.set_fill_color(244, 244, 244)
        pdf.multi_cell(pdf.epw, 3.8, pdf.clean["mono"](content), align="L", fill=True, wrapmode=WrapMode.CHAR,
                       new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(2)
    elif kind == "facts":
        _table(pdf, [[str(label), str(value)] for label, value in content], widths=(1, 3), header=False)
    elif kind == "table":
        _table(pdf, [[str(c) for c in row] for row in content], widths=None, header=True)
    elif kind == "pagebreak":
        pdf.add_page()


def _table(pdf: _Pdf, rows: list[list[str]], *, widths: tuple[int, ...] | None, header: bool) -> None:
    pdf.set_font(pdf.sans, "", 8.5)
    pdf.set_draw_color(200)
    pdf.set_fill_color(255)
    columns = len(rows[0])
    heading = FontFace(emphasis="BOLD", fill_color=(238, 238, 238))
    with pdf.table(col_widths=widths or tuple([1] * columns), text_align="LEFT", line_height=4.2,
                   first_row_as_headings=header, headings_style=heading, width=pdf.epw, padding=1.2) as table:
        for row in rows:
            cells = table.row()
            for value in row:
                bold = header and row is rows[0]
                cells.cell(pdf.clean["B" if bold else ""](_plain(value)))
    pdf.ln(2)
