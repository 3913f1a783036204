"""Render a decoded receipt as a PNG that looks like the thermal paper it came from.

Evidence for a QA engineer: the report shows what the printer put on paper, Chinese (GB18030)
receipts included, with a torn edge when the receipt never got its cut and a COPY stamp on a
reprint. The one thing to know: Chinese needs a CJK font on the machine (Debian's
fonts-wqy-zenhei, installed by scripts/report-tools.sh); without one the image is still made,
with Chinese shown as boxes, and a warning is logged once. Rendering never raises for content.
"""

from __future__ import annotations

import functools
import io
import logging
import shutil
import subprocess
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

__all__ = ["ReceiptFont", "cjk_font", "receipt_font", "render_receipt_png"]

FONT_PX = 20  # a 12x24-dot printer font at roughly screen size
MIN_COLUMNS = 32  # 58 mm paper; wider receipts (80 mm: 48 columns) widen the paper
MAX_COLUMNS = 96
MAX_LINES = 400
PAPER = (255, 255, 255)
INK = (28, 28, 28)
BACKGROUND = (228, 230, 234)
SHADOW = (196, 199, 205)
MARK = (200, 30, 30)
MARGIN = 14  # paper's inner margin
BORDER = 18  # background around the paper

# Known CJK font files (Debian's packages), tried when fontconfig is absent.
_KNOWN_CJK_FONTS: tuple[tuple[str, int], ...] = (
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 1),  # WenQuanYi Zen Hei Mono
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 1),  # WenQuanYi Micro Hei Mono
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 0),
    ("/usr/share/fonts/opentype/noto/NotoSansMonoCJK-Regular.ttc", 0),
)
_KNOWN_MONO_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class ReceiptFont:
    """The font receipts are drawn with, and whether it can draw Chinese."""

    font: Font
    name: str
    cjk: bool


def _fc_list(pattern: str) -> list[tuple[str, int]]:
    """Font faces fontconfig lists for `pattern` as (file, face index); [] without fontconfig."""
    exe = shutil.which("fc-list")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, pattern, "--format", "%{file}|%{index}\n"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("fc-list failed: %s", exc)
        return []
    faces = []
    for line in out.splitlines():
        path, _, index = line.partition("|")
        if path:
            faces.append((path, int(index) if index.isdigit() else 0))
    return sorted(faces)


def _load(path: str, index: int) -> ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.truetype(path, FONT_PX, index=index)
    except OSError:
        return None


def _draws_cjk(font: ImageFont.FreeTypeFont) -> bool:
    """True when two different ideographs come out as two different glyphs (not 'tofu')."""
    masks = []
    for ch in ("支", "印"):
        img = Image.new("L", (FONT_PX * 2, FONT_PX * 2), 0)
        ImageDraw.Draw(img).text((2, 2), ch, font=font, fill=255)
        masks.append(img.tobytes())
    return masks[0] != masks[1] and any(masks[0])


def _is_monospace(font: ImageFont.FreeTypeFont) -> bool:
    return font.getlength("i") == font.getlength("M")


@functools.cache
def cjk_font() -> ReceiptFont | None:
    """A font that draws Chinese, monospaced when one exists; None when the machine has none."""
    found = []
    for path, index in [*_fc_list(":lang=zh-cn"), *_KNOWN_CJK_FONTS]:
        font = _load(path, index) if Path(path).is_file() else None
        if font is not None and _draws_cjk(font):
            found.append((not _is_monospace(font), path, font))
    if not found:
        return None
    _, path, font = min(found, key=lambda f: (f[0], f[1]))
    family, _style = font.getname()
    return ReceiptFont(font, f"{family} ({path})", cjk=True)


@functools.cache
def receipt_font() -> ReceiptFont:
    """The best font here: CJK-capable, else a monospace one, else Pillow's own (warned once)."""
    cjk = cjk_font()
    if cjk is not None:
        return cjk
    for path, index in [*_fc_list(":spacing=mono"), *((f, 0) for f in _KNOWN_MONO_FONTS)]:
        font = _load(path, index) if Path(path).is_file() else None
        if font is not None and _is_monospace(font):
            log.warning(
                "no CJK font found: Chinese receipt text renders as boxes "
                "(install fonts-wqy-zenhei: scripts/report-tools.sh); using %s",
                path,
            )
            return ReceiptFont(font, path, cjk=False)
    log.warning(
        "no CJK or monospace font found: receipts use Pillow's default font "
        "(install fonts-wqy-zenhei: scripts/report-tools.sh)"
    )
    try:
        default: Font = ImageFont.load_default(size=FONT_PX)
    except (OSError, ValueError, TypeError):  # Pillow without FreeType
        default = ImageFont.load_default()
    return ReceiptFont(default, "Pillow default", cjk=False)


