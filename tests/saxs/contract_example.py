"""The saxs technique's example for the contract suite: the BioCAT frame of the issue."""

BIOCAT_PARAMS = {
    "geometry": {"distance_mm": 1502.7, "wavelength_angstrom": 1.245, "beam_center_px": "487.2,97.0", "pixel_um": 172},
    "normalisation": {"counter": "diode/259139"},
    "absolute": {"factor": 0.00071363632818},
}


def example(dataset, tmp_path):
    return {
        "inputs": [str(dataset("saxs-biocat/GI2_A9_19_001_0000.tiff")), str(dataset("saxs-biocat/GI2_A9_19.spec"))],
        "params": {key: dict(value) for key, value in BIOCAT_PARAMS.items()},
    }
