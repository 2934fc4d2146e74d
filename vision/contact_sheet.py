"""A contact sheet: the whole dialogue in one PNG, one column per turn (side by side, in order). Each column
shows the turn's picture, its debug overlay, the user's message (wrapped) and the subject memory after the
turn as thumbnails captioned with their ids and names. Pure PIL; missing or unreadable pictures become
grey placeholders, so a failed turn or a subject without a reference never stops the sheet.

`sheet_turns` turns what the service returns (turns, subjects and a way to fetch image bytes) into the
sheet's input, so the demo, the CLI and the benchmark runner all draw the same picture."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, UnidentifiedImageError
from pydantic import BaseModel, Field

from studio.turns import SubjectView, Turn
from vision.debug import fit_text
from vision.labels import Font, Rect, label_font

BACKGROUND = (248, 248, 246)
INK = (30, 30, 30)
FAINT = (120, 120, 120)
PLACEHOLDER = (214, 214, 210)
THUMBS_PER_ROW = 3
MAX_MESSAGE_LINES = 8


class SheetSubject(BaseModel):
    """One entry of the subject memory as the sheet shows it."""

    id: str
    name: str = ""
    reference: bytes | None = Field(default=None, description="PNG/JPEG of its reference; None draws a placeholder")


class SheetTurn(BaseModel):
    """One column of the sheet."""

    index: int
    message: str = ""
    status: str = "done"
    image: bytes | None = Field(default=None, description="the turn's picture; None for a failed turn")
    debug: bytes | None = Field(default=None, description="the debug overlay; None when there is none")
    subjects: list[SheetSubject] = Field(default_factory=list, description="the memory after this turn")


@dataclass(frozen=True)
class TurnCells:
    """Where one turn's parts go on the sheet."""

    header: Rect
    image: Rect
    debug: Rect
    message: Rect
    memory_title: Rect
    thumbs: list[Rect]
    captions: list[Rect]


@dataclass(frozen=True)
class SheetLayout:
    width: int
    height: int
    cell: int
    title_size: int
    text_size: int
    caption_size: int
    message_lines: list[list[str]]
    turns: list[TurnCells]


