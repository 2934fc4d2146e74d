"""The offline planner: the three agents by rules, no network (used when settings.llm.base_url is None).

    planner.py           OfflinePlanner: the Planner of the three agents (the supervisor approves what
                         passed the deterministic checks)
    subject_manager.py   analyze_message: message + memory → SubjectAnalysis, in the steps below
      mentions.py        tokens; noun phrases (determiner, describing modifiers, count) and pronouns
      coreference.py     which subject a mention means: pronouns by gender and salience, nouns by kind,
                         new subjects and their ids
      departures.py      'leaves', 'is no longer', 'without X'
      components.py      possessives ('the wizard's staff', 'her hat'); accessories worn or held →
                         components; 'X with a Y'
      scenery.py         things after a place preposition ('onto the table') are part of the scene
      updates.py         lasting appearance changes ('now has short red hair')
      scene.py           scene changes: the background
      relations.py       spatial phrases → relations
      actions.py         what each subject does
      words.py           the closed word lists the rules read (nouns live in agents/vocabulary.py)
    layout_generator.py  offline_layout: boxes on a ground line from the relations and size classes
"""

from agents.offline.layout_generator import offline_layout
from agents.offline.planner import OfflinePlanner
from agents.offline.subject_manager import analyze_message

__all__ = ["OfflinePlanner", "analyze_message", "offline_layout"]
