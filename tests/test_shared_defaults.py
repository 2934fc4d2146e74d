"""Defaults that several packages share come from one constant in studio/: no module writes its own number."""

from __future__ import annotations

import ast
from pathlib import Path

from studio.settings import DEFAULT_MAX_SUBJECTS, Settings

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agents", "api", "drawer", "entrypoints", "evaluation", "studio", "vision")


def _literal_defaults(name: str) -> list[str]:
    """'path:line' of every parameter or field called `name` whose default is a number literal."""
    found = []
    for path in (p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            pairs: list[tuple[str, ast.expr | None]] = []
            if isinstance(node, ast.arguments):
                positional = node.posonlyargs + node.args
                defaults = [None] * (len(positional) - len(node.defaults)) + list(node.defaults)
                pairs += [(a.arg, d) for a, d in zip(positional, defaults, strict=True)]
                pairs += [(a.arg, d) for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                pairs.append((node.target.id, node.value))
            for arg, default in pairs:
                if arg == name and isinstance(default, ast.Constant) and isinstance(default.value, int):
                    found.append(f"{path.relative_to(ROOT)}:{default.lineno}")
    return found


def test_max_subjects_default_is_one_constant() -> None:
    assert _literal_defaults("max_subjects") == []
    assert Settings.model_fields["max_subjects"].default == DEFAULT_MAX_SUBJECTS
