"""Named model sources and the model manager.

The manager loads each model once per process, keyed by source, device and
dtype, and evicts the least recently used ones when a memory budget is
exceeded. Loads and evictions are run events.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ModelNotFoundError
from ..plugin.events import ModelEvicted, ModelLoaded, active_run_id


@dataclass
class ModelSource:
    """A name graphs may use for a model, and where its weights are.

    ``location`` is a path, or a function returning one (so that finding the
    weights, e.g. inside an installed package, happens only when needed).
    ``generator`` is the id of the node that generates images with it
    (``"vae.generate"``): ``generate.image`` dispatches to it, and the
    registry checks at load that some plugin provides it. ``family``
    (``sd``, ``sdxl``, ``flux``...) and ``sha256`` describe library models.
    """

    name: str
    location: Path | Callable[[], Path]
    description: str = ""
    kind: str = ""
    plugin: str = ""
    generator: str = ""
    family: str = ""
    sha256: str = ""

    def path(self) -> Path:
        return Path(self.location() if callable(self.location) else self.location)


def module_bytes(model: Any) -> int:
    """Bytes held by a model's parameters and buffers (torch modules, pipelines)."""
    seen: set[int] = set()
    total = 0

    def visit(obj: Any, depth: int) -> None:
        nonlocal total
        if depth > 2 or id(obj) in seen:
            return
        seen.add(id(obj))
        if hasattr(obj, "parameters") and hasattr(obj, "buffers"):
            for tensor in (*obj.parameters(), *obj.buffers()):
                total += tensor.numel() * tensor.element_size()
            return
        children = getattr(obj, "components", None)
        if isinstance(children, dict):
            for child in children.values():
                visit(child, depth + 1)
        elif hasattr(obj, "__dict__"):
            for child in vars(obj).values():
                if hasattr(child, "parameters"):
                    visit(child, depth + 1)

    visit(model, 0)
    return total


#: Loads remembered per thread for :meth:`ModelManager.seconds_without_loads` (a node loads a few at most).
_LOADS_KEPT = 32
#: Runs whose resolved models are remembered for :meth:`ModelManager.used_by` (a sweep's runs, a server's jobs).
_RUNS_KEPT = 4096


@dataclass
class _Entry:
    model: Any
    bytes: int
    device: str
    #: Moved to the CPU to free GPU memory; moved back on its next use.
    offloaded: bool = False

    @property
    def placed_on(self) -> str:
        """The device kind whose budget the entry counts against now."""
        return "cpu" if self.offloaded else self.device.split(":")[0]


def move_model(model: Any, device: str) -> None:
    """Move a torch module, or an object holding modules (a pipeline, a loaded encoder), to ``device``."""
    if hasattr(model, "parameters") and hasattr(model, "to"):
        model.to(device)
        return
    children = getattr(model, "components", None)
    holders = children.values() if isinstance(children, dict) else vars(model).values() if hasattr(model, "__dict__") else ()
    for child in holders:
        if hasattr(child, "parameters") and hasattr(child, "to"):
            child.to(device)
    if hasattr(model, "device") and not callable(getattr(model, "device")):
        try:
            model.device = device
        except AttributeError:
            pass