def _columns(text: str) -> int:
    """Printer columns a line takes: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _clean(line: str) -> str:
    """Printable text only: tabs expanded, control characters shown as '·'."""
    line = line.rstrip("\r\n").expandtabs(4)
    return "".join(ch if unicodedata.category(ch)[0] != "C" else "·" for ch in line)


def _text_width(font: Font, text: str) -> float:
    return float(font.getlength(text)) if text else 0.0


def _stamp(text: str, font: Font, color: tuple[int, int, int]) -> Image.Image:
    """A rotated rubber stamp (transparent background) saying `text`."""
    pad = 10
    width = int(_text_width(font, text)) + 2 * pad
    height = FONT_PX + 2 * pad
    img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    ink = (*color, 190)
    draw.rectangle((1, 1, width - 2, height - 2), outline=ink, width=3)
    draw.text((pad, pad - 2), text, font=font, fill=ink)
    return img.rotate(18, expand=True, resample=Image.Resampling.BICUBIC)


def _torn_edge(width: int, top: int, tooth: int = 8) -> list[tuple[int, int]]:
    """The paper outline's bottom as a zigzag: the receipt was never cut."""
    points = []
    x = width
    up = True
    while x > 0:
        points.append((x, top + (0 if up else tooth)))
        x -= tooth
        up = not up
    points.append((0, top + (0 if up else tooth)))
    return points


def render_receipt_png(
    lines: Sequence[str],
    *,
    title: str | None = None,
    copy: bool = False,
    complete: bool = True,
) -> bytes:
    """The receipt as PNG bytes: white paper, monospace text, cut or torn, COPY when a reprint.

    `lines` are decoded text lines (any script); `complete` is False when the paper was never
    cut (a jam or a power loss mid-receipt); `copy` stamps it as a reprint.
    """
    rf = receipt_font()
    font = rf.font
    text_lines = [_clean(line) for line in lines]
    if len(text_lines) > MAX_LINES:
        hidden = len(text_lines) - MAX_LINES
        text_lines = [*text_lines[:MAX_LINES], f"... ({hidden} more lines)"]
    columns = max([MIN_COLUMNS, *(_columns(t) for t in text_lines)])
    columns = min(columns, MAX_COLUMNS)
    cell = max(_text_width(font, "M"), FONT_PX / 2)
    line_h = int(FONT_PX * 1.3)

    paper_w = int(columns * cell) + 2 * MARGIN
    body_h = max(len(text_lines), 1) * line_h + 2 * MARGIN
    tooth = 8
    title_h = line_h + 6 if title else 0
    marker_h = line_h + 4 if not complete else 6
    width = paper_w + 2 * BORDER
    height = BORDER + title_h + body_h + tooth + marker_h + BORDER

    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((BORDER, BORDER - 4), _clean(title)[:120], font=font, fill=(70, 74, 82))
    left = BORDER
    top = BORDER + title_h
    bottom = top + body_h

    # paper (with a soft shadow), cut straight or torn
    if complete:
        outline = [(0, 0), (paper_w, 0), (paper_w, body_h), (0, body_h)]
    else:
        outline = [(0, 0), (paper_w, 0), *_torn_edge(paper_w, body_h, tooth)]
    for dx, color in ((3, SHADOW), (0, PAPER)):
        draw.polygon([(left + x + dx, top + y + dx) for x, y in outline], fill=color)

    y = top + MARGIN
    for text in text_lines:
        draw.text((left + MARGIN, y), text, font=font, fill=INK)
        y += line_h

    if complete:
        # the cut: a dashed line just below the paper's edge
        for x in range(left, left + paper_w, 12):
            draw.line((x, bottom + 4, x + 6, bottom + 4), fill=(150, 150, 150), width=1)
    else:
        draw.text((left, bottom + tooth + 2), "(no cut)", font=font, fill=MARK)

    if copy:
        stamp = _stamp("COPY", font, MARK)
        sx = left + paper_w - stamp.width - MARGIN // 2
        sy = top + max(MARGIN, min(body_h // 3, body_h - stamp.height))
        img.paste(stamp, (max(left, sx), sy), stamp)

    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
