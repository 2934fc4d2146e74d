"""The studio in Chromium against the real app. The first test runs tiny random-weight models through the
real agents, drawer and vision; the others use the scripted engine (tests/api/conftest.py) for speed and
for holding a turn mid-draw. Each asserts what the page shows and, where it posts, what the API stored."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.agents.fakes import png
from tests.browser.conftest import Studio

GIRL = {"subject_id": "1", "phrase": "a girl", "box": {"x": 16, "y": 16, "w": 96, "h": 160}}
DOG = {"subject_id": "2", "phrase": "a dog", "box": {"x": 160, "y": 96, "w": 80, "h": 64}}


def api(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url + "/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30)


def finished_turn(client: httpx.Client, session_id: str, index: int) -> dict:
    for _ in range(1500):
        turn = client.get(f"/sessions/{session_id}/turns/{index}").json()
        if turn["status"] in ("done", "failed"):
            return turn
        time.sleep(0.02)
    raise AssertionError(f"turn {index} did not finish")


def test_turn_on_tiny_models_then_drag_a_box_and_redraw(tiny_models, page, artifacts) -> None:
    server, key = tiny_models
    studio = Studio(page, server.url, key, artifacts)
    studio.sign_in()
    studio.shot("signed-in")
    session_id = studio.create_session("tiny models", width=128, height=128, steps=2)
    studio.shot("session-created")

    studio.send("a girl and a boy walk to school")
    studio.turn(1)
    studio.shot("turn-posted")
    card = studio.turn(1, "done", timeout_s=120)
    with api(server.url, key) as client:
        first = client.get(f"/sessions/{session_id}/turns/1").json()
    assert first["status"] == "done", first["error"]
    picture = card.locator("img.picture")
    picture.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth === 128", arg=picture.element_handle())
    assert card.locator(".box").count() == len(first["plan"]["items"]) >= 1
    assert card.locator(".box .label").first.inner_text().startswith(f"#{first['plan']['items'][0]['subject_id']} ")
    studio.shot("turn-done-with-boxes")

    page.uncheck("#show-boxes")
    page.wait_for_function("!document.querySelector('.turn[data-index=\"1\"] .box')")
    page.check("#show-boxes")
    card.get_by_role("button", name="Show detections").click()
    page.wait_for_selector('.turn[data-index="1"] img.debug')
    studio.shot("detections")

    card.get_by_role("button", name="Edit layout").click()
    box = page.locator('.turn[data-index="1"] .editor .box').first
    canvas = page.locator('.turn[data-index="1"] .editor .canvas').bounding_box()
    start = box.bounding_box()
    dx, dy = 40, 24
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(start["x"] + start["width"] / 2 + dx / 2, start["y"] + start["height"] / 2 + dy / 2)
    page.mouse.move(start["x"] + start["width"] / 2 + dx, start["y"] + start["height"] / 2 + dy)
    page.mouse.up()
    studio.shot("box-dragged")
    page.get_by_role("button", name="Redraw with this layout").click()
    studio.turn(2, "done", timeout_s=120)
    studio.shot("redrawn")

    scale = 128 / canvas["width"]
    with api(server.url, key) as client:
        second = client.get(f"/sessions/{session_id}/turns/2").json()
    assert second["status"] == "done", second["error"]
    old, new = first["plan"]["items"][0], second["request"]["plan"]["items"][0]
    assert new["subject_id"] == old["subject_id"]
    assert abs(new["box"]["x"] - (old["box"]["x"] + dx * scale)) <= 1
    assert abs(new["box"]["y"] - (old["box"]["y"] + dy * scale)) <= 1
    assert (new["box"]["w"], new["box"]["h"]) == (old["box"]["w"], old["box"]["h"])
    assert second["plan"]["items"][0]["box"] == new["box"]
    assert second["request"]["message"] is None


def test_upload_a_reference_and_rename_it_in_the_gallery(scripted, page, artifacts) -> None:
    server, _, key = scripted
    studio = Studio(page, server.url, key, artifacts)
    studio.sign_in()
    session_id = studio.create_session("gallery")
    form = page.locator("#upload-form")
    form.locator("[name=name]").fill("cat")
    form.locator("[name=file]").set_input_files(
        files=[{"name": "cat.png", "mimeType": "image/png", "buffer": png(48, 40, (20, 120, 200))}]
    )
    form.locator("button[type=submit]").click()
    subject = page.locator(".subject", has_text="cat")
    subject.wait_for()
    assert "uploaded" in subject.locator(".source").inner_text()
    page.wait_for_function("() => document.querySelector('.subject img.thumb')?.naturalWidth === 48")
    studio.shot("reference-uploaded")

    subject.get_by_role("button", name="Rename").click()
    page.fill(".rename input[aria-label='new name']", "tabby cat")
    page.press(".rename input[aria-label='new name']", "Enter")
    page.wait_for_selector(".subject-name:text-is('tabby cat')")
    studio.shot("renamed")
    with api(server.url, key) as client:
        (stored,) = client.get(f"/sessions/{session_id}/subjects").json()
    assert (stored["name"], stored["reference_source"]) == ("tabby cat", "upload")


def test_branch_from_turn_1_shows_the_memory_of_turn_1(scripted, page, artifacts) -> None:
    server, _, key = scripted
    with api(server.url, key) as client:
        probe = client.post("/sessions", json={"title": "probe"}).json()["id"]
        client.post(f"/sessions/{probe}/turns", json={"plan": {"items": [GIRL]}})
        finished_turn(client, probe, 1)
        answer = client.post(f"/sessions/{probe}/turns/1/branch")
        if answer.status_code in (404, 405):
            pytest.skip(f"no branch endpoint on this branch (POST …/turns/{{n}}/branch answers {answer.status_code})")
        client.delete(f"/sessions/{answer.json()['id']}")
        client.delete(f"/sessions/{probe}")

    studio = Studio(page, server.url, key, artifacts)
    studio.sign_in()
    session_id = studio.create_session("story", width=256, height=256)
    studio.send("a girl walks")
    studio.turn(1, "done")
    with api(server.url, key) as client:
        client.post(f"/sessions/{session_id}/turns", json={"plan": {"height": 256, "width": 256, "items": [GIRL, DOG]}})
    studio.turn(2, "done")
    page.wait_for_selector('.subject[data-subject="2"]')
    studio.shot("two-turns")

    studio.turn(1).get_by_role("button", name="Branch here").click()
    page.wait_for_function(f"!location.hash.endsWith('{session_id}') && location.hash.startsWith('#session=')")
    branch_id = studio.session_id()
    page.wait_for_selector('.subject[data-subject="1"]')
    studio.shot("branch-selected")
    assert page.locator('.subject[data-subject="2"]').count() == 0
    child = page.locator(f'#session-tree li:has(> button[data-session="{session_id}"]) > ul button')
    assert child.get_attribute("data-session") == branch_id
    assert "from turn 1" in child.inner_text()
    with api(server.url, key) as client:
        branch = client.get(f"/sessions/{branch_id}").json()
        assert (branch["parent_id"], branch["branch_turn"]) == (session_id, 1)
        assert [s["id"] for s in client.get(f"/sessions/{branch_id}/subjects").json()] == ["1"]

    page.click(f'#session-tree button[data-session="{session_id}"]')
    page.wait_for_selector('.subject[data-subject="2"]')
    studio.shot("back-to-parent")

    # redrawing a past turn (2 of 3) with another layout = a branch at turn 1 + an explicit-plan turn
    with api(server.url, key) as client:
        client.post(f"/sessions/{session_id}/turns", json={"plan": {"height": 256, "width": 256, "items": [GIRL]}})
    studio.turn(3, "done")
    studio.turn(2).get_by_role("button", name="Edit layout").click()
    page.locator(".editor .items li").nth(1).locator("input[aria-label^='phrase']").fill("a sleeping dog")
    page.get_by_role("button", name="Redraw as a branch from turn 1").click()
    page.wait_for_function(f"!['{session_id}', '{branch_id}'].some(id => location.hash.endsWith(id))")
    redo_id = studio.session_id()
    studio.turn(2, "done")
    studio.shot("past-turn-redrawn-as-branch")
    with api(server.url, key) as client:
        redo = client.get(f"/sessions/{redo_id}").json()
        assert (redo["parent_id"], redo["branch_turn"]) == (session_id, 1)
        plan = client.get(f"/sessions/{redo_id}/turns/2").json()["request"]["plan"]
    assert [item["phrase"] for item in plan["items"]] == ["a girl", "a sleeping dog"]


def test_redrawing_turn_1_starts_a_new_session_with_that_layout(scripted, page, artifacts) -> None:
    server, _, key = scripted
    studio = Studio(page, server.url, key, artifacts)
    studio.sign_in()
    first_id = studio.create_session("first", width=256, height=256, steps=3)
    studio.send("a girl")
    studio.turn(1, "done")
    studio.send("a girl again")
    studio.turn(2, "done")
    studio.turn(1).get_by_role("button", name="Edit layout").click()
    page.locator(".editor .items li").first.locator("input[aria-label^='phrase']").fill("a girl with a hat")
    page.get_by_role("button", name="Redraw in a new session").click()
    page.wait_for_function(f"!location.hash.endsWith('{first_id}')")
    studio.turn(1, "done")
    studio.shot("turn-1-redone")
    with api(server.url, key) as client:
        redo = client.get(f"/sessions/{studio.session_id()}").json()
        plan = client.get(f"/sessions/{redo['id']}/turns/1").json()["request"]["plan"]
    assert (redo["title"], redo["width"], redo["height"], redo["settings"]["steps"]) == ("first (redo)", 256, 256, 3)
    assert [item["phrase"] for item in plan["items"]] == ["a girl with a hat"]


def test_cancel_a_running_turn_and_show_failures(scripted, page, artifacts) -> None:
    server, engine, key = scripted
    studio = Studio(page, server.url, key, artifacts)
    studio.sign_in()
    session_id = studio.create_session("cancel")
    engine.hold.clear()
    studio.send("a girl waits")
    cancel = studio.turn(1).get_by_role("button", name="Cancel")
    cancel.wait_for()
    studio.shot("running")
    cancel.click()
    card = studio.turn(1, "failed")
    assert "Failed: cancelled" in card.locator(".turn-error").inner_text()
    assert card.get_by_role("button", name="Cancel").count() == 0
    studio.shot("cancelled")
    engine.hold.set()

    studio.send("this one should fail")
    card = studio.turn(2, "failed")
    assert "scripted planner failure" in card.locator(".turn-error").inner_text()
    studio.shot("failed")
    with api(server.url, key) as client:
        assert client.get(f"/sessions/{session_id}/turns/1").json()["error"] == "cancelled"


def test_live_progress_and_keyboard_layout_edit(scripted, page, artifacts) -> None:
    server, engine, key = scripted
    studio = Studio(page, server.url, key, artifacts)
    studio.sign_in()
    session_id = studio.create_session("keyboard", width=256, height=256)
    engine.hold.clear()
    studio.send("a girl")
    studio.turn(1)
    engine.hold.set()  # the turn draws once its card is on the page
    studio.turn(1, "done")
    marks = page.evaluate("performance.getEntriesByType('mark').map(m => m.name)")
    assert "studio:first-step:1" in marks  # the page rendered a step event of turn 1

    studio.turn(1).get_by_role("button", name="Edit layout").click()
    box = page.locator('.turn[data-index="1"] .editor .box').first
    box.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Shift+ArrowRight")
    page.get_by_role("button", name="Add subject").click()
    page.locator(".editor .items li").nth(1).locator("input[aria-label^='phrase']").fill("a red kite")
    studio.shot("keyboard-edit")
    page.get_by_role("button", name="Redraw with this layout").click()
    studio.turn(2, "done")
    with api(server.url, key) as client:
        plan = client.get(f"/sessions/{session_id}/turns/2").json()["request"]["plan"]
    assert plan["items"][0]["box"] == {"x": 16.0, "y": 16.0, "w": 40.0, "h": 32.0}
    assert (plan["items"][1]["subject_id"], plan["items"][1]["phrase"]) == ("2", "a red kite")