@dataclass
class ModelManager:
    """Loads models once and keeps them under a memory budget.

    Attributes:
        sources: named model sources from the plugins.
        max_bytes: per device kind (``cpu``, ``cuda``, ``mps``) budget; ``None`` is unlimited.
        emit: receives ModelLoaded / ModelEvicted events.
        offload_to_cpu: over a GPU budget, move least recently used models to the
            CPU (and back when next used) instead of dropping them.
    """

    sources: dict[str, ModelSource] = field(default_factory=dict)
    max_bytes: dict[str, int] = field(default_factory=dict)
    emit: Callable[[Any], None] = lambda event: None
    offload_to_cpu: bool = True
    #: The engine's :class:`~sfumato.PathPolicy`: a local model folder is a file input like any other.
    path_policy: Any = None
    _entries: "OrderedDict[tuple[str, str, str], _Entry]" = field(default_factory=OrderedDict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    #: Per thread: ``(started, seconds)`` of its recent loads, so node times can leave them out.
    _loads: threading.local = field(default_factory=threading.local)
    #: Run id -> the model names its nodes resolved and where to (see :meth:`used_by`).
    _used: "OrderedDict[str, dict[str, Path | str]]" = field(default_factory=OrderedDict)

    def _note_use(self, name: str, location: Path | str) -> None:
        run_id = active_run_id()
        if not run_id:
            return  # validation, or a script calling the manager outside any run
        with self._lock:
            used = self._used.setdefault(run_id, {})
            self._used.move_to_end(run_id)
            used.setdefault(name, location)
            while len(self._used) > _RUNS_KEPT:
                self._used.popitem(last=False)

    def used_by(self, run_id: str) -> dict[str, Path | str]:
        """The model names the nodes of run ``run_id`` resolved (to load a model), with where each is.

        Every node that loads a model resolves its name through :meth:`resolve`
        first, also when the model is already loaded; so this is what the run
        used, in the order it first used them (a path, or a hub id). Image
        metadata records their hashes from it.
        """
        with self._lock:
            return dict(self._used.get(run_id, {}))

    def _note_load(self, started: float, seconds: float) -> None:
        loads = getattr(self._loads, "items", None)
        if loads is None:
            loads = self._loads.items = []
        loads.append((started, seconds))
        del loads[:-_LOADS_KEPT]

    def seconds_without_loads(self, started: float) -> float:
        """Seconds since ``started`` (a ``time.perf_counter()``), less this thread's model loads since then.

        The engine times nodes with it: a model load is reported as a load
        (a ModelLoaded event, the report's ``models``), not charged to
        whichever node happened to need the model first.
        """
        now = time.perf_counter()
        loads = getattr(self._loads, "items", None)
        if not loads:  # no model loaded on this thread yet: the common case, once per node
            return max(0.0, now - started)
        loading = sum(seconds for begun, seconds in loads if begun >= started)
        return max(0.0, now - started - loading)

    def resolve(self, name_or_path: str) -> Path | str:
        """A model source name or a local folder to a path; a hub id is returned as is.

        Raises :class:`ModelNotFoundError` saying where it looked.
        """
        source = self.sources.get(name_or_path)
        if source is not None:
            path = source.path()
            if not path.exists():
                raise ModelNotFoundError(
                    f"model {name_or_path!r} (from plugin {source.plugin!r}) should be at {path}, which does not exist"
                )
            self._note_use(name_or_path, path)
            return path
        path = Path(name_or_path).expanduser()
        looks_like_hub_id = name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~"))
        if self.path_policy is not None and (not looks_like_hub_id or path.exists()):
            self.path_policy.check(path, "read")  # before exists(): a refused path reveals nothing
        if path.exists():
            self._note_use(name_or_path, path.resolve())
            return path.resolve()
        if looks_like_hub_id:
            self._note_use(name_or_path, name_or_path)
            return name_or_path
        known = ", ".join(sorted(self.sources)) or "none"
        raise ModelNotFoundError(
            f"model {name_or_path!r} not found: it is no registered model name (known: {known}), "
            f"and no folder exists at {path.resolve()}"
        )

    def get(self, key: str, device: str, dtype: str, loader: Callable[[], Any], *,
            preparing_since: float | None = None) -> Any:
        """The model for ``(key, device, dtype)``, loading it with ``loader()`` the first time.

        ``preparing_since`` is a ``time.perf_counter()`` taken before the caller
        found the model and resolved the device (which imports torch the first
        time); when the model loads, that preparation is part of the load time.
        """
        cache_key = (key, device, dtype)
        with self._lock:
            entry = self._entries.get(cache_key)
            if entry is not None:
                self._entries.move_to_end(cache_key)
                if entry.offloaded:
                    started = time.perf_counter()
                    move_model(entry.model, device)
                    entry.offloaded = False
                    seconds = time.perf_counter() - started
                    self._note_load(started, seconds)
                    self.emit(ModelLoaded(active_run_id(), f"{key} [{device}, {dtype}] (back from CPU)", seconds, entry.bytes))
                    self._evict_over_budget(device.split(":")[0], keep=cache_key)
                return entry.model
            started = time.perf_counter() if preparing_since is None else preparing_since
            model = loader()
            size = module_bytes(model)
            seconds = time.perf_counter() - started
            self._note_load(started, seconds)
            self._entries[cache_key] = _Entry(model, size, device)
            self.emit(ModelLoaded(active_run_id(), f"{key} [{device}, {dtype}]", seconds, size))
            self._evict_over_budget(device.split(":")[0], keep=cache_key)
            return model

    def loaded(self) -> list[tuple[str, str, str]]:
        """Keys of the loaded models, least recently used first."""
        with self._lock:
            return list(self._entries)

    def bytes_on(self, device_kind: str) -> int:
        """Bytes of loaded models now placed on ``device_kind`` (offloaded ones count as CPU)."""
        with self._lock:
            return sum(e.bytes for e in self._entries.values() if e.placed_on == device_kind)

    def offloaded(self) -> list[tuple[str, str, str]]:
        """Keys of models moved to the CPU to free GPU memory."""
        with self._lock:
            return [key for key, entry in self._entries.items() if entry.offloaded]

    def release(self, key: str | None = None) -> int:
        """Drop models (all, or those loaded from ``key``); returns how many."""
        with self._lock:
            doomed = [k for k in self._entries if key is None or k[0] == key]
            for cache_key in doomed:
                self._drop(cache_key, "released")
        return len(doomed)

    def _evict_over_budget(self, device_kind: str, keep: tuple[str, str, str]) -> None:
        budget = self.max_bytes.get(device_kind)
        if budget is None:
            return
        for cache_key in list(self._entries):
            if self.bytes_on(device_kind) <= budget:
                break
            entry = self._entries[cache_key]
            if cache_key == keep or entry.placed_on != device_kind:
                continue
            if device_kind != "cpu" and self.offload_to_cpu:
                move_model(entry.model, "cpu")
                entry.offloaded = True
                self.emit(ModelEvicted(active_run_id(), f"{cache_key[0]} [{cache_key[1]}, {cache_key[2]}]",
                                       f"offloaded to CPU: over the {device_kind} memory budget"))
                self._evict_over_budget("cpu", keep=keep)
            else:
                self._drop(cache_key, f"over the {device_kind} memory budget")

    def _drop(self, cache_key: tuple[str, str, str], reason: str) -> None:
        del self._entries[cache_key]
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.emit(ModelEvicted(active_run_id(), f"{cache_key[0]} [{cache_key[1]}, {cache_key[2]}]", reason))
