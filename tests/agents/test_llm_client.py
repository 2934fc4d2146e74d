"""The LLM wrapper against a scripted OpenAI-compatible server: structured output, repair, retries."""

from __future__ import annotations

import pytest

from agents.layout_generator import draft_from_reply
from agents.llm import AgentOutputError, LLMCallError, LLMClient, strict_schema
from agents.schemas import LayoutReply, SubjectAnalysis, SubjectMention, SupervisorReply
from studio.settings import LLMSettings
from tests.agents.fake_openai import Reply

MESSAGES = [{"role": "system", "content": "You are the supervisor of a test."}, {"role": "user", "content": "{}"}]
ANALYSIS = SubjectAnalysis(
    caption="a girl",
    subjects=[SubjectMention(id="1", status="new", name="girl", description="a girl", parent_id=None, action="")],
    updates=[],
    leaving=[],
    background=None,
    background_only=False,
    relations=[],
)


def client(base_url: str, **options: object) -> LLMClient:
    settings = LLMSettings(**{"base_url": base_url, "timeout_s": 2.0, "max_retries": 2, **options})  # type: ignore[arg-type]
    return LLMClient(settings)


def to_draft(reply: LayoutReply):
    return draft_from_reply(reply, ANALYSIS, [], 768, 1024)


def test_structured_output_request_and_usage(fake_llm) -> None:
    fake, url = fake_llm
    fake.push("supervisor", {"approve": True, "feedback": ""})
    reply, calls = client(url, supervisor_model="judge-1").complete("supervisor", MESSAGES, SupervisorReply)
    assert reply.approve
    body = fake.requests[0]["body"]
    assert body["model"] == "judge-1"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert calls[0]["total_tokens"] == 120 and calls[0]["latency_s"] >= 0 and calls[0]["mode"] == "json_schema"


def test_malformed_json_is_repaired_once(fake_llm) -> None:
    fake, url = fake_llm
    fake.push("supervisor", '{"approve": true, "feedback": ', {"approve": True, "feedback": ""})
    reply, calls = client(url).complete("supervisor", MESSAGES, SupervisorReply)
    assert reply.approve and len(calls) == 2 and calls[1]["repair"]
    repair_prompt = fake.requests[1]["body"]["messages"][-1]["content"]
    assert "not valid JSON" in repair_prompt
    assert fake.requests[1]["body"]["messages"][-2]["role"] == "assistant"


def test_schema_invalid_boxes_are_repaired(fake_llm) -> None:
    fake, url = fake_llm
    bad = {
        "background": "park",
        "negative": "",
        "items": [{"subject_id": "1", "phrase": "girl", "x": 10, "y": 10, "w": -5, "h": 100}],
    }
    good = {
        "background": "park",
        "negative": "",
        "items": [{"subject_id": "1", "phrase": "girl", "x": 10, "y": 10, "w": 200, "h": 400}],
    }
    fake.push("layout_generator", bad, good)
    messages = [{"role": "system", "content": "You are the layout generator."}, {"role": "user", "content": "{}"}]
    draft, calls = client(url).complete("layout_generator", messages, LayoutReply, to_draft)
    assert draft.plan.items[0].box.w == 200
    assert "box of subject '1' is invalid" in fake.requests[1]["body"]["messages"][-1]["content"]
    assert calls[0]["error"]


def test_second_invalid_reply_fails_cleanly(fake_llm) -> None:
    fake, url = fake_llm
    outside = {
        "background": "",
        "negative": "",
        "items": [{"subject_id": "1", "phrase": "g", "x": 5000, "y": 0, "w": 10, "h": 10}],
    }
    fake.push("layout_generator", "not json at all", outside)
    messages = [{"role": "system", "content": "You are the layout generator."}, {"role": "user", "content": "{}"}]
    with pytest.raises(AgentOutputError, match=r"^layout_generator: invalid reply after one repair round: .*outside"):
        client(url).complete("layout_generator", messages, LayoutReply, to_draft)
    assert fake.count() == 2


def test_rate_limit_is_retried_by_the_client(fake_llm) -> None:
    fake, url = fake_llm
    fake.push("supervisor", Reply(status=429, headers={"retry-after-ms": "20"}), {"approve": False, "feedback": "x"})
    reply, calls = client(url).complete("supervisor", MESSAGES, SupervisorReply)
    assert reply.feedback == "x" and fake.count() == 2 and len(calls) == 1


def test_timeout_is_retried_then_fails_cleanly(fake_llm) -> None:
    fake, url = fake_llm
    fake.push(
        "supervisor", Reply(delay=1.5, content={"approve": True, "feedback": ""}), {"approve": True, "feedback": ""}
    )
    llm = client(url, timeout_s=0.3, max_retries=1)
    reply, _ = llm.complete("supervisor", MESSAGES, SupervisorReply)
    assert reply.approve and fake.count() == 2
    fake.push("supervisor", *[Reply(delay=1.0) for _ in range(2)])
    with pytest.raises(LLMCallError, match=r"^supervisor: request failed"):
        llm.complete("supervisor", MESSAGES, SupervisorReply)


def test_server_errors_exhaust_retries(fake_llm) -> None:
    fake, url = fake_llm
    fake.push("supervisor", *[Reply(status=503, headers={"retry-after-ms": "5"}) for _ in range(3)])
    with pytest.raises(LLMCallError, match="supervisor"):
        client(url, max_retries=2).complete("supervisor", MESSAGES, SupervisorReply)
    assert fake.count() == 3


def test_json_object_fallback_when_json_schema_is_rejected(fake_llm) -> None:
    fake, url = fake_llm
    fake.reject_json_schema = True
    fake.push("supervisor", {"approve": True, "feedback": ""}, {"approve": True, "feedback": ""})
    llm = client(url)
    reply, calls = llm.complete("supervisor", MESSAGES, SupervisorReply)
    assert reply.approve and calls[-1]["mode"] == "json_object"
    assert "JSON schema" in fake.requests[1]["body"]["messages"][0]["content"]
    llm.complete("supervisor", MESSAGES, SupervisorReply)
    assert [r["format"] for r in fake.requests] == ["json_schema", "json_object", "json_object"]


def test_strict_schema_requires_every_field() -> None:
    schema = strict_schema(SubjectAnalysis)
    mention = schema["$defs"]["SubjectMention"]
    assert mention["additionalProperties"] is False
    assert set(mention["required"]) == set(mention["properties"])


def test_numeric_ids_and_extra_keys_are_accepted(fake_llm) -> None:
    fake, url = fake_llm
    reply = {
        "background": "",
        "negative": "",
        "reasoning": "...",
        "items": [{"subject_id": 1, "phrase": "g", "x": 1, "y": 1, "w": 50, "h": 50}],
    }
    fake.push("layout_generator", reply)
    messages = [{"role": "system", "content": "You are the layout generator."}, {"role": "user", "content": "{}"}]
    draft, calls = client(url).complete("layout_generator", messages, LayoutReply, to_draft)
    assert draft.plan.subject_ids == ["1"] and len(calls) == 1
