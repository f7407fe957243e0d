"""The service kit: everything a technique service needs that is not science.

A technique subclasses :class:`Technique`; :func:`run` runs one job of it in-process
(no gRPC), :func:`serve` runs it as a gRPC service. A shardable technique follows the
shard contract (``Part``, ``units``, ``reduce_block``, ``combine``, ``write``; see
docs/techniques.md "Sharding"); :mod:`panreduce.kit.parts` stores the parts.
"""

from typing import Any

from panreduce.kit.technique import Context, Inputs, OutputSpec, Parameters, Shard, StagedFile, StagedInput, Technique

__all__ = [
    "Context",
    "Inputs",
    "Output",
    "OutputSpec",
    "Parameters",
    "Result",
    "Shard",
    "StagedFile",
    "StagedInput",
    "Technique",
    "load_part",
    "make_request",
    "run",
    "run_split",
    "save_part",
    "serve",
]


def serve(technique: type[Technique[Any, Any]] | Technique[Any, Any], **kwargs: Any) -> None:
    """Run ``technique`` as a gRPC service until SIGTERM/SIGINT (see kit.server.serve)."""
    from panreduce.kit.server import serve as _serve

    _serve(technique, **kwargs)


# panreduce.storage imports kit.technique, and kit.runner imports storage: the job runner
# and the part store load on first use.
_LAZY = {
    "run": "panreduce.kit.runner",
    "run_split": "panreduce.kit.runner",
    "Result": "panreduce.kit.runner",
    "Output": "panreduce.kit.runner",
    "make_request": "panreduce.kit.runner",
    "load_part": "panreduce.kit.parts",
    "save_part": "panreduce.kit.parts",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'panreduce.kit' has no attribute {name!r}")
