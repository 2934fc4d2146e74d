"""Runs one turn of the LLM graph and dies (os._exit) right after a given node has checkpointed.

Usage: python -m tests.agents.resume_child <data_dir> <base_url> <context.json> <node>"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agents import build_engine
from studio.protocols import TurnContext
from studio.storage.images import FileImageStore
from tests.agents.conftest import llm_settings
from tests.agents.fakes import FakeDrawer

KILLED = 17


def main() -> None:
    data_dir, base_url, context_file, node = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
    engine = build_engine(llm_settings(data_dir, base_url), FakeDrawer(), FileImageStore(data_dir / "images"))

    def die_after(name: str) -> None:
        if name == node:
            os._exit(KILLED)

    engine.on_node = die_after
    ctx = TurnContext.model_validate_json(context_file.read_text())
    engine.run_turn(ctx, lambda kind, data: None)
    sys.exit(0)


if __name__ == "__main__":
    main()
