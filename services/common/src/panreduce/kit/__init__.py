"""The service kit: everything a technique service needs that is not science.

A technique subclasses :class:`Technique`; :func:`serve` runs it as a gRPC service.
"""

from panreduce.kit.technique import (
    Context,
    EmptyShard,
    Inputs,
    OutputSpec,
    Parameters,
    Shard,
    StagedFile,
    StagedInput,
    Technique,
)

__all__ = [
    "Context",
    "EmptyShard",
    "Inputs",
    "OutputSpec",
    "Parameters",
    "Shard",
    "StagedFile",
    "StagedInput",
    "Technique",
    "serve",
]


def serve(technique: type[Technique] | Technique, **kwargs):  # noqa: ANN201
    """Run ``technique`` as a gRPC service until SIGTERM/SIGINT (see kit.server.serve)."""
    from panreduce.kit.server import serve as _serve

    return _serve(technique, **kwargs)
