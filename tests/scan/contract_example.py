"""The scan technique's example for the contract suite: two real I16 rocking curves."""


def example(dataset, tmp_path):
    files = [dataset("i16-scans/794932.nxs"), dataset("i16-scans/794933.nxs")]
    return {"inputs": [str(p) for p in files], "params": {"model": "pseudo_voigt"}}
