"""Playwright driving Debian's Chromium against the real app: the studio's pages, the API behind them.
Screenshots of each step go to tests/artifacts/browser/<test>/ (or $STUDIO_BROWSER_ARTIFACTS)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.app import create_app
from entrypoints.server import BackgroundServer, free_port
from studio.settings import Settings, VisionSettings
from tests.api.conftest import ScriptedEngine, make_service

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("STUDIO_BROWSER_ARTIFACTS", Path(__file__).parents[1] / "artifacts" / "browser"))
VIEWPORT = {"width": 1366, "height": 820}

playwright_sync = pytest.importorskip("playwright.sync_api", reason="the dev extra installs playwright")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (scripts/test.sh installs it with apt-get)", allow_module_level=True)


class Studio:
    """One page of the studio with the steps the tests share; `shot` saves a numbered screenshot."""

    def __init__(self, page: object, url: str, key: str, folder: Path) -> None:
        self.page = page
        self.url = url
        self.key = key
        self.folder = folder
        self.shots = 0

    def shot(self, name: str) -> Path:
        self.shots += 1
        path = self.folder / f"{self.shots:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def sign_in(self) -> None:
        self.page.goto(self.url + "/")
        self.page.fill("#api-key", self.key)
        self.shot("sign-in")
        self.page.keyboard.press("Enter")
        self.page.wait_for_selector("#studio-view:not([hidden])")

    def create_session(self, title: str, width: int = 512, height: int = 512, steps: int | None = None) -> str:
        form = self.page.locator("#new-session-form")
        form.locator("[name=title]").fill(title)
        form.locator("[name=width]").fill(str(width))
        form.locator("[name=height]").fill(str(height))
        if steps is not None:
            form.locator("[name=steps]").fill(str(steps))
        form.locator("button[type=submit]").click()
        self.page.wait_for_function("location.hash.startsWith('#session=')")
        self.page.wait_for_selector("#composer:not([hidden])")
        return self.session_id()

    def session_id(self) -> str:
        return re.sub(r"^#session=", "", self.page.evaluate("location.hash"))

    def send(self, message: str) -> None:
        self.page.fill("#message", message)
        self.page.press("#message", "Enter")

    def turn(self, index: int, status: str | None = None, timeout_s: float = 30) -> object:
        selector = f'.turn[data-index="{index}"]' + (f'[data-status="{status}"]' if status else "")
        self.page.wait_for_selector(selector, timeout=timeout_s * 1000)
        return self.page.locator(selector)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One Chromium per test module. Not per session: Playwright's sync API keeps an asyncio loop running on
    the main thread while it is open, which would break `asyncio.run` in the tests that come after."""
    with playwright_sync.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    folder = ARTIFACTS / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    print(f"screenshots: {folder}")
    return folder


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[tuple[BackgroundServer, ScriptedEngine, str]]:
    """The real app over a scripted engine (no models): fast, and it can hold a turn mid-draw."""
    service, engine = make_service(tmp_path, port=free_port(), max_upload_bytes=200_000, max_upload_pixels=1_000_000)
    key = service.db.create_key("browser")
    with BackgroundServer(service.settings, app=create_app(service)) as server:
        yield server, engine, key
        engine.hold.set()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BackgroundServer, str]]:
    """The real service on tiny random-weight models: agents graph, drawer, vision."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("browser-tiny"),
        port=free_port(),
        vision=VisionSettings(box_threshold=0.0, text_threshold=0.0, min_iou=0.0, device="cpu"),
    )
    with BackgroundServer(settings) as server:
        yield server, server.app.state.service.db.create_key("browser")


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    yield page
    context.close()
