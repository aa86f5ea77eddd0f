"""The run directory as a record that survives faults and refusals, through the real CLI: a refused
command exits 2 with one `error:` line and leaves every file as it was; a damaged checkpoint never strands a run;
two writers never race; W&B never blocks; one bad job never stops a sweep."""

from __future__ import annotations

import fcntl
import json
import os
import stat
from pathlib import Path

import pytest

from tests.helpers import TINY, run_cli


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (and its bytes): what 'nothing changed' is checked against."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def assert_one_error_line(result, *fragments: str) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def train(run_dir: Path, *overrides: str, **kwargs):
    return run_cli("glu_study.train", *TINY, *overrides, f"hydra.run.dir={run_dir}", **kwargs)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert train(run_dir).returncode == 0
    return run_dir


def test_refused_resume_names_the_keys_and_changes_nothing(finished_run):
    before = snapshot(finished_run)
    result = train(finished_run, "trainer.lr=0.5", "ffn=swiglu")
    assert_one_error_line(
        result, "different configuration", "trainer.lr: 1.0 -> 0.5", "ffn.name: 'relu' -> 'swiglu'"
    )
    assert snapshot(finished_run) == before


def test_second_writer_is_refused_and_changes_nothing(finished_run):
    before = snapshot(finished_run)
    with open(finished_run / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running `train` on this directory holds
        assert_one_error_line(train(finished_run), "being written by another process")
    assert snapshot(finished_run) == before


def test_a_resume_on_other_data_is_refused_and_changes_nothing(tmp_path, finished_run):
    """A checkpoint trained on another corpus or tokenizer (the same config on a machine with another Python)
    is not continued on this machine's data: one error line naming what differs, nothing changed."""
    import shutil

    import torch

    from glu_study.files import file_digest

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    newest = run_dir / "checkpoints" / "step_6"
    payload = torch.load(newest / "state.pt", weights_only=False)
    built = payload["data"]["tokenizer_fingerprint"]
    assert set(payload["data"]) == {"corpus_fingerprint", "tokenizer_fingerprint"} and len(built) == 16
    payload["data"]["tokenizer_fingerprint"] = "0" * 16  # what another machine's tokenizer would have been
    torch.save(payload, newest / "state.pt")
    (newest / "state.sha256").write_text(file_digest(newest / "state.pt") + "\n")
    before = snapshot(run_dir)
    assert_one_error_line(
        train(run_dir),
        "trained on other data than this machine builds",
        f"tokenizer_fingerprint {'0' * 16} -> {built}",
    )
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_exactly(tmp_path):
    run_dir = tmp_path / "run"
    assert train(run_dir).returncode == 0  # checkpoints at steps 3 and 6
    figure = json.loads((run_dir / "summary.json").read_text())["eval/log_perplexity"]
    state = run_dir / "checkpoints" / "step_6" / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a disk that filled during the save
    result = train(run_dir)
    assert result.returncode == 0, result.stderr
    assert "does not match its checksum" in result.stdout + result.stderr
    assert (run_dir / "checkpoints" / "damaged-step_6" / "state.pt").is_file()  # kept, not deleted
    assert (
        json.loads((run_dir / "summary.json").read_text())["eval/log_perplexity"] == figure
    )  # steps 4-6 redone


@pytest.mark.slow
def test_evaluate_falls_back_to_the_export_when_no_checkpoint_loads(tmp_path):
    run_dir = tmp_path / "run"
    assert train(run_dir).returncode == 0
    for state in (run_dir / "checkpoints").glob("step_*/state.pt"):
        state.write_bytes(b"damaged")
    result = run_cli("glu_study.evaluate", f"run_dir={run_dir}")
    assert result.returncode == 0, result.stderr
    assert f"{run_dir / 'model'}" in result.stdout


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("model.d_ff=0", "model.d_ff must be >= 1"),
        ("logger.mode=sometimes", "logger.mode='sometimes'"),
        ("seed=-1", "seed must be in 0 ... 4294967295, got -1"),
        ("trainer.lr=nan", "trainer.lr must be a finite number, got nan"),
        # more of the same checks, in the slow tier (each case is a fresh CLI process, ~6 s)
        pytest.param("model.num_heads=0", "model.num_heads must be >= 1", marks=pytest.mark.slow),
        pytest.param("trainer.lr=-1", "trainer.lr must be > 0.0", marks=pytest.mark.slow),
        pytest.param("data.eval_examples=0", "data.eval_examples must be >= 1", marks=pytest.mark.slow),
    ],
)
def test_bad_settings_exit_2_before_anything_is_written(tmp_path, override, fragment):
    run_dir = tmp_path / "run"
    assert_one_error_line(train(run_dir, override), fragment)
    assert not run_dir.exists()


