"""The contact sheet: one column per turn, every part where the layout says, nothing crashes on gaps."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from studio.turns import CropView, SubjectView, Turn, TurnRequest, TurnStatus
from vision.contact_sheet import (
    BACKGROUND,
    PLACEHOLDER,
    SheetSubject,
    SheetTurn,
    memory_after,
    render_contact_sheet,
    sheet_layout,
    sheet_turns,
    wrap_text,
)
from vision.labels import label_font

RED, BLUE, GREEN, YELLOW = (220, 20, 20), (20, 20, 220), (20, 200, 20), (230, 230, 0)


def _png(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def _at(pixels: np.ndarray, point: tuple[int, int]) -> tuple[int, ...]:
    x, y = point
    return tuple(int(v) for v in pixels[y, x])


def _turn(index: int, n_subjects: int, message: str = "a cat") -> SheetTurn:
    return SheetTurn(
        index=index,
        message=message,
        image=_png(RED),
        debug=_png(BLUE),
        subjects=[SheetSubject(id=str(k + 1), name="cat", reference=_png(GREEN)) for k in range(n_subjects)],
    )


def test_sheet_grows_with_turns_subjects_and_message_length() -> None:
    widths = [sheet_layout([_turn(i, 1) for i in range(n)]).width for n in (1, 2, 3, 6)]
    assert widths == sorted(widths) and len(set(widths)) == 4
    assert sheet_layout([_turn(0, 1), _turn(1, 7)]).height > sheet_layout([_turn(0, 1), _turn(1, 3)]).height
    long = "the girl and her dog walk along the river " * 4
    assert sheet_layout([_turn(0, 1, long)]).height > sheet_layout([_turn(0, 1, "short")]).height
    data = render_contact_sheet([_turn(i, 2) for i in range(3)])
    layout = sheet_layout([_turn(i, 2) for i in range(3)])
    assert _pixels(data).shape == (layout.height, layout.width, 3)


def test_each_turns_parts_are_drawn_in_their_cells() -> None:
    turns = [
        SheetTurn(
            index=0,
            message="one",
            image=_png(RED),
            debug=_png(BLUE),
            subjects=[SheetSubject(id="1", name="girl", reference=_png(GREEN))],
        ),
        SheetTurn(
            index=1,
            message="two",
            image=_png(BLUE),
            debug=_png(RED),
            subjects=[
                SheetSubject(id="1", name="girl", reference=_png(GREEN)),
                SheetSubject(id="1-1", name="hat", reference=_png(YELLOW)),
                SheetSubject(id="2", name="dog", reference=_png(RED)),
                SheetSubject(id="3", name="cat", reference=_png(BLUE)),
            ],
        ),
    ]
    layout = sheet_layout(turns)
    pixels = _pixels(render_contact_sheet(turns))
    first, second = layout.turns
    assert second.image.x0 > first.image.x1  # side by side, in order
    assert first.image.y0 == second.image.y0 and first.debug.y0 > first.image.y1
    assert _at(pixels, first.image.center) == RED and _at(pixels, first.debug.center) == BLUE
    assert _at(pixels, second.image.center) == BLUE and _at(pixels, second.debug.center) == RED
    assert [_at(pixels, thumb.center) for thumb in second.thumbs] == [GREEN, YELLOW, RED, BLUE]
    assert second.thumbs[3].y0 > second.thumbs[0].y1  # a second row of thumbnails
    assert _at(pixels, first.thumbs[0].center) == GREEN
    assert _at(pixels, (1, 1)) == BACKGROUND
    assert _at(pixels, (first.image.x1 + 2, first.image.center[1])) == BACKGROUND  # the margin between columns
    text = pixels[second.message.y0 : second.message.y1, second.message.x0 : second.message.x1]
    assert (text != BACKGROUND).any(axis=-1).any()  # the message is written


def test_pictures_keep_their_shape_centred_in_the_cell() -> None:
    turns = [SheetTurn(index=0, message="wide", image=_png(RED, (128, 64)), debug=_png(BLUE, (64, 128)))]
    cells = sheet_layout(turns).turns[0]
    pixels = _pixels(render_contact_sheet(turns))
    assert _at(pixels, cells.image.center) == RED
    assert _at(pixels, (cells.image.center[0], cells.image.y0 + 2)) == PLACEHOLDER  # letterbox above
    assert _at(pixels, (cells.debug.x0 + 2, cells.debug.center[1])) == PLACEHOLDER  # pillarbox left


def test_missing_and_unreadable_pictures_become_placeholders() -> None:
    turns = [
        SheetTurn(index=0, message="", status="failed"),
        SheetTurn(
            index=1,
            message="m",
            image=b"not a png",
            debug=None,
            subjects=[SheetSubject(id="1", name="cat"), SheetSubject(id="2", name="dog", reference=b"\x89PNG broken")],
        ),
    ]
    layout = sheet_layout(turns)
    pixels = _pixels(render_contact_sheet(turns))
    for cells in layout.turns:
        assert _at(pixels, (cells.image.x0 + 2, cells.image.y0 + 2)) == PLACEHOLDER
        assert _at(pixels, (cells.debug.x0 + 2, cells.debug.y0 + 2)) == PLACEHOLDER
    assert [_at(pixels, (t.x0 + 1, t.y0 + 1)) for t in layout.turns[1].thumbs] == [PLACEHOLDER, PLACEHOLDER]
    assert _pixels(render_contact_sheet([])).shape[0] > 0  # no turns: still a picture


def test_wrap_text_keeps_every_line_inside_the_width() -> None:
    font = label_font(14)
    lines = wrap_text("a " + "x" * 80 + " the quick brown fox jumps over the lazy dog " * 3, font, 120)
    assert all(font.getlength(line) <= 120 for line in lines)
    assert "".join(lines).replace(" ", "").startswith("a" + "x" * 80)
    capped = wrap_text("word " * 400, font, 120, max_lines=3)
    assert len(capped) == 3 and capped[-1].endswith("…")


def _service_turn(index: int, crops: list[CropView], status: TurnStatus = TurnStatus.DONE) -> Turn:
    return Turn(
        id=f"t{index}",
        session_id="s",
        index=index,
        status=status,
        request=TurnRequest(message=f"message {index}"),
        image_url=f"/v1/images/final{index}" if status == TurnStatus.DONE else None,
        debug_image_url=f"/v1/images/debug{index}" if status == TurnStatus.DONE else None,
        crops=crops,
        created_at=datetime.now(UTC),
    )


def test_memory_after_each_turn_is_rebuilt_from_the_final_memory() -> None:
    turns = [
        _service_turn(0, [CropView(subject_id="1", found=True, crop_url="/v1/images/crop1-t0")]),
        _service_turn(1, [CropView(subject_id="2", found=False)]),
        _service_turn(2, [CropView(subject_id="1", found=True, crop_url="/v1/images/crop1-t2")]),
    ]
    subjects = [
        # refreshed later (refresh="better"): turn 0 and 1 show the crop turn 0 found
        SubjectView(id="1", name="girl", first_seen_turn=0, refreshed_turn=2, reference_url="/v1/images/crop1-t2"),
        SubjectView(id="2", name="dog", first_seen_turn=1),  # never found: no reference
        SubjectView(id="3", name="teddy", reference_url="/v1/images/upload"),  # uploaded: known from the start
    ]
    seen = [[(s.id, url) for s, url in memory_after(turn, turns, subjects)] for turn in turns]
    assert seen == [
        [("1", "/v1/images/crop1-t0"), ("3", "/v1/images/upload")],
        [("1", "/v1/images/crop1-t0"), ("2", ""), ("3", "/v1/images/upload")],
        [("1", "/v1/images/crop1-t2"), ("2", ""), ("3", "/v1/images/upload")],
    ]
    images = {"/v1/images/final0": _png(RED), "/v1/images/crop1-t0": _png(GREEN), "/v1/images/upload": _png(BLUE)}
    asked: list[str] = []

    def fetch(url: str) -> bytes | None:
        asked.append(url)
        return images.get(url)

    failed = _service_turn(3, [], status=TurnStatus.FAILED)
    sheet = sheet_turns([failed, *reversed(turns)], subjects, fetch)
    assert [t.index for t in sheet] == [0, 1, 2, 3] and sheet[3].status == "failed" and sheet[3].image is None
    assert sheet[0].image == _png(RED) and sheet[0].debug is None and sheet[0].message == "message 0"
    assert [(s.id, s.reference) for s in sheet[0].subjects] == [("1", _png(GREEN)), ("3", _png(BLUE))]
    assert len(asked) == len(set(asked))  # each url fetched once
    pixels = _pixels(render_contact_sheet(sheet))
    assert _at(pixels, sheet_layout(sheet).turns[0].image.center) == RED


def test_the_demo_writes_the_sheet_through_the_sdk(tmp_path: Path) -> None:
    """`studio demo`'s hook: turns, subjects and images come from the SDK; a gone image is a placeholder."""
    from api.client import NotFoundError
    from entrypoints.cli import _write_contact_sheet

    turn = _service_turn(0, [CropView(subject_id="1", found=True, crop_url="/v1/images/crop")])
    subject = SubjectView(id="1", name="girl", first_seen_turn=0, refreshed_turn=0, reference_url="/v1/images/crop")

    class Client:
        def list_turns(self, session_id: str) -> list[Turn]:
            assert session_id == "s"
            return [turn]

        def list_subjects(self, session_id: str) -> list[SubjectView]:
            return [subject]

        def get_image(self, url: str) -> bytes:
            if url == "/v1/images/debug0":
                raise NotFoundError(404, "gone")
            return {"/v1/images/final0": _png(RED), "/v1/images/crop": _png(GREEN)}[url]

    path = _write_contact_sheet(Client(), "s", tmp_path)  # type: ignore[arg-type]
    assert path == tmp_path / "contact-sheet.png"
    sheet = [SheetTurn(index=0, message="message 0", subjects=[SheetSubject(id="1", name="girl")])]
    cells = sheet_layout(sheet).turns[0]
    pixels = _pixels(path.read_bytes())
    assert _at(pixels, cells.image.center) == RED and _at(pixels, cells.thumbs[0].center) == GREEN
    assert _at(pixels, (cells.debug.x0 + 2, cells.debug.y0 + 2)) == PLACEHOLDER
