"""The thz technique's example for the contract suite: a small simulated TELBE run
(panreduce_thz.simulate; the same run as tests/thz/thz_sim.make_run with 200 pulses)."""

import numpy as np

from panreduce_thz.simulate import Instrument, Sample, write_run

RUN = "sim_0p7THz_LSCO_2mmZnTe_31K_13.06.2018_0535_02"
STAGE_MM = 50.0  # stage position of the response's centre (mm)


def example(dataset, tmp_path):
    inst = Instrument()
    span_ps, step_ps = 3.0, 0.3
    positions = STAGE_MM + np.arange(-span_ps, span_ps + 1e-9, step_ps) / inst.ps_per_mm
    folder = tmp_path / RUN
    write_run(
        folder,
        positions,
        pulses=200,
        rows_per_image=100,
        sample=Sample(centre_ps=STAGE_MM * inst.ps_per_mm),
        inst=inst,
        seed=3,
    )
    return {"inputs": [str(folder) + "/"], "params": {"pixel_to_ps": 0.0115, "bin_ps": 0.05}}
