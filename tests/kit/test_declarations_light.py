"""A technique's declaration (name, parameter model, `accepts`) is imported by every
command, even one that only lists techniques or refuses a typo: importing it must not
load the science stack (plots, fitting, pyFAI, torch), which costs seconds (issue 14).
Each check runs in a fresh interpreter and reads its sys.modules: it fails when a module
of the declaration's import chain imports one of these libraries at its top level."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from panreduce import registry

HEAVY = ("matplotlib", "scipy", "pyFAI", "torch", "skimage", "tifffile", "PIL", "numba", "cupy")

PROBE = """
import json, sys
from panreduce import registry
cls = registry.load(sys.argv[1])
cls.parameters_schema()
try:
    cls.validate_parameters({"no_such_parameter": 1})  # the typo path: refused from the model alone
except Exception as exc:
    assert type(exc).__name__ == "InvalidParameters", exc
heavy = json.loads(sys.argv[2])
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(heavy))))
"""


def _loaded(technique: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, technique, json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("technique", registry.names())
def test_declaration_loads_no_science_stack(technique: str) -> None:
    assert _loaded(technique) == [], f"importing the {technique} declaration loads the science stack"


def test_the_probe_sees_a_heavy_import() -> None:
    """The check can fail: a probe that imports scipy is caught."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; import scipy.ndimage; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'scipy'})))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout) == ["scipy"]


def test_lazy_module_imports_on_first_use() -> None:
    code = (
        "import sys; from panreduce import lazy; nd = lazy.module('scipy.ndimage'); "
        "a = 'scipy' in sys.modules; import numpy as np; "
        "r = nd.gaussian_filter(np.ones((4, 4)), 1.0).sum(); print(a, 'scipy.ndimage' in sys.modules, round(r, 6))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "True", "16.0"]
