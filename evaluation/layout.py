"""Where a benchmark run keeps its files.

```
<out>/run.json                         how the run was made (checked on resume)
<out>/.images/                         content-addressed image store shared by the run (references, turn images)
<out>/<dialogue>/plan.json             the dialogue as read from the data file (boxes in canvas pixels)
<out>/<dialogue>/turn<k>.png           the picture of turn k (k as numbered in the file)
<out>/<dialogue>/crops/turn<k>_<id>.png  each found subject's crop
<out>/<dialogue>/turn<k>.json          the turn's record: written last, so its presence means "done"
<out>/<dialogue>/memory.json           the subject memory after the last finished turn
<out>/<dialogue>/error.json            the last failure of this dialogue (with --keep-going)
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_UNSAFE = re.compile(r"[\\/\x00-\x1f]")


def safe_dirname(name: str) -> str:
    """Dialogue names become folder names as-is ("dialogue 1"), minus path separators and leading dots."""
    cleaned = _UNSAFE.sub("_", name).strip().lstrip(".")
    if not cleaned:
        raise ValueError(f"dialogue name {name!r} cannot be used as a folder name")
    return cleaned


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "run.json"

    @property
    def image_store(self) -> Path:
        return self.root / ".images"

    def dialogue(self, name: str) -> DialogueLayout:
        return DialogueLayout(self.root / safe_dirname(name))

    def dialogue_dirs(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.is_dir() and (p / "plan.json").exists())


@dataclass(frozen=True)
class DialogueLayout:
    root: Path

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def memory(self) -> Path:
        return self.root / "memory.json"

    @property
    def error(self) -> Path:
        return self.root / "error.json"

    def image(self, turn: int) -> Path:
        return self.root / f"turn{turn}.png"

    def record(self, turn: int) -> Path:
        return self.root / f"turn{turn}.json"

    def crop(self, turn: int, subject_id: str) -> Path:
        return self.root / "crops" / f"turn{turn}_{subject_id}.png"
