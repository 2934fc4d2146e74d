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
GROUP_COUNTS = {"pair": 2, "couple": 2, "few": 3, "several": 3, "group": 3}
"""'a pair of swans', 'a few ducks': the count of a plural noun without a number."""
ANAPHOR = "one"
"""'a black one and a white one': a noun phrase whose noun is the kind named before."""
NAME_MARKERS = words("named called")
"""'a girl named Anna': the capitalised word after it is the subject's name."""
DISTINGUISHING = (
    words(
        """black white red blue green yellow brown grey gray orange pink purple golden silver spotted striped
        dark blonde ginger"""
    ),
    words("big small little tiny large huge giant"),
    words("tall short"),
    words("old young elderly"),
    words("fat thin"),
)
"""Groups of adjectives that tell two subjects of one kind apart: two different words of one group conflict."""
VERB_CONTEXT = words("who that which also then and")
"""Words after which a plural-looking noun is a verb ('the lion who watches')."""
VERB_NOUNS = words("fish duck watch ring box fly")
"""Nouns that are verbs right after a subject ('a boy and his grandfather fish at the lake')."""
THING_PERSONS = words("robot alien ghost zombie")
"""Persons that 'it' may mean."""
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
POSSESSIVE_PRONOUNS = words("his her its their")
"""Pronouns that own the noun phrase they start ('her hat')."""
REFLEXIVE = words("himself herself themselves itself")
POSSESSIVE_MARK = "'s"
CLAUSE_END = frozenset({".", ";", "!", "?", ","})
EXPLETIVE_VERBS = words("is was becomes became gets got turns turned starts started begins began 's")
"""'it is night', 'it starts to rain': 'it' names no subject when a time or weather word follows."""
TIMES_AND_WEATHER = words(
    """winter summer autumn fall spring night evening morning noon afternoon midnight dawn dusk sunset sunrise
    daytime dark rain raining rainy snow snowing snowy storm stormy fog foggy windy sunny cloudy thunderstorm
    christmas halloween"""
)

# --- scenes -----------------------------------------------------------------------------------------
SCENE_PREPS = words(
    "in at inside into on to through across near by under along onto from over above around past toward towards"
)
SCENE_VERBS = words("enters entering enter visits visiting reaches reaching")
"""Verbs whose object is a place ('he enters a cafe')."""
SCENE_STOP = frozenset({",", ".", ";", "!", "?", "and", "with"})
"""Where a scene phrase after a preposition ends."""
SIDE_WORDS = words("left right far other side hand middle center centre edge corner top front back")
"""'the left side of', 'the middle of': a spatial phrase after a preposition, not a scene."""

# --- prepositional objects ------------------------------------------------------------------------------
PLACE_PREPS = words(
    """on onto upon in into inside under underneath beneath below behind beside by near against at across along
    through around to toward towards from over above past"""
)
"""A thing (not a person or an animal) after one of these is part of the scene, not a new subject."""
PLACE_PREP_HEADS = words("next front top out side left right middle close edge")
"""'next to', 'in front of', 'on top of': the word before 'to'/'of' that makes them place prepositions."""

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
    ("leave",),
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
    ("fly", "away"),
    ("run", "away"),
    ("walk", "away"),
    ("go", "away"),
    ("swim", "away"),
    ("swims", "away"),
    ("is", "gone"),
    ("are", "gone"),
    ("is", "no", "longer"),
    ("are", "no", "longer"),
)

# --- components and appearance ---------------------------------------------------------------------------
WEAR_VERBS = words(
    "wears wearing wear holds holding hold carries carrying carry has gets got puts dons takes raises wields grabs "
    "lifts swings draws picks reads reading opens opening plays playing waves waving"
)
"""Verbs whose accessory object the subject wears or holds ('she reads a book')."""
HAIR_LIKE = words("hair eyes beard moustache mustache skin fur feathers")
"""The last word of a lasting appearance change ('now has short red hair')."""

# --- actions ----------------------------------------------------------------------------------------
ACTION_SKIP = frozenset({"and", ",", "is", "are", "was", "were", "now", "then"})
TRAILING = words("and the a an with while as when where but or to of at")
