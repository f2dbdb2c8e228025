"""Optional dependencies of plugins: declared, checked without importing, named when missing.

A plugin whose feature needs a package that is not installed by default says so
from its ``sfumato_requirements`` hook::

    @sfumato.hookimpl
    def sfumato_requirements():
        return [sfumato.Requirement("faiss", extra="faiss", feature="the faiss search backend")]

The registry checks each one with :func:`importlib.util.find_spec`, which finds
a module without importing it (so no slow or failing import happens just to
list plugins). ``sfumato plugins`` then lists the plugin as "needs extra faiss"
with the ``pip install`` line, and using the feature raises
:class:`MissingExtraError` with that line instead of a traceback.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from ..errors import SfumatoError


class MissingExtraError(SfumatoError, ImportError):
    """A feature needs an optional dependency that is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Requirement:
    """An optional dependency of a plugin.

    Attributes:
        module: the top-level module the feature imports (``"faiss"``).
        extra: the distribution's extra that installs it (``"faiss"`` for ``sfumato[faiss]``).
        feature: what needs it, for messages (``"the faiss search backend"``).
        distribution: the distribution that declares ``extra``; empty means the
            distribution the plugin was installed from (``sfumato`` for the built-in ones).
    """

    module: str
    extra: str
    feature: str = ""
    distribution: str = ""

    @property
    def install(self) -> str:
        """The command that installs the missing package."""
        return f"pip install '{self.distribution or 'sfumato'}[{self.extra}]'"

    def is_installed(self) -> bool:
        """Whether ``module`` can be imported; never imports it."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a broken module spec
            return False

    def message(self, plugin: str = "") -> str:
        """What is missing and the line that fixes it."""
        what = self.feature or (f"plugin {plugin!r}" if plugin else "this feature")
        return f"{what} needs the Python package {self.module!r}, which is not installed: {self.install}"

    def error(self, plugin: str = "") -> MissingExtraError:
        """The error to raise when the feature is used without its package."""
        error = MissingExtraError(self.message(plugin))
        error.name = self.module
        return error

    def matches(self, error: BaseException) -> bool:
        """Whether ``error`` is the import of this requirement's module (or a submodule) failing."""
        name = getattr(error, "name", None) or ""
        return isinstance(error, ImportError) and (name == self.module or name.startswith(self.module + "."))
