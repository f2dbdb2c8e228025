"""The plugin reference (docs/plugins.md) is executable: its Python blocks run, in order, as one module."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_plugin_reference_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("sfumato_docs_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 10
    for number, block in enumerate(blocks, 1):
        code = compile(block, f"{DOC.name}[python block {number}]", "exec")
        exec(code, module.__dict__)  # noqa: S102 - the project's own documentation


def test_plugin_reference_covers_every_hook():
    import sfumato

    text = DOC.read_text(encoding="utf-8")
    hooks = [name for name in dir(sfumato.default_registry().manager.hook) if name.startswith("sfumato_")]
    assert hooks
    missing = [hook for hook in hooks if f"`{hook}`" not in text]
    assert not missing, f"docs/plugins.md has no section for {missing}"
