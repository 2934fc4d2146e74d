"""The LLM wrapper against a scripted OpenAI-compatible server: structured output, repair, retries, and the
behaviours of real servers (llama-cpp-python's 500 on json_schema, context overflow, replies cut at the
token limit, control characters, slow replies)."""

from __future__ import annotations

import pytest

from agents.errors import AgentOutputError, AgentTruncatedError, LLMCallError
from agents.layout_generator import draft_from_reply
from agents.llm import LLMClient
from agents.response_formats import strict_schema
from agents.schemas import LayoutReply, SubjectAnalysis, SubjectMention, SupervisorReply
from studio.settings import LLMSettings
from tests.agents.fake_openai import CONTEXT_OVERFLOW, JSON_OBJECT_ONLY, LLAMA_CPP_PYTHON, Reply

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
    assert reply.feedback == "x" and fake.count() == 2
    assert [c.get("error", "")[:8] for c in calls] == ["HTTP 429", ""], "every HTTP request is recorded"


def test_timeout_is_not_resent_while_the_server_may_still_work(fake_llm) -> None:
    fake, url = fake_llm
    fake.push("supervisor", Reply(delay=1.0))
    with pytest.raises(LLMCallError, match=r"^supervisor: no reply within 0.3 s \(not re-sent"):
        client(url, timeout_s=0.3, max_retries=2).complete("supervisor", MESSAGES, SupervisorReply)
    assert fake.count() == 1


def test_server_errors_exhaust_retries(fake_llm) -> None:
    fake, url = fake_llm
    fake.push("supervisor", *[Reply(status=503, headers={"retry-after-ms": "5"}) for _ in range(3)])
    with pytest.raises(LLMCallError, match="supervisor"):
        client(url, max_retries=2).complete("supervisor", MESSAGES, SupervisorReply)
    assert fake.count() == 3


def test_llama_cpp_python_500_on_json_schema_falls_back_to_json_object_with_schema(fake_llm) -> None:
    fake, url = fake_llm
    fake.refuse = LLAMA_CPP_PYTHON
    llm = client(url, max_retries=3)
    reply, calls = llm.complete("supervisor", MESSAGES, SupervisorReply)
    assert reply.approve and [c["mode"] for c in calls] == ["json_schema", "json_object_schema"]
    assert fake.count() == 2, "a refused response_format is not retried"
    fallback = fake.requests[1]["body"]
    assert fallback["response_format"] == {"type": "json_object", "schema": strict_schema(SupervisorReply)}
    assert "JSON schema" in fallback["messages"][0]["content"]
    llm.complete("supervisor", MESSAGES, SupervisorReply)
    assert [r["format"] for r in fake.requests] == ["json_schema", "json_object_schema", "json_object_schema"]


def test_fallback_chain_ends_in_plain_json_object(fake_llm) -> None:
    fake, url = fake_llm
    fake.refuse = JSON_OBJECT_ONLY
    llm = client(url)
    reply, calls = llm.complete("supervisor", MESSAGES, SupervisorReply)
    assert reply.approve and calls[-1]["mode"] == "json_object"
    llm.complete("supervisor", MESSAGES, SupervisorReply)
    assert [r["format"] for r in fake.requests] == ["json_schema", "json_object_schema", "json_object", "json_object"]


def test_capability_is_decided_per_endpoint(fake_llm) -> None:
    """Base URL + model: a model that refuses json_schema does not switch it off for another model."""
    fake, url = fake_llm
    fake.refuse, fake.refuse_models = LLAMA_CPP_PYTHON, {"small-judge"}
    llm = client(url, supervisor_model="small-judge")
    llm.complete("supervisor", MESSAGES, SupervisorReply)
    layout = [{"role": "system", "content": "You are the layout generator."}, {"role": "user", "content": "{}"}]
    fake.push("layout_generator", {"background": "", "negative": "", "items": []})
    llm.complete("layout_generator", layout, LayoutReply)
    assert [(r["body"]["model"], r["format"]) for r in fake.requests] == [
        ("small-judge", "json_schema"),
        ("small-judge", "json_object_schema"),
        ("gpt-4o-mini", "json_schema"),
    ]
    assert llm.formats.known() == {
        f"{llm.base_url} small-judge": {"mode": "json_object_schema", "reason": LLAMA_CPP_PYTHON["json_schema"][1]}
    }


@pytest.mark.parametrize(
    "message",
    [
        CONTEXT_OVERFLOW,  # llama-server
        "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens "
        "(7976 in the messages, 1024 in the completion). Please reduce the length of the messages or completion.",
    ],
)
def test_context_overflow_keeps_json_schema(fake_llm, message: str) -> None:
    fake, url = fake_llm
    fake.push("supervisor", Reply(status=400, error=message))
    llm = client(url)
    with pytest.raises(LLMCallError, match=r"^supervisor: the request does not fit the model's context \(HTTP 400\)"):
        llm.complete("supervisor", MESSAGES, SupervisorReply)
    assert fake.count() == 1, "an overflow is neither retried nor re-sent in another format"
    llm.complete("supervisor", MESSAGES, SupervisorReply)
    assert [r["format"] for r in fake.requests] == ["json_schema", "json_schema"]
    assert llm.formats.known() == {}


