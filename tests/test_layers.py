"""The architecture as a test: every import in the four packages, read with `ast`, obeys the layers
written in core/__init__.py and docs/architecture.md, and no module imports itself back through others.

Lazy imports inside functions and ``TYPE_CHECKING`` blocks count too: they are dependencies all the same.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "console", "emulator", "enclave_app")

#: core's layers, lowest first; a module may import its own layer and those before it
CORE_LAYERS: list[set[str]] = [
    {"core"},  # the root modules: errors, models, home, checks, files
    {"core.crypto"},
    {"core.channel"},
    {"core.eif", "core.attest", "core.kms"},
    {"core.backends"},
    {"core.ops"},
    {"core.up"},
]
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


def core_layer(module: str) -> int:
    area = ".".join(module.split(".")[:2]) if module.count(".") >= 2 else module
    if area not in {a for layer in CORE_LAYERS for a in layer}:
        area = "core"  # core.errors, core.models, ...: the root
    return next(i for i, layer in enumerate(CORE_LAYERS) if area in layer)


def subpackage(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) >= 3 else parts[0]


def forbidden(importer: str, imported: str) -> str | None:
    """Why this import breaks the architecture, or None."""
    top_from, top_to = importer.split(".")[0], imported.split(".")[0]
    if top_from == "core" and top_to != "core":
        return f"core must not import {top_to} (reach it through core.backends or a caller)"
    if top_from == "core" and core_layer(imported) > core_layer(importer):
        return f"{subpackage(importer)} is below {subpackage(imported)} in core's layers"
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


def test_no_import_cycles() -> None:
    g = graph()
    # a package's __init__ naming its own submodules is not a cycle through them
    edges = {m: {i for i, _ in imps if i != m and not (m + ".").startswith(i + ".")} for m, imps in g.items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checker_sees_violations() -> None:
    # the rules above must be able to fail: a core module importing the emulator, a layer upside down,
    # the payload importing the lifecycle, and a two-module cycle
    assert forbidden("core.ops.resources", "emulator.allocator")
    assert forbidden("core.eif.measure", "core.ops.lifecycle")
    assert forbidden("core.crypto.cose", "core.channel.vsock")
    assert forbidden("enclave_app.kms", "core.ops.provision")
    assert forbidden("console.screens.build", "console.app")
    assert forbidden("core.eif.build", "core.eif.measure") is None
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", ["core.eif.measure", "core.ops.lifecycle", "core.attest.verify"])
def test_core_loads_no_front_end_or_emulator(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('emulator', 'console', 'enclave_app', 'textual'));"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""
