"""Build hook: generate the gRPC stubs of the PaNReduce contract from proto/.

The stubs are never edited by hand nor committed; every build (editable install,
wheel, container image) makes them from the .proto files. Also runnable as a
script (``python services/common/hatch_build.py``) for ``make proto``.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script, outside a build
    BuildHookInterface = object  # type: ignore[assignment,misc]

HERE = Path(__file__).resolve().parent


def find_proto_root(start: Path) -> Path:
    """The repository's proto/ folder: beside this member or up to two levels above."""
    for base in (start, *start.parents[:3]):
        candidate = base / "proto"
        if (candidate / "panreduce" / "v1").is_dir():
            return candidate
    raise FileNotFoundError(f"no proto/panreduce/v1 folder found from {start}")


def generate(root: Path = HERE) -> list[Path]:
    """Run protoc (from grpcio-tools) and write the stubs into src/panreduce/v1."""
    import grpc_tools
    from grpc_tools import protoc

    proto_root = find_proto_root(root)
    out = root / "src"
    sources = sorted(str(p.relative_to(proto_root)) for p in (proto_root / "panreduce" / "v1").glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    package = out / "panreduce" / "v1"
    (package / "__init__.py").write_text('"""Generated from proto/panreduce/v1 at build time; do not edit."""\n')
    return sorted(package.glob("*.py*"))


class CustomBuildHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    def initialize(self, version: str, build_data: dict) -> None:
        generate(Path(self.root))


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path, file=sys.stderr)
