"""The conversation agents: a LangGraph graph (subject manager → layout generator ⇄ supervisor → draw →
memorize) over LLM agents or the offline rule-based planner."""

from agents.engine import GraphEngine, build_engine, make_planner
from agents.graph import RunContext, build_graph
from agents.offline import OfflinePlanner
from agents.planner import LayoutDraft, Planner
from agents.schemas import Review, SubjectAnalysis
from agents.state import ConversationState

__all__ = [
    "ConversationState",
    "GraphEngine",
    "LayoutDraft",
    "OfflinePlanner",
    "Planner",
    "Review",
    "RunContext",
    "SubjectAnalysis",
    "build_engine",
    "build_graph",
    "make_planner",
]
