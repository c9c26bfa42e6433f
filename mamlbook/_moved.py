"""Old module paths from before the package was split into layers, kept working with a warning.

`import mamlbook.runconfig` (or `mamlbook.runconfig` as an attribute) still gives the module, now
`mamlbook.train.runconfig`, and says so once with a `DeprecationWarning` naming the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED: dict[str, str] = {
    "mamlbook.algorithms": "mamlbook.train.algorithms",
    "mamlbook.baseline": "mamlbook.train.baseline",
    "mamlbook.checkpoint": "mamlbook.train.checkpoint",
    "mamlbook.evaluate": "mamlbook.train.evaluate",
    "mamlbook.plots": "mamlbook.train.plots",
    "mamlbook.presets": "mamlbook.train.presets",
    "mamlbook.restore": "mamlbook.train.restore",
    "mamlbook.runconfig": "mamlbook.train.runconfig",
    "mamlbook.report": "mamlbook.reports.run",
    "mamlbook.lake": "mamlbook.reports.lake",
    "mamlbook.benchplots": "mamlbook.bench.plots",
    "mamlbook.peers": "mamlbook.bench.peers",
    "mamlbook.study": "mamlbook.studies",
    "mamlbook.better_study": "mamlbook.studies.better",
    "mamlbook.better_omniglot": "mamlbook.studies.better_omniglot",
    "mamlbook.commands": "mamlbook.cli",
    "mamlbook.commands.args": "mamlbook.cli.args",
    "mamlbook.commands.bench": "mamlbook.cli.bench",
    "mamlbook.commands.data": "mamlbook.cli.data",
    "mamlbook.commands.evaluate": "mamlbook.cli.evaluate",
    "mamlbook.commands.study": "mamlbook.cli.study",
    "mamlbook.commands.train": "mamlbook.cli.train",
    "mamlbook.meta.imaml": "mamlbook.engine.imaml",
}


def moved(old: str) -> ModuleType:
    """The module now at `MOVED[old]`, with a warning that names its new path."""
    new = MOVED[old]
    warnings.warn(f"{old} moved to {new}; import it from there", DeprecationWarning, stacklevel=3)
    return importlib.import_module(new)


class _Alias(importlib.abc.Loader):
    def __init__(self, target: ModuleType) -> None:
        self.target = target
        self.spec = target.__spec__

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self.target

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the alias's spec on the real module: give it its own back.
        module.__spec__ = self.spec


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - the MetaPathFinder signature
        if fullname not in MOVED:
            return None
        module = moved(fullname)
        return importlib.machinery.ModuleSpec(fullname, _Alias(module), is_package=hasattr(module, "__path__"))


def install() -> None:
    """Answer imports of the old paths (once per interpreter)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
