"""The tomography technique's example for the contract suite: one slice of the APS
tooth scan (Data Exchange HDF5), gridrec, centre found automatically."""


def example(dataset, tmp_path):
    return {
        "inputs": [str(dataset("tomo/tooth/tooth.h5"))],
        "params": {"slice_start": 0, "slice_stop": 1, "previews": 1, "ring_removal": "sorting"},
    }
