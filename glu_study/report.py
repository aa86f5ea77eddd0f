"""Turn pretraining runs into a committed study: the paper's Table 1, a learning-rate check, a scaling study.

    python -m glu_study.report runs/table1_cpu                     # a sweep directory (or several run dirs)
    python -m glu_study.report --wandb ENTITY/PROJECT --group table1_cpu

writes <the first directory>/report/ (or --out DIR; with --wandb, ./report-<group>/): table1.md, runs.csv,
curves.png, ranking.png (runs of several model sizes: the
scaling study's scaling.md, runs.csv, scaling.png, gap.png; runs at several learning rates: the rate check's
lr_check.md, lr_check.png; one size at several training lengths: regime_curve.md, runs.csv,
regime_curve.png; with --reference GROUP, a repetition control against the study GROUP: regime_control.md,
regime_control.png; a fall probe: fall_probe.md, fall_probe.png), and, with --out, runs/<name>/ with the raw
records every number was computed from (summary.json, metrics.jsonl, config.yaml), so `make report` can
regenerate the same files from what is committed. Runs with fine-tune records (finetune/<name>/scores.json) add table2.md and
finetune.csv: Tables 2-4 (glu_study.reporting.tables2_4), their records copied beside the others. Local
directories and the W&B Public API are two readers of one record type (glu_study.reporting.records). Runs
whose corpus fingerprints differ are never pooled: the command refuses them (exit 2), naming the runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from glu_study.errors import DataError, exit_status
from glu_study.reporting import fall_probe
from glu_study.reporting.lr_check import is_lr_check, write_lr_check
from glu_study.reporting.readme import readme_markers, readme_section, update_readme
from glu_study.reporting.records import (
    RunRecord,
    check_one_corpus,
    copy_raw_records,
    find_run_dirs,
    read_finetunes,
    read_run_dir,
    read_wandb,
)
from glu_study.reporting.regime_control import pairs, split_reference, write_control
from glu_study.reporting.regime_curve import is_regime_curve, write_regime_curve
from glu_study.reporting.scaling import is_scaling, write_scaling
from glu_study.reporting.table1 import write_table1
from glu_study.reporting.tables2_4 import write_finetune_report

# What each kind of study writes, its main markdown first (the README section is made from it and its figures).
LR_CHECK_FILES = ("lr_check.md", "lr_check.png")
SCALING_FILES = ("scaling.md", "runs.csv", "scaling.png", "gap.png")
TABLE1_FILES = ("table1.md", "runs.csv", "curves.png", "ranking.png")
REGIME_CURVE_FILES = ("regime_curve.md", "runs.csv", "regime_curve.png")
CONTROL_FILES = ("regime_control.md", "regime_control.png")


def write_study(records: list[RunRecord], out_dir: Path, experiment: str) -> tuple[list[str], str]:
    """Write the study these runs make up (which one, the records tell) into out_dir; its files, main one
    first, and a one-line summary."""
    kinds = {r.study for r in records}  # the kind each preset recorded (runs from before 2026-12-05: None)
    if kinds == {"fall_probe"}:
        fall_probe.write_fall_probe(records, out_dir, experiment)
        return list(fall_probe.FILES), f"{len(records)} runs"
    if kinds == {"lr_check"} or is_lr_check(records):  # runs that differ in learning rate: not a Table 1
        write_lr_check(records, out_dir, experiment)
        return list(LR_CHECK_FILES), f"{len(records)} runs"
    if is_scaling(records):  # runs of several model sizes: the scaling study
        all_sizes = write_scaling(records, out_dir, experiment)
        return list(SCALING_FILES), f"{len(records)} runs, {len(all_sizes)} sizes"
    if is_regime_curve(records):  # one size at several training lengths: the regime curve
        curve = write_regime_curve(records, out_dir, experiment)
        return list(REGIME_CURVE_FILES), f"{len(records)} runs, {len(curve)} training lengths"
    stats = write_table1(records, out_dir, experiment)
    return list(TABLE1_FILES), f"{len(records)} runs, {len(stats)} variants"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m glu_study.report",
        description=__doc__.split("\n\n")[0],
        epilog="example: python -m glu_study.report runs/table1_cpu   (writes runs/table1_cpu/report/)",
    )
    p.add_argument("dirs", nargs="*", type=Path, help="run directories or sweep directories")
    p.add_argument(
        "--wandb", metavar="ENTITY/PROJECT", help="read the runs through the W&B Public API instead"
    )
    p.add_argument("--group", help="W&B group (experiment) to read; default: all finished runs")
    p.add_argument(
        "--out",
        type=Path,
        help="output directory, with a copy of the runs' raw records so that it regenerates (default: <the first "
        "directory given>/report, beside the runs and without a copy; with --wandb: ./report-<group>)",
    )
    p.add_argument(
        "--readme", type=Path, help="also refresh this README's <!-- <experiment>:begin/end --> section"
    )
    p.add_argument(
        "--reference",
        metavar="GROUP",
        help="a repetition control: the runs of GROUP (one corpus) are the reference, the others (another "
        "corpus) the control; only where each run's loss falls is compared (regime_control.md)",
    )
    args = p.parse_args(argv)
    if not args.wandb and not args.dirs:
        p.error("give run directories, or --wandb ENTITY/PROJECT")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return exit_status(lambda: report(args))  # bad input: one error line, exit 2, before anything is written


def report(args: argparse.Namespace) -> int:
    # Read and check everything before writing anything.
    run_dirs = [] if args.wandb else find_run_dirs(args.dirs, warn=lambda m: print(m, file=sys.stderr))
    records = read_wandb(args.wandb, args.group) if args.wandb else [read_run_dir(d) for d in run_dirs]
    finetunes = read_finetunes(run_dirs)
    if not records:
        raise DataError("no finished runs found")
    if args.reference:
        return control_report(args, run_dirs, records)
    check_one_corpus(records)
    groups = sorted({r.group for r in records})
    experiment = groups[0] if len(groups) == 1 else "mixed"
    out_dir = output_dir(args, experiment)
    if args.readme:
        readme_markers(args.readme, experiment)
    if run_dirs and args.out:
        copy_raw_records(run_dirs, out_dir / "runs")
    files, summary = write_study(records, out_dir, experiment)
    publish(out_dir, files, summary, experiment, args.readme)
    if finetunes:  # Tables 2-4 whenever fine-tune records exist
        print(write_finetune_report(finetunes, out_dir, experiment))
        print(f"wrote {out_dir}/table2.md, finetune.csv ({len(finetunes)} fine-tunes)")
    return 0


def output_dir(args: argparse.Namespace, experiment: str) -> Path:
    """Where the report goes: --out (a committed study: `make report` passes reports/<study>), else beside the
    runs it reads (<first directory>/report; no copy of their records, which are right there), else, for runs
    read from W&B, ./report-<group>. Never the repository's reports/ unless asked."""
    if args.out:
        return args.out
    if args.dirs:
        return args.dirs[0].absolute() / "report"
    return Path.cwd() / f"report-{experiment}"


