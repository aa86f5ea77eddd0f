"""The package's structure, checked from its source: one room per concern, no import circles, commands that never
import each other, no reaching into another module's private names, and a README that names every file's job."""

from __future__ import annotations

import ast

from tests.helpers import ROOT

PACKAGE = ROOT / "glu_study"
COMMANDS = {"glu_study.train", "glu_study.evaluate", "glu_study.finetune", "glu_study.report"}
COMMANDS |= {"glu_study.gallery", "glu_study.mlp", "glu_study.ffn.__main__"}


def module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path) -> list[tuple[str, list[str]]]:
    """(module, names) of every `import` / `from ... import` in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        targets = set()
        for mod, names in imports(path):
            # `from glu_study.training import run_dir` imports the submodule, not the package's __init__ only
            targets |= {f"{mod}.{n}" for n in names if f"{mod}.{n}" in modules} or ({mod} & modules.keys())
        edges[name] = targets
    return edges


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node, [])


def test_commands_never_import_each_other_and_shared_code_never_imports_a_command():
    for name, targets in graph().items():
        assert not (targets & COMMANDS), f"{name} imports the command(s) {targets & COMMANDS}"


def test_no_module_imports_another_modules_private_names():
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "scripts").glob("*.py")]:
        for mod, names in imports(path):
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            assert not (mod.startswith("glu_study") and private), f"{path}: from {mod} import {private}"


def layout_files(readme: str) -> set[str]:
    """The files the README's Layout tree names under glu_study/ (a line names files until its description)."""
    tree = readme.split("## Layout", 1)[1].split("```", 2)[1].splitlines()[2:]  # after "```" and "glu_study/"
    folder, named = "", set()
    for line in tree:
        depth = (len(line) - len(line.lstrip())) // 2
        if depth == 0:
            break  # scripts/, tests/: outside the package
        words = line.split()
        if depth == 1:
            folder = words[0] if words[0].endswith("/") else ""
        for word in words:
            if not word.endswith(".py"):
                break
            named.add(folder + word if depth > 1 else word)
    return named


def test_readme_layout_names_every_file():
    named = layout_files((ROOT / "README.md").read_text())
    files = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert files - named == set(), "README's Layout section does not name these files"
    assert named - files == set(), "README's Layout section names files that do not exist"


def test_the_install_command_the_readme_shows_for_a_cpu_only_machine_reaches_pip():
    """`make install TORCH_INDEX=...` (README): the torch pin is installed from that index, and only then."""
    import subprocess

    index = "https://download.pytorch.org/whl/cpu"
    assert f"make install TORCH_INDEX={index}" in (ROOT / "README.md").read_text()
    dry = [["make", "-n", "-B", "install"], ["make", "-n", "-B", "install", f"TORCH_INDEX={index}"]]
    plain, cpu = (subprocess.run(c, cwd=ROOT, capture_output=True, text=True, check=True).stdout for c in dry)
    assert 'pip install --quiet "torch==2.13.0"' in plain and "--index-url" not in plain
    assert f'pip install --quiet "torch==2.13.0" --index-url {index}' in cpu


def test_the_past_fall_study_commands_in_the_readme_compose():
    """Every `glu_study.train` line of the README's CPU-reproduction block composes as Hydra would run it (each
    comma-separated sweep value in turn), and the table's two halves cover the preset's eight variants."""
    import shlex

    from glu_study.config import compose

    readme = (ROOT / "README.md").read_text()
    block = readme.split("### The CPU reproduction", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [
        ln.rstrip(" &") for ln in block.splitlines() if ln.startswith(".venv/bin/python -m glu_study.train")
    ]
    assert len(lines) == 5
    halves = []
    for line in lines:
        args = [a for a in shlex.split(line)[3:] if a != "-m"]
        sweeps = {a.split("=", 1)[0]: a.split("=", 1)[1].split(",") for a in args if "," in a}
        halves.append(sweeps.get("ffn", []))
        for i in range(max((len(v) for v in sweeps.values()), default=1)):
            cell = [a if "," not in a else f"{a.split('=')[0]}={sweeps[a.split('=')[0]][i]}" for a in args]
            cfg = compose([c for c in cell if not c.startswith("hydra.")])
            assert cfg.study in ("table1", "lr_check", "fall_probe")
    from tests.helpers import preset_sweep

    assert sorted(halves[1] + halves[2]) == sorted(preset_sweep("table1_past_fall")["ffn"])
