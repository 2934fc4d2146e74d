"""A small English vocabulary for the offline planner and the supervisor's size checks: nouns with a
grammatical gender, a size class (1 tiny … 5 huge) and whether they are worn or carried by someone."""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

Gender = Literal["female", "male", "neutral"]


class Noun(NamedTuple):
    gender: Gender
    size: int
    person: bool = False
    accessory: bool = False
    animal: bool = False


def words(text: str) -> frozenset[str]:
    """A set of words written as one string, separated by commas or white space."""
    return frozenset(w for w in re.split(r"[,\s]+", text) if w)


def _group(
    names: str, gender: Gender, size: int, person: bool = False, accessory: bool = False, animal: bool = False
) -> dict[str, Noun]:
    return {name: Noun(gender, size, person, accessory, animal) for name in names.split(",")}


NOUNS: dict[str, Noun] = {
    **_group(
        "girl,woman,lady,queen,princess,mother,mom,grandma,grandmother,sister,daughter,witch,bride,actress,"
        "ballerina,nun,aunt,wife,schoolgirl,mermaid",
        "female",
        4,
        person=True,
    ),
    **_group(
        "boy,man,gentleman,king,prince,father,dad,grandpa,grandfather,brother,son,wizard,groom,actor,knight,"
        "uncle,husband,schoolboy,old man,monk,pirate,cowboy",
        "male",
        4,
        person=True,
    ),
    **_group(
        "child,kid,baby,person,student,teacher,doctor,nurse,chef,farmer,soldier,police officer,astronaut,"
        "robot,ninja,samurai,clown,musician,dancer,singer,painter,athlete,player,scientist,detective,"
        "firefighter,friend,stranger,warrior,elf,fairy,ghost,zombie,vampire,alien,superhero,customer,waiter,"
        "hunter,fisherman,sailor,shepherd,explorer,traveler,baker,guard,thief,villager,tourist",
        "neutral",
        4,
        person=True,
    ),
    **_group(
        "cat,kitten,rabbit,bunny,squirrel,bird,sparrow,owl,parrot,duck,chicken,frog,turtle,mouse,hamster,"
        "puppy,penguin,fish,butterfly,pigeon,crow,hedgehog,raccoon,fox,koala,seagull,dove",
        "neutral",
        2,
        animal=True,
    ),
    **_group(
        "dog,wolf,monkey,deer,sheep,goat,pig,eagle,swan,goose,panda,kangaroo,crocodile,leopard",
        "neutral",
        3,
        animal=True,
    ),
    **_group(
        "lion,tiger,bear,horse,pony,cow,unicorn,gorilla,zebra,camel,shark,dolphin,polar bear", "neutral", 4, animal=True
    ),
    **_group("elephant,dragon,giraffe,whale,dinosaur,mecha,giant", "neutral", 5, animal=True),
    **_group("bee,ant,spider,ladybug,snail", "neutral", 1, animal=True),
    **_group(
        "hat,cap,scarf,glasses,sunglasses,crown,necklace,tie,bow tie,helmet,mask,earrings,ring,watch,gloves,"
        "backpack,bag,handbag,sword,gun,wand,umbrella,flower,bouquet,phone,book,cup,balloon,kite,shield,"
        "rocket launcher,staff,camera,lantern,microphone,violin,guitar,torch,coat,jacket,cape,dress,boots",
        "neutral",
        2,
        accessory=True,
    ),
    **_group(
        "ball,toy,teddy bear,apple,cake,box,vase,lamp,clock,bottle,basket,pumpkin,laptop,computer,suitcase,"
        "drum,trophy,gift,present,candle,plant,pot,bucket,chest,mirror,painting",
        "neutral",
        2,
    ),
    **_group(
        "chair,table,desk,sofa,couch,bench,bed,piano,bicycle,bike,motorcycle,scooter,shelf,bookshelf,cart,"
        "fountain,statue,snowman,fence,door,window,tent,sled,barrel,stool,wheelchair",
        "neutral",
        3,
    ),
    **_group("car,boat,taxi,jeep,truck,tank,carriage,canoe,tree,rock,robot car", "neutral", 4),
    **_group(
        "house,castle,bus,train,ship,airplane,plane,helicopter,tower,building,church,spaceship,rocket,"
        "lighthouse,windmill,bridge,mountain,volcano,temple,palace,cabin,hut,barn",
        "neutral",
        5,
    ),
}

PLURALS: dict[str, str] = {
    "men": "man",
    "women": "woman",
    "children": "child",
    "people": "person",
    "mice": "mouse",
    "geese": "goose",
    "ladies": "lady",
    "puppies": "puppy",
    "babies": "baby",
    "butterflies": "butterfly",
    "fairies": "fairy",
    "wolves": "wolf",
    "elves": "elf",
    "knives": "knife",
    "fish": "fish",
    "sheep": "sheep",
    "deer": "deer",
}

HYPERNYMS: dict[str, frozenset[str]] = {
    "bird": words("sparrow,owl,parrot,duck,chicken,eagle,swan,goose,penguin,pigeon,crow"),
    "animal": frozenset(n for n, v in NOUNS.items() if v.animal),
    "kid": frozenset({"boy", "girl", "child", "baby", "schoolboy", "schoolgirl"}),
    "child": frozenset({"boy", "girl", "kid", "baby", "schoolboy", "schoolgirl"}),
    "person": frozenset(n for n, v in NOUNS.items() if v.person),
    "vehicle": words("car,bus,train,truck,taxi,jeep,boat,ship,bicycle,bike,motorcycle,scooter"),
    "cat": frozenset({"kitten"}),
    "dog": frozenset({"puppy"}),
    "rabbit": frozenset({"bunny"}),
    "woman": frozenset({"lady", "mother", "mom", "queen", "witch", "bride"}),
    "man": frozenset({"gentleman", "king", "father", "dad", "old man", "wizard", "groom"}),
}

NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "both": 2, "2": 2, "3": 3, "4": 4, "5": 5}

SCENES = words(
    """library street road park beach forest woods city town village room bedroom kitchen school classroom
    stage sea ocean garden office mountain mountains desert field meadow sky space river lake cafe restaurant
    castle palace hall studio market shop store station airport farm jungle snow countryside alley playground
    hospital church temple arena stadium bar pub party cave island valley hill hills lawn yard backyard
    courtyard rooftop bridge harbor port theater cinema museum gym pool sidewalk square plaza battlefield
    night sunset sunrise rain universe world underwater"""
)


def singular(word: str) -> tuple[str, bool]:
    """('cats' → 'cat', True); returns (word, False) when it is not a known plural."""
    if word in PLURALS:
        return PLURALS[word], PLURALS[word] != word
    if word.endswith("ies") and word[:-3] + "y" in NOUNS:
        return word[:-3] + "y", True
    if word.endswith("es") and word[:-2] in NOUNS:
        return word[:-2], True
    if word.endswith("s") and word[:-1] in NOUNS:
        return word[:-1], True
    return word, False


def noun(name: str) -> Noun | None:
    return NOUNS.get(name.lower().strip())


def animate(name: str) -> bool:
    """Whether the noun is a person or an animal (someone who acts, not a thing or a place)."""
    found = noun(name)
    return found is not None and (found.person or found.animal)


def same_kind(mention: str, memory_name: str) -> bool:
    """Whether a mentioned noun can refer to a remembered subject ('the bird' → the sparrow)."""
    mention, memory_name = mention.lower(), memory_name.lower()
    if mention == memory_name or memory_name.endswith(" " + mention):
        return True
    return memory_name in HYPERNYMS.get(mention, frozenset())
