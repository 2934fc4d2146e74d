"""The closed word classes the offline rules read: determiners, pronouns, prepositions, departure phrases,
verbs of wearing and the small words around actions. Nouns, numbers and scenes are in agents.vocabulary."""

from __future__ import annotations

from agents.vocabulary import words
from studio.settings import DEFAULT_MAX_SUBJECTS

MAX_SUBJECTS = DEFAULT_MAX_SUBJECTS

# --- noun phrases -----------------------------------------------------------------------------------
DETERMINERS = words("a an the this that these those his her their its my our your one some")
NEW_MARKERS = frozenset({"another", "other", "new", "second", "third", "different"})
"""A determiner or modifier that asks for a new subject rather than a remembered one."""
VERB_CONTEXT = words("who that which also then and")
"""Words after which a plural-looking noun is a verb ('the lion who watches')."""
COMMON_VERBS = words(
    "see sees saw watch watching meet meets met hug hugs love loves like likes play plays walk walks run runs sit "
    "sits stand stands look looks feed feeds chase chases ride rides give gives find finds read reads eat eats"
)

# --- pronouns ---------------------------------------------------------------------------------------
PRONOUNS = {
    "she": "female",
    "her": "female",
    "herself": "female",
    "he": "male",
    "him": "male",
    "his": "male",
    "himself": "male",
    "it": "neutral",
    "its": "neutral",
    "they": "group",
    "them": "group",
    "their": "group",
    "themselves": "group",
}
PRONOUNS_GROUP = frozenset({"they", "them", "their", "themselves"})
OBJECT_PRONOUNS = words("him her them its their his themselves himself herself")

# --- scenes -----------------------------------------------------------------------------------------
SCENE_PREPS = words("in at inside into on to through across near by under along onto from")
SCENE_STOP = frozenset({",", ".", ";", "!", "?", "and", "with"})
"""Where a scene phrase after a preposition ends."""

STOP = (
    DETERMINERS
    | frozenset(PRONOUNS)
    | SCENE_PREPS
    | words(
        """and or with without of for is are was were be been being has have had now then while as when who which
        there here also very all both each then again still only just not no so but if over above below beneath
        behind beside next left right top bottom middle center front back he she it they we i you"""
    )
)
"""Words that never describe a noun (no modifier)."""
SENTENCE_END = frozenset({".", ";", "!", "?"})

# --- departures ---------------------------------------------------------------------------------------
LEAVE_WORDS = (
    ("leaves",),
    ("has", "left"),
    ("have", "left"),
    ("left", "the"),
    ("exits",),
    ("disappears",),
    ("vanishes",),
    ("departs",),
    ("goes", "away"),
    ("walks", "away"),
    ("runs", "away"),
    ("flies", "away"),
    ("is", "gone"),
    ("are", "gone"),
    ("is", "no", "longer"),
    ("are", "no", "longer"),
)

# --- components and appearance ---------------------------------------------------------------------------
WEAR_VERBS = words(
    "wears wearing wear holds holding hold carries carrying carry has gets got puts dons takes raises wields grabs "
    "lifts swings draws picks"
)
HAIR_LIKE = words("hair eyes beard moustache mustache skin fur feathers")
"""The last word of a lasting appearance change ('now has short red hair')."""

# --- actions ----------------------------------------------------------------------------------------
ACTION_SKIP = frozenset({"and", ",", "is", "are", "was", "were", "now", "then"})
TRAILING = words("and the a an with while as when where but or to of at")
