"""The optional per-pulse table of a thz job: delay, signal, arrival pixel and position of every
pulse, streamed to a compressed HDF5 file in the job's work folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np


class PulseTable:
    """The optional per-pulse table, streamed to a compressed HDF5 file in the work folder."""

    COLUMNS = (
        ("delay", "f8", "ps"),
        ("signal", "f4", ""),
        ("arrival_pixel", "f4", "pixel"),
        ("position_index", "i4", ""),
    )

    def __init__(self, work_dir: Path, name: str = "pulses.h5") -> None:
        self.path = work_dir / name
        self.file = h5py.File(self.path, "w")
        for key, dtype, unit in self.COLUMNS:
            d = self.file.create_dataset(
                key,
                (0,),
                dtype=dtype,
                maxshape=(None,),
                chunks=(65536,),
                compression="gzip",
                compression_opts=1,
                shuffle=True,
            )
            d.attrs["units"] = unit

    def append(self, p, index: int) -> None:
        values = {
            "delay": p.delay_ps,
            "signal": p.signal,
            "arrival_pixel": p.arrival_px,
            "position_index": np.full(p.signal.size, index),
        }
        for key, v in values.items():
            d = self.file[key]
            n = d.shape[0]
            d.resize((n + v.size,))
            d[n:] = v

    def read(self) -> dict[str, np.ndarray]:
        """The columns written so far (the file is closed)."""
        self.file.close()
        with h5py.File(self.path, "r") as f:
            return {key: f[key][()] for key, _, _ in self.COLUMNS}

    @classmethod
    def write(cls, work_dir: Path, columns: Mapping[str, np.ndarray]) -> Path:
        """A table file (in ``work_dir``) holding ``columns``; its path."""
        table = cls(work_dir, name="pulses_all.h5")
        for key, _, _ in cls.COLUMNS:
            d = table.file[key]
            d.resize((columns[key].size,))
            d[:] = columns[key]
        table.file.close()
        return table.path