def test_other_400_fails_without_changing_the_format(fake_llm) -> None:
    fake, url = fake_llm
    fake.push("supervisor", Reply(status=400, error="model 'x' not found"))
    llm = client(url)
    with pytest.raises(LLMCallError, match=r"^supervisor: request failed \(HTTP 400, 1 attempt\(s\)\): model 'x'"):
        llm.complete("supervisor", MESSAGES, SupervisorReply)
    llm.complete("supervisor", MESSAGES, SupervisorReply)
    assert [r["format"] for r in fake.requests] == ["json_schema", "json_schema"]


def test_max_tokens_is_sent_in_every_request(fake_llm) -> None:
    fake, url = fake_llm
    fake.refuse = LLAMA_CPP_PYTHON
    fake.push("supervisor", "not json", {"approve": True, "feedback": ""})
    llm = client(url, max_tokens=300, supervisor_max_tokens=200)
    llm.complete("supervisor", MESSAGES, SupervisorReply)
    layout = [{"role": "system", "content": "You are the layout generator."}, {"role": "user", "content": "{}"}]
    fake.push("layout_generator", {"background": "", "negative": "", "items": []})
    llm.complete("layout_generator", layout, LayoutReply)
    assert [(r["format"], r["body"]["max_tokens"]) for r in fake.requests] == [
        ("json_schema", 200),
        ("json_object_schema", 200),
        ("json_object_schema", 200),  # the repair round
        ("json_object_schema", 300),  # same model, same endpoint: the refusal is remembered
    ]
    assert LLMSettings().max_tokens == 1024 and LLMSettings().supervisor_max_tokens == 512


def test_reply_cut_at_the_token_limit_is_truncated_not_repaired(fake_llm) -> None:
    fake, url = fake_llm
    fake.push("supervisor", Reply(content='{"approve": false, "feedback": "move sub', finish_reason="length"))
    with pytest.raises(AgentTruncatedError, match=r"^supervisor: the reply was cut at the token limit \(max_tokens=64"):
        client(url, max_tokens=64, supervisor_max_tokens=None, max_tokens_cap=64).complete(
            "supervisor", MESSAGES, SupervisorReply
        )
    assert fake.count() == 1, "no repair round for a cut reply"


def test_reply_cut_at_the_token_limit_gets_one_larger_budget(fake_llm) -> None:
    fake, url = fake_llm
    cut = Reply(content='{"approve": false, "feedback": "move sub', finish_reason="length")
    fake.push("supervisor", cut, {"approve": True, "feedback": ""}, cut, cut)
    llm = client(url, supervisor_max_tokens=64, max_tokens_cap=1000)
    reply, calls = llm.complete("supervisor", MESSAGES, SupervisorReply)
    assert reply.approve and [(c["max_tokens"], c["finish_reason"], c["repair"]) for c in calls] == [
        (64, "length", False),
        (128, "stop", False),
    ]
    with pytest.raises(AgentTruncatedError, match=r"max_tokens=128"):
        llm.complete("supervisor", MESSAGES, SupervisorReply)
    assert [r["body"]["max_tokens"] for r in fake.requests] == [64, 128, 64, 128]


def test_control_characters_in_strings_are_dropped_not_repaired(fake_llm) -> None:
    fake, url = fake_llm
    fake.push("supervisor", '{"approve": false, "feedback": "move\x01 subject 1\nto the\tleft\x7f"}')
    reply, calls = client(url).complete("supervisor", MESSAGES, SupervisorReply)
    assert reply.feedback == "move subject 1\nto the\tleft" and len(calls) == 1


def test_error_texts_and_repair_prompt_are_bounded(fake_llm) -> None:
    fake, url = fake_llm
    garbage = "Sure! Here is the layout you asked for: " + "la " * 1200
    fake.push("supervisor", garbage, garbage)
    with pytest.raises(AgentOutputError) as failure:
        client(url).complete("supervisor", MESSAGES, SupervisorReply)
    assert len(str(failure.value)) <= 500 and len(failure.value.reason) <= 500
    assert failure.value.reason.startswith("planning failed: supervisor: invalid reply after one repair round")
    assert [c["repair"] for c in failure.value.calls] == [False, True], "the failed exchange keeps its records"
    shown = fake.requests[1]["body"]["messages"][-2]
    assert shown["role"] == "assistant" and len(shown["content"]) <= 1000


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
