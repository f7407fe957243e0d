"""The toy technique's example for the contract suite."""

import numpy as np


def example(dataset, tmp_path):
    path = tmp_path / "values.npy"
    np.save(path, np.arange(12.0))
    return {"inputs": [str(path)], "params": {"steps": 20, "step_seconds": 0.02}}
