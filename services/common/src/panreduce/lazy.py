"""Modules imported on first use.

A technique's declaration (its name, parameter model and ``accepts``) is imported by
every command — ``panreduce techniques``, a parameter check, a refusal — and the
science libraries behind its reduction (scipy, matplotlib, scikit-image, tifffile)
take seconds to import on a loaded machine. A science module binds such a library
with :func:`module` instead of ``import``; the library is imported when the first
attribute is read, that is when the reduction first calls into it::

    from typing import TYPE_CHECKING

    from panreduce import lazy

    if TYPE_CHECKING:  # type checkers see the real module
        from scipy import ndimage
    else:
        ndimage = lazy.module("scipy.ndimage")

tests/kit/test_declarations_light.py checks, in a fresh interpreter, that importing
each installed technique's declaration loads none of these libraries.
"""

from __future__ import annotations

import importlib
import threading
import types
from collections.abc import Callable
from typing import Any

__all__ = ["module"]

_lock = threading.Lock()


class _LazyModule(types.ModuleType):
    """Stands in for a module until an attribute is read, then forwards to it."""

    def __init__(self, name: str, submodules: tuple[str, ...], on_load: Callable[[types.ModuleType], None] | None):
        super().__init__(name)
        self.__dict__["_lazy_spec"] = (submodules, on_load)
        self.__dict__["_lazy_module"] = None

    def _lazy_load(self) -> types.ModuleType:
        mod: types.ModuleType | None = self.__dict__["_lazy_module"]
        if mod is None:
            with _lock:
                mod = self.__dict__["_lazy_module"]
                if mod is None:
                    submodules, on_load = self.__dict__["_lazy_spec"]
                    mod = importlib.import_module(self.__name__)
                    if on_load is not None:
                        on_load(mod)
                    for sub in submodules:
                        importlib.import_module(f"{self.__name__}.{sub}")
                    self.__dict__["_lazy_module"] = mod
        return mod

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return getattr(self._lazy_load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._lazy_load())

    def __repr__(self) -> str:
        state = "loaded" if self.__dict__["_lazy_module"] is not None else "not loaded yet"
        return f"<lazy module {self.__name__!r} ({state})>"


def module(name: str, *submodules: str, on_load: Callable[[types.ModuleType], None] | None = None) -> Any:
    """A stand-in for ``import name`` that imports ``name`` (then ``name.<each
    submodule>``, as ``import scipy.fft`` would) when an attribute is first read.
    ``on_load`` runs once, right after ``name`` is imported (``matplotlib.use("Agg")``)."""
    return _LazyModule(name, tuple(submodules), on_load)
