"""The architecture as a test: every import in the four packages, read with `ast`, obeys the layers
written in core/__init__.py, each core area's __init__ and docs/architecture.md, and no module imports
itself back through others.

Lazy imports inside functions and ``TYPE_CHECKING`` blocks count too: they are dependencies all the same.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "console", "emulator", "enclave_app")

#: what each area of core may import besides itself, as its __init__ docstring says ("core" is the root
#: modules: errors, models, home, checks, files, ...). The areas form one direction: no two import each
#: other, directly or around a loop (test_core_areas_form_one_direction).
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "core.crypto": {"core"},
    "core.channel": {"core"},
    "core.eif": {"core", "core.crypto"},
    "core.attest": {"core", "core.crypto", "core.channel"},
    "core.kms": {"core", "core.crypto"},
    "core.backends": {"core", "core.channel"},
    "core.ops": {"core", "core.crypto", "core.channel", "core.eif", "core.attest", "core.kms", "core.backends"},
    "core.up": {"core", "core.crypto", "core.channel", "core.eif", "core.attest", "core.kms", "core.backends",
                "core.ops"},
}
#: what the enclave payload may use of core (it is measured into PCR0: keep it small)
ENCLAVE_SAFE = {"core", "core.crypto", "core.channel", "core.attest", "core.kms"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for each import of one of our modules; `from pkg import mod` resolves to
    the submodule when it is one."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in known else base, node.lineno))
    return [(mod, line) for mod, line in found if mod.split(".")[0] in PACKAGES]


def graph() -> dict[str, list[tuple[str, int]]]:
    mods = all_modules()
    known = set(mods)
    return {name: imports_of(path, name, known) for name, path in mods.items()}


def core_area(module: str) -> str:
    """core.eif.measure -> core.eif; core.errors, core -> core (the root modules)."""
    area = ".".join(module.split(".")[:2])
    return area if area in MAY_IMPORT else "core"


def subpackage(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) >= 3 else parts[0]


def forbidden(importer: str, imported: str) -> str | None:
    """Why this import breaks the architecture, or None."""
    top_from, top_to = importer.split(".")[0], imported.split(".")[0]
    if top_from == "core" and top_to != "core":
        return f"core must not import {top_to} (reach it through core.backends or a caller)"
    if top_from == "core" and (area := core_area(importer)) != (to := core_area(imported)) and to not in MAY_IMPORT[area]:
        allowed = ", ".join(sorted(MAY_IMPORT[area])) or "nothing else in core"
        return f"{area} may import only {allowed} (its __init__ docstring), not {to}"
    if top_from == "enclave_app":
        if top_to in ("console", "emulator"):
            return f"the enclave payload must not import {top_to}"
        if top_to == "core" and subpackage(imported) not in ENCLAVE_SAFE:
            return f"the enclave payload may use only {sorted(ENCLAVE_SAFE)} of core"
    if top_from == "emulator" and top_to == "console":
        return "the emulator must not import the console"
    if top_from == "console" and importer.split(".")[1:2] in (["widgets"], ["screens"]) and imported == "console.app":
        return "dialogs and widgets talk to the app through messages or console.screens.host"
    return None


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_breaks_the_layers() -> None:
    problems = [
        f"{all_modules()[mod].relative_to(REPO)}:{line}: {mod} imports {imp}: {why}"
        for mod, imps in graph().items()
        for imp, line in imps
        if (why := forbidden(mod, imp))
    ]
    assert not problems, "\n".join(problems)


def describe_cycle(cycle: list[str], g: dict[str, list[tuple[str, int]]]) -> str:
    """Each import of the loop as file:line: importer imports imported."""
    mods = all_modules()
    steps = []
    for importer, imported in zip(cycle, cycle[1:], strict=False):
        line = next(n for i, n in g[importer] if i == imported)
        steps.append(f"{mods[importer].relative_to(REPO)}:{line}: {importer} imports {imported}")
    return "import cycle:\n" + "\n".join(steps)


def test_no_import_cycles() -> None:
    g = graph()
    # every edge counts, a submodule importing its own package's __init__ included: that __init__ may
    # import the submodule back (the implicit parent import Python does first is not an edge here)
    edges = {m: {i for i, _ in imps if i != m} for m, imps in g.items()}
    cycle = find_cycle(edges)
    assert cycle is None, describe_cycle(cycle or [], g)


def test_core_areas_form_one_direction() -> None:
    # every area of core on disk is declared, and the declared areas allow no loop between them
    on_disk = {"core"} | {f"core.{p.parent.name}" for p in (REPO / "core").glob("*/__init__.py")}
    assert set(MAY_IMPORT) == on_disk
    assert find_cycle(MAY_IMPORT) is None


@pytest.mark.parametrize("area", sorted(set(MAY_IMPORT) - {"core"}))
def test_each_core_area_says_what_it_owns_and_may_import(area: str) -> None:
    init = REPO / area.replace(".", "/") / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert len(doc.split()) >= 12, f"{init.relative_to(REPO)}: its docstring should say what the area owns"
    said = doc[doc.lower().index("may import"):] if "may import" in doc.lower() else ""
    assert said, f"{init.relative_to(REPO)}: its docstring should say what it may import"
    for allowed in MAY_IMPORT[area]:
        word = "root" if allowed == "core" else allowed.split(".")[1]
        assert re.search(rf"\b{word}\b", said), f"{init.relative_to(REPO)}: 'may import' does not name {allowed}"


def test_the_checker_sees_violations() -> None:
    # the rules above must be able to fail: a core module importing the emulator, a layer upside down,
    # the payload importing the lifecycle, and a two-module cycle
    assert forbidden("core.ops.resources", "emulator.allocator")
    assert forbidden("core.eif.measure", "core.ops.lifecycle")
    assert forbidden("core.crypto.cose", "core.channel.vsock")
    assert forbidden("core.eif.sign", "core.attest.verify")  # siblings too: one direction only
    assert forbidden("core.kms.client", "core.channel.vsock")
    assert forbidden("core.errors", "core.eif.format")
    assert forbidden("core.ops.lifecycle", "core.up.runner")
    assert forbidden("enclave_app.kms", "core.ops.provision")
    assert forbidden("console.screens.build", "console.app")
    assert forbidden("core.eif.build", "core.eif.measure") is None
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    # a failure names each import of the loop with its file and line
    g = {"core.eif.sign": [("core.eif.measure", 7)], "core.eif.measure": [("core.eif.sign", 9)]}
    text = describe_cycle(["core.eif.sign", "core.eif.measure", "core.eif.sign"], g)
    assert "core/eif/sign.py:7: core.eif.sign imports core.eif.measure" in text
    assert "core/eif/measure.py:9: core.eif.measure imports core.eif.sign" in text


@pytest.mark.parametrize("module", ["core.eif.measure", "core.ops.lifecycle", "core.attest.verify"])
def test_core_loads_no_front_end_or_emulator(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('emulator', 'console', 'enclave_app', 'textual'));"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""


ARCHITECTURE = REPO / "docs" / "architecture.md"


def test_architecture_doc_matches_the_tree() -> None:
    """docs/architecture.md's core table names every module of core/ under its area, and nothing that is
    gone; every `core.x.y` and `pkg/file.py` it cites exists; it keeps the request-path paragraph."""
    text = ARCHITECTURE.read_text()
    table = text[text.index("\n## core\n"):text.index("\n## The path of a request")]
    named: set[str] = set()
    area = ""
    for row in (line for line in table.splitlines() if line.startswith("| ") and not re.fullmatch(r"[-| ]+", line)):
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[0] and cells[0] != "subpackage":
            area = cells[0].strip("`/")
        folder = "core" if area == "(root)" else f"core/{area}"
        named |= {f"{folder}/{name}" for name in re.findall(r"`(\w+\.py)`", cells[1])}
    on_disk = {str(p.relative_to(REPO)) for p in (REPO / "core").rglob("*.py") if p.name != "__init__.py"}
    assert sorted(on_disk - named) == [], "core modules the architecture table does not name"
    assert sorted(named - on_disk) == [], "modules the architecture table names that do not exist"
    modules = set(all_modules())
    for dotted in set(re.findall(r"`((?:core|console|emulator|enclave_app)(?:\.\w+)+)", text)) - {"console.py"}:
        parts = dotted.split(".")
        assert any(".".join(parts[:n]) in modules for n in range(len(parts), 1, -1)), f"{dotted} is not in the tree"
    for path in set(re.findall(r"`((?:core|console|emulator|enclave_app|tests)/[\w/]+\.py)", text)):
        assert (REPO / path).is_file(), f"{path} is not in the tree"
    path = text[text.index("\n## The path of a request"):]
    assert all(step in path for step in ("console/commands.py", "core.ops.testsign", "core.attest.verify")), \
        "the request-path paragraph is missing"
