"""The stem4d technique's example for the contract suite: a small synthetic NeXus 4-D scan."""

from panreduce_stem4d.synthetic import make_scan, write_nexus


def example(dataset, tmp_path):
    sim = make_scan(6, 8, 32, disc_radius_px=3, ring_radius_px=10, shift_amplitude_px=1.0)
    path = tmp_path / "scan.nxs"
    write_nexus(path, sim.frames, step_nm=0.5, energy_kev=200.0)
    return {
        "inputs": [str(path)],
        "params": {"mrad_per_px": 0.5, "bf_mrad": 2.5, "adf_mrad": [3.5, 7.5], "energy_kev": 200.0},
    }
