"""The architecture's import rules (see DESIGN.md), checked on the source.

Plugins, built-in ones included, import only the public API (``sfumato``, and
``sfumato.testing`` in tests) and never another plugin; the core never imports
a plugin; importing ``sfumato`` never imports torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = {"sfumato", "sfumato.testing"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports (top level, in functions, and under TYPE_CHECKING), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for item in ast.walk(tree):
        if isinstance(item, ast.Import):
            found.extend((item.lineno, alias.name) for alias in item.names)
        elif isinstance(item, ast.ImportFrom) and item.level == 0 and item.module:
            found.append((item.lineno, item.module))
            found.extend((item.lineno, f"{item.module}.{alias.name}") for alias in item.names
                         if item.module == "sfumato" and alias.name != "*")
    return found


def plugin_files() -> list[tuple[str, Path]]:
    roots = [*(ROOT / "plugins").glob("sfumato_*"), ROOT / "examples" / "plugin-template" / "src" / "sfumato_vignette"]
    return [(root.name, path) for root in roots for path in sorted(root.rglob("*.py"))]


def test_plugins_import_only_the_public_api():
    private = []
    for _, path in plugin_files():
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top == "sfumato" and module not in PUBLIC_MODULES and not _is_public_name(module):
                private.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not private, "plugins reach past the public API:\n" + "\n".join(private)


def _is_public_name(module: str) -> bool:
    """``from sfumato import X`` is recorded as ``sfumato.X``: fine when X is in ``__all__``."""
    import sfumato

    parent, _, name = module.rpartition(".")
    return parent == "sfumato" and name in sfumato.__all__


def test_no_plugin_imports_another_plugin():
    crossing = []
    for plugin, path in plugin_files():
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top.startswith("sfumato_") and top != plugin:
                crossing.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not crossing, "plugins importing other plugins:\n" + "\n".join(crossing)


def test_core_never_imports_a_plugin():
    found = [f"{path.relative_to(ROOT)}:{line}: {module}"
             for path in sorted((ROOT / "core" / "sfumato").rglob("*.py"))
             for line, module in imported_modules(path) if module.split(".")[0].startswith("sfumato_")]
    assert not found, "core imports plugins:\n" + "\n".join(found)


def test_importing_sfumato_does_not_import_torch():
    code = "import sys, sfumato; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_public_api_all_is_sorted_and_importable():
    import sfumato

    names = [name for name in sfumato.__all__ if not name.startswith("__")]
    assert names == sorted(names, key=str.lower)
    missing = [name for name in sfumato.__all__ if not hasattr(sfumato, name)]
    assert not missing


def core_import_graph() -> "dict[str, set[str]]":
    """Module -> the core modules it imports at run time (imports under TYPE_CHECKING excluded)."""
    core = ROOT / "core" / "sfumato"
    graph: dict[str, set[str]] = {}
    for path in sorted(core.rglob("*.py")):
        parts = list(path.relative_to(core.parent).with_suffix("").parts)
        package = parts[:-1] if parts[-1] != "__init__" else parts
        module = ".".join(parts if parts[-1] != "__init__" else parts[:-1])
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = {id(node) for item in ast.walk(tree) if isinstance(item, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(item.test) for node in ast.walk(item)}
        targets: set[str] = set()
        for item in ast.walk(tree):
            if id(item) in skipped or not isinstance(item, ast.ImportFrom) or item.level == 0:
                continue
            base = package[: len(package) - (item.level - 1)]
            target = ".".join(base + (item.module.split(".") if item.module else []))
            targets.add(target)
        graph[module] = targets
    return graph


def test_core_modules_import_without_cycles():
    import networkx as nx

    graph = core_import_graph()
    dag = nx.DiGraph((source, target) for source, targets in graph.items() for target in targets
                     if target in graph and target != "sfumato" and source != "sfumato")
    cycles = list(nx.simple_cycles(dag))
    assert not cycles, f"import cycles in core: {cycles}"


def test_core_layers_import_one_way():
    """cli -> run -> (graph, store) -> plugin -> errors; the registry sits between run and store/plugin."""
    layer = {"cli": 5, "run": 4, "testing": 6, "registry": 3, "graph": 2, "store": 2, "plugin": 1, "errors": 0}
    wrong = []
    for source, targets in core_import_graph().items():
        parts = source.split(".")
        if len(parts) < 2:
            continue
        for target in targets:
            target_parts = target.split(".")
            if len(target_parts) < 2 or target_parts[1] == parts[1]:
                continue
            if layer[target_parts[1]] >= layer[parts[1]] and not (
                    {parts[1], target_parts[1]} == {"graph", "store"}):
                wrong.append(f"{source} -> {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))
