"""The sans technique's example for the contract suite: one batch row of single runs
(sample 75884, can 75881, their transmissions against direct run 75869) on the real LOQ data."""

RUNS = (75884, 75876, 75869, 75881, 75873)  # sample first: the contract damages the first input
MANTID = ("USER_LOQ_125B.txt", "DIRECT_LOQ_MAIN_124.txt", "FLAT_CELL_LOQ_MAIN_115.txt")
BATCH_ROW = (
    "sample_sans,75884,sample_trans,75876,sample_direct_beam,75869,"
    "can_sans,75881,can_trans,75873,can_direct_beam,75869,output_as,GFP_1mgml_single\n"
)


def example(dataset, tmp_path):
    inputs = [str(dataset(f"loq-gfp/raw/LOQ{run}.nxs")) for run in RUNS]
    inputs += [str(dataset(f"loq-gfp/mantid-files/{name}")) for name in MANTID]
    batch = tmp_path / "one-row.csv"
    batch.write_text(BATCH_ROW)
    inputs.append(str(batch))
    return {"inputs": inputs, "params": {"user_file": "USER_LOQ_125B.txt", "batch_file": "one-row.csv", "plots": False}}
