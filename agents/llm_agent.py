"""The one shape of the three LLM agents: a name, a prompt, an output model the reply must follow, a
payload built from the request, a validation that turns the reply into the agent's result (a ValueError
there earns the model one repair round), and `call`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from agents.planner import CallRecord
from agents.prompts import Prompt, load_prompt

if TYPE_CHECKING:  # the graph imports the supervisor; the offline planner must not need the openai client
    from agents.llm import LLMClient

RequestT = TypeVar("RequestT", bound=BaseModel)
ReplyT = TypeVar("ReplyT", bound=BaseModel)
ResultT = TypeVar("ResultT")


class LLMAgent(ABC, Generic[RequestT, ReplyT, ResultT]):
    name: str
    """The agent's name: its prompt folder, its model and token settings (`llm.<name>_model`), its records."""
    output_model: type[ReplyT]
    """The reply's pydantic model, also the JSON schema sent to the endpoint."""

    def __init__(self, llm: LLMClient) -> None:
        self.llm = llm
        self.prompt: Prompt = load_prompt(self.name)

    @abstractmethod
    def payload(self, request: RequestT) -> dict[str, Any]:
        """The JSON payload of the request message."""

    @abstractmethod
    def validate(self, reply: ReplyT, request: RequestT) -> ResultT:
        """The agent's result from a schema-valid reply; raises ValueError with a message for the model."""

    def call(self, request: RequestT) -> tuple[ResultT, list[CallRecord]]:
        messages = self.prompt.messages(self.payload(request))
        return self.llm.complete(self.name, messages, self.output_model, lambda reply: self.validate(reply, request))
