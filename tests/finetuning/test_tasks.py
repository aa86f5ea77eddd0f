"""Fine-tuning tasks: T5's text-to-text casting of every task, mixtures, loaders on local files in the hub's schema."""

from __future__ import annotations

import pytest

from glu_study.errors import DataError, UnknownTaskError
from glu_study.finetuning.tasks import MIXTURES, TASKS, load_split, resolve_tasks, text_to_text
from tests.helpers.task_fixtures import ROWS, classification_rows, squad_rows, write_split


def test_every_task_has_a_fixture_row():
    assert sorted(ROWS) == sorted(TASKS)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_text_to_text_matches_t5(name):
    row, expected = ROWS[name]
    assert text_to_text(TASKS[name], row, for_training=False)[0] == expected


def test_training_pairs_record_per_answer_wsc_correct_referent_only():
    row = dict(ROWS["record"][0], answers=["Rome", "Roma"])
    assert [t for _, t in text_to_text(TASKS["record"], row, for_training=True)] == ["Rome", "Roma"]
    assert len(text_to_text(TASKS["record"], row, for_training=False)) == 1
    wrong = dict(ROWS["wsc"][0], span1_text="Mark", label=0)
    assert text_to_text(TASKS["wsc"], wrong, for_training=True) == []
    assert text_to_text(TASKS["wsc"], wrong, for_training=False)[0][1] == "Mark"


def test_stsb_rounds_to_steps_of_0_2():
    task, row = TASKS["stsb"], ROWS["stsb"][0]
    targets = [
        text_to_text(task, dict(row, label=x), for_training=True)[0][1] for x in (0.0, 0.09, 0.11, 3.5, 5.0)
    ]
    assert targets == ["0.0", "0.0", "0.2", "3.6", "5.0"]  # 3.5 * 5 = 17.5 rounds half to even, as tf.round


def test_resolve_tasks_and_mixtures():
    assert [t.name for t in resolve_tasks("rte")] == ["rte"]
    assert [t.name for t in resolve_tasks("cola+squad+cola")] == ["cola", "squad"]
    assert [t.name for t in resolve_tasks("all")] == MIXTURES["all"]
    assert "wnli" not in MIXTURES["glue"] and len(MIXTURES["glue"]) == 8 and len(MIXTURES["superglue"]) == 8
    with pytest.raises(UnknownTaskError) as e:
        resolve_tasks("rte+colaa")
    assert "colaa" in str(e.value) and "superglue_rte" in str(e.value) and "all" in str(e.value)


def test_local_files_in_the_hub_schema(tmp_path):
    write_split(tmp_path / "rte" / "train.jsonl", classification_rows(10))
    ds = load_split(TASKS["rte"], "train", tmp_path)
    assert len(ds) == 10 and {"sentence1", "sentence2", "label", "idx"} <= set(ds.column_names)
    import datasets

    datasets.Dataset.from_list(squad_rows(5)).to_parquet(str(tmp_path / "squad" / "validation.parquet"))
    assert load_split(TASKS["squad"], "validation", tmp_path)[0]["answers"]["text"]
    with pytest.raises(DataError, match="no validation split"):
        load_split(TASKS["rte"], "validation", tmp_path)
    write_split(tmp_path / "cola" / "train.jsonl", [{"text": "no sentence field", "label": 0}])
    with pytest.raises(DataError, match="unexpected schema, missing sentence"):
        load_split(TASKS["cola"], "train", tmp_path)
    write_split(tmp_path / "sst2" / "train.jsonl", [{"sentence": "x", "label": 7, "idx": 0}])
    with pytest.raises(DataError, match="class ids"):
        load_split(TASKS["sst2"], "train", tmp_path)


def test_datasets_cache_stays_under_the_given_root(tmp_path):
    """Fine-tuning keeps datasets' cache under GLU_STUDY_CACHE (finetune passes <cache_dir>/hf), not ~/.cache."""
    write_split(tmp_path / "data" / "rte" / "train.jsonl", classification_rows(10))
    load_split(TASKS["rte"], "train", tmp_path / "data", tmp_path / "cache")
    assert list((tmp_path / "cache").rglob("*.arrow"))
