"""The ptychography technique's example for the contract suite: a small simulated scan."""

from panreduce_ptychography.io import write_nexus
from panreduce_ptychography.simulate import make_probe, simulate


def example(dataset, tmp_path):
    sim = simulate(frame_size=32, n_positions=30, photons=1e6, seed=3)
    sim.scan.probe = make_probe(32, diameter_px=0.4 * 32 * 1.1, pupil_radius=0.24)
    path = tmp_path / "scan.nxs"
    write_nexus(path, sim.scan)
    return {"inputs": [str(path)], "params": {"iterations": 20, "ml_iterations": 0, "engine": "dm", "device": "cpu"}}
