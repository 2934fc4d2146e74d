"""Agent prompts as files: prompts/<agent>/system.md (first line `version: N`) and examples.json (few-shot
[{"input": {...}, "output": {...}}]). The recorded version is the declared one plus a content hash, so an
edited prompt is never mistaken for the old one."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "prompts"


class PromptError(ValueError):
    pass


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str
    system: str
    examples: tuple[tuple[str, str], ...]

    def messages(self, payload: dict[str, Any], extra_system: str = "") -> list[dict[str, str]]:
        """System prompt, the few-shot pairs, then this request's JSON payload."""
        system = f"{self.system}\n\n{extra_system}".strip() if extra_system else self.system
        out = [{"role": "system", "content": system}]
        for user, assistant in self.examples:
            out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        out.append({"role": "user", "content": json.dumps(payload, ensure_ascii=False)})
        return out


def prompts_dir() -> Path:
    return Path(os.environ.get("STUDIO_PROMPTS_DIR") or DEFAULT_DIR)


@lru_cache(maxsize=32)
def _load(directory: Path, name: str) -> Prompt:
    folder = directory / name
    system_path = folder / "system.md"
    if not system_path.is_file():
        raise PromptError(f"no prompt {name!r}: {system_path} is missing")
    text = system_path.read_text(encoding="utf-8")
    first, _, body = text.partition("\n")
    if not first.startswith("version:"):
        raise PromptError(f"{system_path} must start with a 'version: ...' line")
    declared = first.split(":", 1)[1].strip()
    examples_path = folder / "examples.json"
    raw_examples = examples_path.read_text(encoding="utf-8") if examples_path.is_file() else "[]"
    try:
        examples = json.loads(raw_examples)
        pairs = tuple(
            (json.dumps(e["input"], ensure_ascii=False), json.dumps(e["output"], ensure_ascii=False)) for e in examples
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise PromptError(f"{examples_path}: examples must be a list of {{input, output}} objects ({exc})") from exc
    digest = hashlib.sha256((text + raw_examples).encode()).hexdigest()[:8]
    return Prompt(name=name, version=f"{declared}+{digest}", system=body.strip(), examples=pairs)


def load_prompt(name: str, directory: Path | None = None) -> Prompt:
    return _load((directory or prompts_dir()).resolve(), name)
