"""The thz technique's example for the contract suite: a small simulated TELBE run."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from thz_sim import make_run


def example(dataset, tmp_path):
    run = make_run(tmp_path, pulses=200, step_ps=0.3, span_ps=3.0)
    return {"inputs": [str(run.folder) + "/"], "params": {"pixel_to_ps": 0.0115, "bin_ps": 0.05}}
