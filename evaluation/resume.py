"""Finding where an interrupted dialogue stopped, and rebuilding its subject memory from the files on disk."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from pydantic import ValidationError

from evaluation.layout import DialogueLayout
from evaluation.records import TurnRecord
from studio.protocols import ImageStore
from studio.subjects import Subject

log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def load_finished(layout: DialogueLayout, turn: int) -> TurnRecord | None:
    """The turn's record if the turn really finished: record parses, image and crops are there with the hashes
    the record names. Anything less means the turn is redrawn."""
    try:
        record = TurnRecord.model_validate_json(layout.record(turn).read_text())
    except (FileNotFoundError, ValidationError, ValueError):
        return None
    if record.turn != turn or sha256_file(layout.root / record.image_file) != record.image_sha256:
        return None
    for crop in record.crops:
        if crop.crop_file is not None and sha256_file(layout.root / crop.crop_file) != crop.crop_sha256:
            return None
    return record


def finished_prefix(layout: DialogueLayout, turns: list[int]) -> list[TurnRecord]:
    """Records of the leading run of finished turns. A finished turn after an unfinished one is not trusted: its
    memory depended on the turn before it, which is drawn again."""
    records = []
    for turn in turns:
        record = load_finished(layout, turn)
        if record is None:
            break
        records.append(record)
    return records


def restore_memory(
    layout: DialogueLayout, records: list[TurnRecord], images: ImageStore
) -> tuple[list[Subject], str | None]:
    """Put every saved crop and turn image back into the image store (content-addressed, so this is idempotent)
    and return the memory after the last finished turn, plus the id of its image (the previous image of the next
    turn). A reference whose image cannot be found on disk is dropped, so the subject takes its next crop."""
    if not records:
        return [], None
    available: set[str] = set()
    for record in records:
        for crop in record.crops:
            if crop.crop_file is not None:
                available.add(images.put((layout.root / crop.crop_file).read_bytes()))
    last = records[-1]
    previous_image_id = images.put((layout.root / last.image_file).read_bytes())
    memory = []
    for subject in last.memory:
        ref = subject.reference_image_id
        if ref is not None and ref not in available and not _in_store(images, ref):
            log.warning("%s: reference of subject %s is missing on disk; dropped", layout.root.name, subject.id)
            subject = subject.model_copy(
                update={"reference_image_id": None, "reference_source": None, "reference_score": None}
            )
        memory.append(subject)
    return memory, previous_image_id


def _in_store(images: ImageStore, image_id: str) -> bool:
    try:
        images.get(image_id)
    except KeyError:
        return False
    return True
