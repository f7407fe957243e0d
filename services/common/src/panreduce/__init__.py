"""PaNReduce: the Reduce contract, the service kit and the Python client.

``panreduce.v1`` holds the gRPC stubs generated from ``proto/`` at build time.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("panreduce-common")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
