"""Which techniques are installed: the ``panreduce.techniques`` entry points.

Each technique member registers ``NAME = "package.technique:Technique"``; an image
installs one member, the development environment all of them.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from panreduce import errors

if TYPE_CHECKING:
    from panreduce.kit.technique import Technique

GROUP = "panreduce.techniques"


def names() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def load(name: str) -> type[Technique[Any, Any]]:
    """The Technique class registered as ``name``."""
    from panreduce.kit.technique import Technique

    for ep in entry_points(group=GROUP):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Technique)):
                raise TypeError(f"entry point {ep.value} is not a panreduce.kit.Technique subclass")
            if cls.name != name:
                raise TypeError(f"entry point {name!r} loads technique named {cls.name!r}")
            return cls
    raise errors.UnknownTechnique(name, names())
