"""The reflectometry technique's example for the contract suite: the three OFFSPEC runs,
reduced with summation in Q as the ISIS script did (monitor-only: no transmission run)."""

RUNS = ("OFFSPEC00046992.nxs", "OFFSPEC00046993.nxs", "OFFSPEC00046994.nxs")


def example(dataset, tmp_path):
    return {
        "inputs": [str(dataset(f"offspec-polymer/raw/{name}")) for name in RUNS],
        "params": {
            "theta_deg": [0.5, 1.5, 2.5],
            "roi": "399-410,390-420,390-420",
            "summation": "q",
            "reduction_type": "non_flat_sample",
            "dq_q": 0.03,
            "plots": False,
        },
    }