def wrap_text(text: str, font: Font, width: int, max_lines: int = MAX_MESSAGE_LINES) -> list[str]:
    """`text` broken into lines no wider than `width` pixels (words longer than a line are split), at most
    `max_lines` of them, the last one ending in an ellipsis when text was left out."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and font.getlength(candidate) <= width:
            lines[-1] = candidate
            continue
        while font.getlength(word) > width and len(word) > 1:
            cut = max(1, next((n for n in range(len(word), 0, -1) if font.getlength(word[:n]) <= width), 1))
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = fit_text(lines[-1] + " …", font, width)
    return lines


def sheet_layout(turns: Sequence[SheetTurn], cell: int = 256) -> SheetLayout:
    """The sheet's geometry: one `cell`-wide column per turn; every row as tall as its tallest entry."""
    margin = max(8, cell // 16)
    gap = max(4, margin // 2)
    title_size, text_size, caption_size = max(12, cell // 12), max(10, cell // 18), max(9, cell // 21)
    title_h = round(title_size * 1.4)
    line_h = round(text_size * 1.3)
    caption_h = round(caption_size * 1.4)
    thumb = (cell - (THUMBS_PER_ROW - 1) * gap) // THUMBS_PER_ROW
    text_font = label_font(text_size)
    message_lines = [wrap_text(turn.message, text_font, cell) for turn in turns]
    text_h = max((len(lines) for lines in message_lines), default=0) * line_h
    rows = max((math.ceil(len(turn.subjects) / THUMBS_PER_ROW) for turn in turns), default=0)
    row_h = thumb + caption_h + gap
    columns: list[TurnCells] = []
    y_header = margin
    y_image = y_header + title_h
    y_debug = y_image + cell + gap
    y_message = y_debug + cell + gap
    y_memory_title = y_message + text_h + gap
    y_memory = y_memory_title + caption_h
    for i, turn in enumerate(turns):
        x = margin + i * (cell + margin)
        thumbs, captions = [], []
        for k in range(len(turn.subjects)):
            tx = x + (k % THUMBS_PER_ROW) * (thumb + gap)
            ty = y_memory + (k // THUMBS_PER_ROW) * row_h
            thumbs.append(Rect(tx, ty, tx + thumb, ty + thumb))
            captions.append(Rect(tx, ty + thumb, tx + thumb, ty + thumb + caption_h))
        columns.append(
            TurnCells(
                header=Rect(x, y_header, x + cell, y_image),
                image=Rect(x, y_image, x + cell, y_image + cell),
                debug=Rect(x, y_debug, x + cell, y_debug + cell),
                message=Rect(x, y_message, x + cell, y_message + text_h),
                memory_title=Rect(x, y_memory_title, x + cell, y_memory),
                thumbs=thumbs,
                captions=captions,
            )
        )
    width = margin + max(len(turns), 1) * (cell + margin)
    height = y_memory + rows * row_h + margin
    return SheetLayout(width, height, cell, title_size, text_size, caption_size, message_lines, columns)


def _decode(data: bytes | None) -> Image.Image | None:
    if not data:
        return None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return image.convert("RGB")


def _paste_fitted(sheet: Image.Image, data: bytes | None, rect: Rect, missing: str, font_size: int) -> None:
    """The picture scaled to fit `rect` (aspect kept, centred), or a grey plate saying `missing`."""
    draw = ImageDraw.Draw(sheet)
    draw.rectangle([rect.x0, rect.y0, rect.x1 - 1, rect.y1 - 1], fill=PLACEHOLDER)
    image = _decode(data)
    if image is None:
        font = label_font(font_size)
        text = fit_text(missing, font, rect.width - 4)
        cx, cy = rect.center
        draw.text((cx, cy), text, fill=FAINT, font=font, anchor="mm")
        return
    scale = min(rect.width / image.width, rect.height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
    fitted = image.resize(size, resample)
    sheet.paste(fitted, (rect.x0 + (rect.width - size[0]) // 2, rect.y0 + (rect.height - size[1]) // 2))


def render_contact_sheet(turns: Sequence[SheetTurn], cell: int = 256) -> bytes:
    """PNG of the dialogue: one column per turn (picture, debug overlay, message, memory thumbnails)."""
    layout = sheet_layout(turns, cell)
    sheet = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    title_font, text_font = label_font(layout.title_size), label_font(layout.text_size)
    caption_font = label_font(layout.caption_size)
    line_h = round(layout.text_size * 1.3)
    for turn, cells, lines in zip(turns, layout.turns, layout.message_lines, strict=True):
        title = f"turn {turn.index}" if turn.status == "done" else f"turn {turn.index} ({turn.status})"
        draw.text((cells.header.x0, cells.header.y0), fit_text(title, title_font, cell), fill=INK, font=title_font)
        _paste_fitted(sheet, turn.image, cells.image, "no picture", layout.text_size)
        _paste_fitted(sheet, turn.debug, cells.debug, "no debug picture", layout.text_size)
        for n, line in enumerate(lines):
            draw.text((cells.message.x0, cells.message.y0 + n * line_h), line, fill=INK, font=text_font)
        memory = f"memory after turn {turn.index}" if turn.subjects else "memory empty"
        draw.text((cells.memory_title.x0, cells.memory_title.y0), memory, fill=FAINT, font=caption_font)
        for subject, thumb, caption in zip(turn.subjects, cells.thumbs, cells.captions, strict=True):
            _paste_fitted(sheet, subject.reference, thumb, "no reference", layout.caption_size)
            text = fit_text(f"{subject.id} {subject.name}".strip(), caption_font, caption.width)
            draw.text((caption.x0, caption.y0 + 1), text, fill=INK, font=caption_font)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def memory_after(turn: Turn, turns: Sequence[Turn], subjects: Sequence[SubjectView]) -> list[tuple[SubjectView, str]]:
    """The subjects known after `turn`, each with the image url of the reference it had then.

    The service keeps only the final memory, so this is rebuilt from it: a subject is known once its
    first_seen_turn is reached (uploaded ones always); its final reference is shown when it was taken at or
    before this turn, otherwise the crop of the latest earlier turn that found it (none: no thumbnail)."""
    known = []
    for subject in subjects:
        if subject.first_seen_turn is not None and subject.first_seen_turn > turn.index:
            continue
        url = subject.reference_url
        if url and subject.refreshed_turn is not None and subject.refreshed_turn > turn.index:
            url = None
            for earlier in sorted(turns, key=lambda t: t.index):
                if earlier.index > turn.index:
                    break
                crop = next((c for c in earlier.crops if c.subject_id == subject.id and c.found and c.crop_url), None)
                url = crop.crop_url if crop is not None else url
        known.append((subject, url or ""))
    return known


def sheet_turns(
    turns: Sequence[Turn], subjects: Sequence[SubjectView], fetch: Callable[[str], bytes | None]
) -> list[SheetTurn]:
    """The sheet's input from what the service returns; `fetch` gives an image url's bytes (None: gone)."""
    fetched: dict[str, bytes | None] = {}

    def get(url: str | None) -> bytes | None:
        if not url:
            return None
        if url not in fetched:
            fetched[url] = fetch(url)
        return fetched[url]

    ordered = sorted(turns, key=lambda t: t.index)
    return [
        SheetTurn(
            index=turn.index,
            message=turn.request.message or ("(explicit plan)" if turn.request.plan is not None else ""),
            status=turn.status,
            image=get(turn.image_url),
            debug=get(turn.debug_image_url),
            subjects=[
                SheetSubject(id=subject.id, name=subject.name, reference=get(url))
                for subject, url in memory_after(turn, ordered, subjects)
            ],
        )
        for turn in ordered
    ]
