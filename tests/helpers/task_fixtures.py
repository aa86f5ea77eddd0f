"""One row per task in the schema of its hub dataset (nyu-mll/glue, aps/super_glue, rajpurkar/squad), with the
text-to-text pair T5 makes of it, and a writer for small local split files the loaders read like the hub's."""

from __future__ import annotations

import json
from pathlib import Path

# task: (row as the hub serves it, the (inputs, target) T5's preprocessor gives)
ROWS: dict[str, tuple[dict, tuple[str, str]]] = {
    "cola": (
        {"sentence": "The book was written by John.", "label": 1, "idx": 0},
        ("cola sentence: The book was written by John.", "acceptable"),
    ),
    "sst2": (
        {"sentence": "a gorgeous film", "label": 1, "idx": 3},
        ("sst2 sentence: a gorgeous film", "positive"),
    ),
    "mrpc": (
        {"sentence1": "He said hi.", "sentence2": "He greeted us.", "label": 0, "idx": 1},
        ("mrpc sentence1: He said hi. sentence2: He greeted us.", "not_equivalent"),
    ),
    "qqp": (
        {"question1": "How old are you?", "question2": "What is your age?", "label": 1, "idx": 2},
        ("qqp question1: How old are you? question2: What is your age?", "duplicate"),
    ),
    "stsb": (
        {"sentence1": "A man plays.", "sentence2": "A man is playing.", "label": 4.13, "idx": 0},
        ("stsb sentence1: A man plays. sentence2: A man is playing.", "4.2"),
    ),
    "mnli": (
        {"premise": "Cats sleep.", "hypothesis": "Animals rest.", "label": 0, "idx": 5},
        ("mnli hypothesis: Animals rest. premise: Cats sleep.", "entailment"),
    ),
    "qnli": (
        {"question": "Where is Paris?", "sentence": "Paris is in France.", "label": 0, "idx": 0},
        ("qnli question: Where is Paris? sentence: Paris is in France.", "entailment"),
    ),
    "rte": (
        {"sentence1": "It rained.", "sentence2": "The ground is dry.", "label": 1, "idx": 7},
        ("rte sentence1: It rained. sentence2: The ground is dry.", "not_entailment"),
    ),
    "wnli": (
        {"sentence1": "The cup fell.", "sentence2": "It broke.", "label": 1, "idx": 0},
        ("wnli sentence1: The cup fell. sentence2: It broke.", "entailment"),
    ),
    "boolq": (
        {"question": "is water wet", "passage": "Water makes things wet.", "label": 1, "idx": 0},
        ("boolq passage: Water makes things wet. question: is water wet", "True"),
    ),
    "cb": (
        {"premise": "It may rain.", "hypothesis": "It will rain.", "label": 2, "idx": 0},
        ("cb hypothesis: It will rain. premise: It may rain.", "neutral"),
    ),
    "copa": (
        {
            "premise": "The man fell.",
            "choice1": "He slipped.",
            "choice2": "He sang.",
            "question": "cause",
            "label": 0,
            "idx": 0,
        },
        ("copa choice1: He slipped. choice2: He sang. premise: The man fell. question: cause", "choice1"),
    ),
    "multirc": (
        {
            "paragraph": "<b>Sent 1: </b>Tom ran.<br><b>Sent 2: </b>He won.<br>",
            "question": "Who won?",
            "answer": "Tom",
            "idx": {"paragraph": 0, "question": 0, "answer": 0},
            "label": 1,
        },
        ("multirc question: Who won? answer: Tom paragraph: Sent 1: Tom ran. Sent 2: He won. ", "True"),
    ),
    "record": (
        {
            "passage": "Rome is old.\n@highlight\nIt has a forum\n@highlight\nItaly",
            "query": "@placeholder is the capital.",
            "entities": ["Rome", "Italy"],
            "entity_spans": {"text": ["Rome", "Italy"], "start": [0, 48], "end": [4, 53]},
            "answers": ["Rome"],
            "idx": {"passage": 0, "query": 0},
        },
        (
            "record query: @placeholder is the capital. entities: Rome, Italy "
            "passage: Rome is old. It has a forum. Italy",
            "Rome",
        ),
    ),
    "superglue_rte": (
        {"premise": "It rained.", "hypothesis": "It was wet.", "label": 0, "idx": 0},
        ("rte hypothesis: It was wet. premise: It rained.", "entailment"),
    ),
    "wic": (
        {
            "word": "bank",
            "sentence1": "The river bank.",
            "sentence2": "The bank loan.",
            "start1": 10,
            "start2": 4,
            "end1": 14,
            "end2": 8,
            "label": 0,
            "idx": 0,
        },
        ("wic sentence1: The river bank. sentence2: The bank loan. word: bank", "False"),
    ),
    "wsc": (
        {
            "text": "Mark told Pete many lies about himself, which Pete included in his book.",
            "span1_index": 2,
            "span2_index": 11,
            "span1_text": "Pete",
            "span2_text": "his",
            "label": 1,
            "idx": 0,
        },
        ("wsc: Mark told Pete many lies about himself, which Pete included in *his* book.", "Pete"),
    ),
    "squad": (
        {
            "id": "5733be284776f41900661182",
            "title": "Notre_Dame",
            "context": "It was built in 1842 (by Father Sorin).",
            "question": "When was it built?",
            "answers": {"text": ["1842", "in 1842"], "answer_start": [16, 13]},
        },
        ("question: When was it built ? context: It was built in 1842 ( by Father Sorin ) .", "1842"),
    ),
}


def write_split(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def classification_rows(n: int, seed: int = 0) -> list[dict]:
    """RTE-shaped rows a tiny model can learn: the label is whether sentence2 repeats sentence1's animal."""
    import random

    rng = random.Random(seed)
    animals = ["cat", "dog", "horse", "bird", "fish", "cow"]
    rows = []
    for i in range(n):
        a = rng.choice(animals)
        same = rng.random() < 0.5
        b = a if same else rng.choice([x for x in animals if x != a])
        rows.append(
            {
                "sentence1": f"The {a} is here.",
                "sentence2": f"A {b} is here.",
                "label": 0 if same else 1,
                "idx": i,
            }
        )
    return rows


def squad_rows(n: int, seed: int = 0) -> list[dict]:
    """SQuAD-shaped rows whose answer is the number in the context."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        year = str(rng.randint(1800, 1999))
        context = f"The bridge was built in {year} by the town."
        rows.append(
            {
                "id": f"q{i}",
                "title": "Bridge",
                "context": context,
                "question": "When was the bridge built?",
                "answers": {"text": [year], "answer_start": [context.index(year)]},
            }
        )
    return rows
