"""LLM failures through the whole service (API → turn service → graph engine → real openai client against
the scripted server): an agent that gives up fails the turn as a planning failure with its LLM records kept,
or, with the offline fallback on (the default), the turn is drawn from the offline planner's plan."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from entrypoints.runtime import build_service
from studio.service import TurnService
from tests.agents.conftest import llm_settings
from tests.agents.fake_openai import FakeOpenAI
from tests.agents.fakes import FakeDrawer
from tests.api.conftest import wait_for_turn

GARBAGE = "Sure! Here is the JSON you asked for: " + "{subjects: [girl, boy, " * 200


def start(tmp_path: Path, url: str, **llm: object) -> Iterator[tuple[TurnService, TestClient, dict[str, str], str]]:
    service = build_service(llm_settings(tmp_path, url, **llm), drawer=FakeDrawer())
    headers = {"Authorization": f"Bearer {service.db.create_key('tenant-a')}"}
    with TestClient(create_app(service)) as client:
        session = client.post("/v1/sessions", json={"title": "llm", "height": 512, "width": 512}, headers=headers)
        yield service, client, headers, session.json()["id"]
    service.engine.close()


@pytest.fixture
def strict_service(tmp_path: Path, fake_llm) -> Iterator[tuple[FakeOpenAI, TestClient, dict[str, str], str]]:
    fake, url = fake_llm
    for _, client, headers, session_id in start(tmp_path, url, fallback_to_offline=False):
        yield fake, client, headers, session_id


@pytest.fixture
def forgiving_service(tmp_path: Path, fake_llm) -> Iterator[tuple[FakeOpenAI, TurnService, TestClient, dict, str]]:
    fake, url = fake_llm
    for service, client, headers, session_id in start(tmp_path, url):
        yield fake, service, client, headers, session_id


def test_llm_failure_is_a_planning_failure_with_its_calls(strict_service, caplog) -> None:
    fake, client, headers, session_id = strict_service
    fake.push("subject_manager", GARBAGE, GARBAGE)
    with caplog.at_level(logging.INFO):
        client.post(f"/v1/sessions/{session_id}/turns", json={"message": "A girl and a boy."}, headers=headers)
        turn = wait_for_turn(client, headers, session_id, 1)
    assert turn["status"] == "failed"
    assert turn["error"].startswith("planning failed: subject_manager: invalid reply after one repair round: ")
    assert "internal error" not in turn["error"] and len(turn["error"]) <= 500
    info = turn["info"]
    assert info["llm_calls"] == 2 and info["token_usage"]["total_tokens"] == 240 and len(info["latency_s"]) == 2
    assert not [r for r in caplog.records if r.exc_info], "an expected failure logs no traceback"


def test_llm_failure_falls_back_to_the_offline_plan(forgiving_service) -> None:
    fake, service, client, headers, session_id = forgiving_service
    fake.push("subject_manager", GARBAGE, GARBAGE)
    client.post(f"/v1/sessions/{session_id}/turns", json={"message": "A girl and a boy."}, headers=headers)
    turn = wait_for_turn(client, headers, session_id, 1)
    assert turn["status"] == "done" and [i["subject_id"] for i in turn["plan"]["items"]] == ["1", "2"]
    assert turn["info"]["fallback"]["planner"] == "offline" and turn["info"]["llm_calls"] == 2
    planned = [e.data for e in service.db.events_after(session_id, 0) if e.type == "planned"]
    assert len(planned) == 1 and planned[0]["fallback"] == turn["info"]["fallback"]