def test_a_run_of_another_model_size_in_the_directory_says_which_override_gives_a_directory_of_its_own(
    tmp_path,
):
    run_dir = tmp_path / "run"
    assert train(run_dir, "trainer.max_steps=1").returncode == 0
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    line = assert_one_error_line(
        train(run_dir, "trainer.max_steps=1", "model=t5_nano"), "model.name: 't5_tiny' -> 't5_nano'"
    )
    assert (
        "it holds a t5_tiny run: name=t5_nano-relu-s0 (or hydra.run.dir=...) gives this t5_nano run" in line
    )
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_run_directory_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "run"
    path.write_text("not a directory\n")
    assert_one_error_line(train(path), "is not a directory")
    assert path.read_text() == "not a directory\n"


UNREACHABLE = {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}  # a closed port


def test_wandb_online_without_a_server_is_refused_up_front(tmp_path):
    env = {**os.environ, **UNREACHABLE}
    result = train(tmp_path / "run", "logger=wandb", "logger.mode=online", "logger.timeout_s=2", env=env)
    assert_one_error_line(result, "logger.mode=online", "did not answer")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_wandb_auto_without_a_server_logs_offline(tmp_path):
    env = {**os.environ, **UNREACHABLE}
    result = train(tmp_path / "run", "logger=wandb", "logger.timeout_s=2", env=env)
    assert result.returncode == 0, result.stderr
    assert "unreachable" in result.stderr and "wandb sync" in result.stderr
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_wandb_auto_without_a_key_says_it_logs_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env["HOME"] = str(tmp_path)  # no ~/.netrc: no key from `wandb login` either
    result = train(tmp_path / "run", "logger=wandb", env=env)
    assert result.returncode == 0, result.stderr
    assert "warning: no W&B API key (WANDB_API_KEY or `wandb login`): logging offline" in result.stderr
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_a_bad_job_does_not_stop_the_sweep_and_the_exit_status_counts_failures(tmp_path):
    result = run_cli(
        "glu_study.train",
        "-m",
        *TINY,
        "model.num_heads=0,4",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweep.subdir=job${hydra.job.num}",
    )
    assert result.returncode == 1, result.stderr
    assert "model.num_heads must be >= 1" in result.stderr and "1 of 2 jobs failed" in result.stderr
    assert (tmp_path / "job1" / "summary.json").is_file() and not (tmp_path / "job0").exists()


def test_records_respect_the_umask(finished_run):
    for path in (finished_run / "model", finished_run / "checkpoints" / "step_6"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~_umask(), path
        files = [p for p in path.rglob("*") if p.is_file()]
        assert "model.safetensors" in {p.name for p in files} or path.name != "model"
        for file in files:  # the safetensors export too (safetensors writes a private temporary file)
            assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~_umask(), file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.slow
def test_report_warns_about_unfinished_runs_and_names_a_damaged_record(finished_run, tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "unfinished").mkdir(parents=True)
    (sweep / "unfinished" / "metrics.jsonl").write_text('{"step": 1, "train/loss": 5.0}\n')
    for name in ("summary.json", "metrics.jsonl"):
        (sweep / "done").mkdir(exist_ok=True)
        (sweep / "done" / name).write_bytes((finished_run / name).read_bytes())
    result = run_cli("glu_study.report", str(sweep), cwd=tmp_path)  # no --out: <sweep>/report
    assert result.returncode == 0, result.stderr
    assert "unfinished has no summary.json" in result.stderr
    assert (sweep / "report" / "table1.md").is_file()  # beside the runs it read, not in ./reports
    assert (
        not (tmp_path / "reports").exists() and not (sweep / "report" / "runs").exists()
    )  # no copy without --out
    (sweep / "unfinished" / "metrics.jsonl").unlink()
    (sweep / "done" / "summary.json").write_text('{"name": ')
    assert_one_error_line(run_cli("glu_study.report", str(sweep), cwd=tmp_path), "done: damaged run record")


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("ffn=", "Could not find 'ffn/'"),
        pytest.param("seed=abc", "seed=abc", marks=pytest.mark.slow),  # each a fresh CLI process, ~5 s
        pytest.param("trainer.max_step=3", "trainer.max_step", marks=pytest.mark.slow),
    ],
)
def test_hydra_level_mistakes_are_one_error_line(tmp_path, override, fragment):
    run_dir = tmp_path / "run"
    assert_one_error_line(train(run_dir, override), fragment)
    assert not run_dir.exists()