def control_report(args: argparse.Namespace, run_dirs: list[Path], records: list[RunRecord]) -> int:
    """The repetition control against its reference study (glu_study.reporting.regime_control), its records
    copied into runs/<group>/; the reference's runs that pair with no control run are left out."""
    reference, control = split_reference(records, args.reference)
    ps = pairs(reference, control)
    experiment = control[0].group
    out_dir = output_dir(args, experiment)
    if args.readme:
        readme_markers(args.readme, experiment)
    if (
        run_dirs and args.out
    ):  # one folder per group: the reference's and the control's runs share names (relu-s0)
        used = {(r.group, r.name) for p in ps for r in (p.reference, p.control)}
        for group in sorted({g for g, _ in used}):
            dirs = [
                d
                for d, r in zip(run_dirs, records, strict=True)
                if (r.group, r.name) in used and r.group == group
            ]
            copy_raw_records(dirs, out_dir / "runs" / group)
    write_control(ps, out_dir, args.reference)
    publish(out_dir, list(CONTROL_FILES), f"{len(ps)} pairs", experiment, args.readme)
    return 0


def publish(out_dir: Path, files: list[str], summary: str, experiment: str, readme: Path | None) -> None:
    """The study's README section (its main markdown and figures), if asked, and what was written."""
    text = (out_dir / files[0]).read_text()
    if readme:
        figures = [out_dir / f for f in files if f.endswith(".png")]
        update_readme(readme, experiment, readme_section(text, figures, readme))
    print(text)
    print(f"wrote {out_dir}/{', '.join(files)} ({summary})")


if __name__ == "__main__":
    sys.exit(main())
