"""A committed study as a README section: the text between the README's `<!-- <experiment>:begin -->` and
`<!-- <experiment>:end -->` markers is replaced by the generated report, so the README never shows a hand-typed
number (`make report` refreshes every section)."""

from __future__ import annotations

import os
from pathlib import Path

from glu_study.errors import DataError


def readme_section(table_md: str, figures: list[Path], readme: Path) -> str:
    """The report as a README section: its "# ..." title dropped, its headings one level down (the README's own
    section is "##"), and its figures embedded by paths relative to the README, so they show on GitHub."""
    body = table_md.split("\n", 2)[2]
    body = "\n".join("#" + line if line.startswith("#") else line for line in body.rstrip().split("\n"))
    links = [f"![{f.stem}]({os.path.relpath(f, readme.parent)})" for f in figures]
    return body + ("\n\n" + "\n".join(links) if links else "")


def readme_markers(readme: Path, experiment: str) -> tuple[str, str]:
    """The README's `<!-- <experiment>:begin -->` / `:end -->` pair; DataError if it lacks one (checked before
    anything is written)."""
    begin, end = f"<!-- {experiment}:begin -->", f"<!-- {experiment}:end -->"
    text = readme.read_text() if readme.is_file() else ""
    if begin not in text or end not in text:
        raise DataError(f"{readme} has no {begin} ... {end} markers")
    return begin, end


def update_readme(readme: Path, experiment: str, section: str) -> None:
    """Replace the text between the README's markers with the generated section, so the README shows the
    committed study without a hand-typed number."""
    begin, end = readme_markers(readme, experiment)
    head, rest = readme.read_text().split(begin, 1)
    readme.write_text(f"{head}{begin}\n{section}\n{end}{rest.split(end, 1)[1]}")
