"""Small synthetic ISIS raw NeXus files (histogram or event mode) for the sans tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def write_raw(
    path: Path,
    *,
    run_number: int,
    counts: np.ndarray,  # (nspec, ntof), or (nperiod, nspec, ntof) for a multi-period run
    spectra: np.ndarray,
    tof: np.ndarray,  # (ntof+1,)
    monitors: dict[int, np.ndarray],  # spectrum -> (ntof,) or (nperiod, ntof)
    title: str = "synthetic",
    sample: tuple[float, float, float, str] = (2.0, 8.0, 8.0, "Disc"),
    events: tuple[np.ndarray, np.ndarray] | None = None,  # (event_id, event_time_offset)
) -> Path:
    with h5py.File(path, "w") as f:
        e = f.create_group("raw_data_1")
        e.attrs["NX_class"] = "NXentry"
        if events is None:
            d = e.create_group("detector_1")
            c = np.asarray(counts, dtype=np.int32)
            d.create_dataset("counts", data=c if c.ndim == 3 else c[None])
            d.create_dataset("spectrum_index", data=np.asarray(spectra, dtype=np.int32))
            d.create_dataset("time_of_flight", data=np.asarray(tof, dtype=np.float32))
        else:
            ev = e.create_group("detector_1_events")
            ev.attrs["NX_class"] = "NXevent_data"
            ev.create_dataset("event_id", data=events[0].astype(np.int32))
            ev.create_dataset("event_time_offset", data=events[1].astype(np.float32))
        for k, (spec, m) in enumerate(sorted(monitors.items()), start=1):
            g = e.create_group(f"monitor_{k}")
            g.attrs["NX_class"] = "NXmonitor"
            m = np.asarray(m, dtype=np.int32)
            g.create_dataset("data", data=m[:, None] if m.ndim == 2 else m[None, None])
            g.create_dataset("spectrum_index", data=np.array([spec], dtype=np.int32))
            g.create_dataset("time_of_flight", data=np.asarray(tof, dtype=np.float32))
        e.create_dataset("run_number", data=np.array([run_number], dtype=np.int32))
        e.create_dataset("title", data=np.array([title.encode()]))
        e.create_dataset("name", data=np.array([b"LOQ"]))
        e.create_dataset("start_time", data=np.array([b"2013-02-21T23:00:51"]))
        e.create_dataset("proton_charge", data=np.array([10.0], dtype=np.float32))
        e.create_dataset("good_frames", data=np.array([1000], dtype=np.int32))
        s = e.create_group("sample")
        t, w, h, shape = sample
        s.create_dataset("thickness", data=np.array([t], dtype=np.float32))
        s.create_dataset("width", data=np.array([w], dtype=np.float32))
        s.create_dataset("height", data=np.array([h], dtype=np.float32))
        s.create_dataset("shape", data=np.array([shape.encode()]))
    return path
