"""The studio in Chromium: page weight, and the time from posting a turn in the page to the first
progress (step) event shown there.

The real service runs in-process (BackgroundServer, tiny random-weight models, offline planner); Playwright
drives /usr/bin/chromium. The page marks `studio:turn-posted` when Send is pressed and
`studio:first-step:<n>` when it first renders a step event of turn n (app.js); the figure is the gap
between the two, read from the page's own clock. Turn 1 also builds the models (cold); later turns are warm.

    .venv/bin/python bench/bench_studio.py [--turns 4] [--size 128] [--steps 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from api.app import STUDIO_WEB
from entrypoints.server import BackgroundServer, free_port
from studio.settings import Settings

MESSAGES = ["a girl and a boy walk to school", "the girl waves", "a dog runs after them", "they sit on a bench"]


def page_weight_kb() -> float:
    return sum(path.stat().st_size for path in STUDIO_WEB.iterdir() if path.is_file()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--size", type=int, default=128, help="canvas side in pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="bench-studio-")), port=free_port())
    with BackgroundServer(settings) as server, sync_playwright() as playwright:
        key = server.app.state.service.db.create_key("bench")
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 820})
        page.goto(server.url + "/")
        page.fill("#api-key", key)
        page.press("#api-key", "Enter")
        form = page.locator("#new-session-form")
        form.locator("[name=width]").fill(str(args.size))
        form.locator("[name=height]").fill(str(args.size))
        form.locator("[name=steps]").fill(str(args.steps))
        form.locator("button[type=submit]").click()
        page.wait_for_selector("#composer:not([hidden])")
        gaps_ms: list[float] = []
        for index in range(1, args.turns + 1):
            page.evaluate("performance.clearMarks()")
            page.fill("#message", MESSAGES[(index - 1) % len(MESSAGES)])
            page.press("#message", "Enter")
            page.wait_for_selector(f'.turn[data-index="{index}"][data-status="done"]', timeout=600_000)
            marks = dict(page.evaluate("performance.getEntriesByType('mark').map(m => [m.name, m.startTime])"))
            gaps_ms.append(marks[f"studio:first-step:{index}"] - marks["studio:turn-posted"])
        browser.close()

    print(f"page weight: {page_weight_kb():.1f} KB in {sum(1 for p in STUDIO_WEB.iterdir() if p.is_file())} files")
    print("posted -> first step shown (ms): " + ", ".join(f"turn {i}: {gap:.0f}" for i, gap in enumerate(gaps_ms, 1)))
    if len(gaps_ms) > 1:
        print(f"warm turns (2..{len(gaps_ms)}): median {statistics.median(gaps_ms[1:]):.0f} ms")


if __name__ == "__main__":
    main()
