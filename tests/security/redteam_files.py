"""Files of proposal A that name B's files by their content (not by their location), as
the red-team tests send them: an OME-TIFF naming B's TIFF, an EDF whose binary data lie in
a sibling link to B's raw file, an HDF5 detector master disguised by its suffix (fabio
opens it by its signature and follows the external link), a 4-D NeXus signal that is an
external link, a Merlin .mib whose .hdr next to it is a link to B's.

``attacks(a, b, image)`` writes B's files (every value :data:`B_VALUE`) and A's attack
files, and returns {attack name: A's file}."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

B_VALUE = 7351.0


def ome_xml(own: str, other: str, shape: tuple[int, int]) -> str:
    ny, nx = shape
    u1, u2 = "urn:uuid:11111111-1111-1111-1111-111111111111", "urn:uuid:22222222-2222-2222-2222-222222222222"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" UUID="{u1}">'
        f'<Image ID="Image:0" Name="x"><Pixels DimensionOrder="XYZCT" ID="Pixels:0" SizeC="1" SizeT="1" '
        f'SizeX="{nx}" SizeY="{ny}" SizeZ="2" Type="float">'
        '<Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
        f'<TiffData FirstZ="0" IFD="0" PlaneCount="1"><UUID FileName="{own}">{u1}</UUID></TiffData>'
        f'<TiffData FirstZ="1" IFD="0" PlaneCount="1"><UUID FileName="{other}">{u2}</UUID></TiffData>'
        "</Pixels></Image></OME>"
    )


def edf(path: Path, shape: tuple[int, int], binary_name: str) -> Path:
    ny, nx = shape
    head = (
        "{\nHeaderID = EH:000001:000000:000000 ;\nByteOrder = LowByteFirst ;\nDataType = FloatValue ;\n"
        f"Dim_1 = {nx} ;\nDim_2 = {ny} ;\nSize = {4 * nx * ny} ;\n"
        f"EDF_BinaryFileName = {binary_name} ;\nEDF_BinaryFilePosition = 0 ;\n"
    )
    path.write_bytes((head.ljust(1022) + "}\n").encode())
    return path


def attacks(a: Path, b: Path, image: np.ndarray) -> dict[str, Path]:
    import tifffile

    a.mkdir(parents=True, exist_ok=True)
    b.mkdir(parents=True, exist_ok=True)
    secret = np.full(image.shape, B_VALUE, np.float32)
    tifffile.imwrite(b / "b.ome.tif", secret[None], metadata={"axes": "ZYX"})
    secret.tofile(b / "raw.bin")
    with h5py.File(b / "stack.h5", "w") as f:
        f["frames"] = secret[None]
    out = {}
    for name, other in (("ome-tiff absolute", str(b / "b.ome.tif")), ("ome-tiff relative", "../propB/b.ome.tif")):
        own = f"{name.split()[1]}.ome.tif"
        tifffile.imwrite(
            a / own, image[None].astype(np.float32), description=ome_xml(own, other, image.shape), metadata=None
        )
        out[name] = a / own
    os.symlink(b / "raw.bin", a / "raw.bin")  # a link planted in A's folder
    out["edf binary file"] = edf(a / "frame.edf", image.shape, "raw.bin")
    with h5py.File(a / "master.edf", "w") as f:  # an Eiger master by its content, .edf by its name
        f.create_group("entry/data")["data_000001"] = h5py.ExternalLink(str(b / "stack.h5"), "/frames")
    out["hdf5 named .edf"] = a / "master.edf"
    return out
