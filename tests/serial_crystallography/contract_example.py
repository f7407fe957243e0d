"""The serial crystallography example for the contract suite: the four real CSPAD hits."""


def example(dataset, tmp_path):
    cxi = dataset("sfx-thermolysin-cspad/thermolysin_cspad_4hits.cxi")
    geom = dataset("sfx-thermolysin-cspad/thermolysin_cspad_derived.geom")
    return {
        "inputs": [str(cxi), str(geom)],
        "params": {
            "geometry": geom.name,
            "threshold": 200,
            "min_snr": 6,
            "min_pix_count": 2,
            "max_pix_count": 30,
            "local_bg_radius": 3,
            "min_peaks": 10,
        },
    }
