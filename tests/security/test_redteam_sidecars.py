"""Red team (issue 12): inputs that name other files by their CONTENT, read by libraries
other than h5py's walk — an OME-TIFF's other planes (tifffile follows its FileName, absolute
or relative), an EDF's EDF_BinaryFileName (fabio, also .edf.gz/.bz2), an HDF5 detector
master disguised by its suffix (fabio opens it by its signature and follows the external
link), a 4-D NeXus signal that is an external link (stem4d opens HDF5 with h5py itself),
a Merlin .mib's .hdr beside it. Before the kit checked every staged input's references
(locations.check_file_references) each of these read B's data through saxs or stem4d.

Real saxs and stem4d services behind a real gateway with a tokens file for propA and propB
and ``--allowed-prefix DATA/{proposal}/``, on loopback."""

from __future__ import annotations

import bz2
import gzip
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from locations_support import two_proposal_access
from redteam_files import B_VALUE, attacks, edf, ome_xml

from panreduce import errors, locations
from panreduce.client import Client
from panreduce.kit.server import start_technique
from panreduce.serving import start_server
from panreduce.storage import Stores
from panreduce_gateway.gateway import GatewayConfig, GatewayService
from panreduce_saxs.technique import Technique as Saxs
from panreduce_serial_crystallography.technique import Technique as Serial
from panreduce_stem4d.technique import Technique as Stem4d

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stem4d"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serial_crystallography"))
from stem4d_helpers import write_mib
from sx_synthetic import GEOM, render, spots, write_stack

SHAPE = (24, 28)
SAXS = {
    "geometry.distance_mm": 1000.0,
    "geometry.wavelength_angstrom": 1.0,
    "geometry.beam_center_px": [14.3, 12.6],
    "geometry.pixel_um": 172.0,
    "masks.beamstop": "none",
    "integration.q_bins": 8,
}
STEM = {"calibration": {"mrad_per_px": 0.5}}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("redteam-sidecars")
    data = root / "data"
    (data / "propA").mkdir(parents=True)
    (data / "propB").mkdir(parents=True)
    access = two_proposal_access(root, data)
    stores = Stores(root / "store")
    saxs = start_technique(Saxs, stores=stores)
    stem = start_technique(Stem4d, stores=stores)
    sx = start_technique(Serial, stores=stores)
    gateway = GatewayService(
        {"saxs": saxs.address, "stem4d": stem.address, "serial_crystallography": sx.address},
        stores=stores,
        config=GatewayConfig(access=access),
    )
    gw = start_server(gateway, name="gateway", manager=gateway.manager)
    gw.set_serving(True)
    a = Client(gw.address, token="token-a", timeout=60)
    try:
        yield data, a
    finally:
        a.close()
        gw.drain_and_stop(2)
        gateway.close()
        saxs.drain_and_stop(2)
        stem.drain_and_stop(2)
        sx.drain_and_stop(2)


def denied(call) -> errors.PanReduceError:
    """The attack is PERMISSION_DENIED (not INVALID_ARGUMENT: a reader that merely choked
    on B's file would pass a looser check), and nothing of B's is echoed."""
    with pytest.raises(errors.PanReduceError) as info:
        call()
    exc = info.value
    assert exc.code.name == "PERMISSION_DENIED", f"{exc.code}: {exc}"
    assert "not followed" in str(exc) and str(B_VALUE) not in f"{exc} {exc.metadata}"
    return exc


def _image() -> np.ndarray:
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return (100.0 / (1.0 + ((yy - 12.6) ** 2 + (xx - 14.3) ** 2) / 20.0)).astype(np.float32)


def test_saxs_never_reads_b_through_tiff_edf_or_a_disguised_hdf5(site):
    data, a = site
    files = attacks(data / "propA", data / "propB", _image())
    plain = (data / "propA" / "frame.edf").read_bytes()
    (data / "propA" / "frame_gz.edf.gz").write_bytes(gzip.compress(plain))
    (data / "propA" / "frame_bz.edf.bz2").write_bytes(bz2.compress(plain))
    files["edf.gz binary file"] = data / "propA" / "frame_gz.edf.gz"
    files["edf.bz2 binary file"] = data / "propA" / "frame_bz.edf.bz2"
    for kind, path in files.items():
        exc = denied(lambda path=path: a.reduce("saxs", [str(path)], SAXS))
        assert path.name in str(exc), kind
        if "edf" not in kind:  # (an EDF's sibling link does not travel with an upload)
            up = a.upload(path)  # the same file as an upload: judged from the upload's own folder
            denied(lambda up=up: a.reduce("saxs", [up.uri], SAXS))


def test_saxs_still_reads_what_stays_in_the_callers_folder(site):
    data, a = site
    own = data / "propA" / "own"
    own.mkdir()
    img = _image()
    tifffile.imwrite(
        own / "two.ome.tif", img[None], description=ome_xml("two.ome.tif", "one.ome.tif", SHAPE), metadata=None
    )
    tifffile.imwrite(own / "one.ome.tif", img[None], metadata={"axes": "ZYX"})
    done = a.reduce("saxs", [str(own / "two.ome.tif")], SAXS)
    assert done.summary["frames"] == 2  # the second plane from A's own sibling file
    img.tofile(own / "raw.bin")
    assert a.reduce("saxs", [str(edf(own / "f.edf", SHAPE, "raw.bin"))], SAXS).summary["frames"] == 1


def _nexus_4d(path: Path, link: h5py.ExternalLink | np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        nxdata = entry.create_group("data")
        nxdata.attrs["NX_class"] = "NXdata"
        nxdata.attrs["signal"] = "data"
        nxdata["data"] = link
    return path


def test_stem4d_never_opens_an_external_signal_or_header_of_b(site):
    data, a = site
    scan = np.full((4, 4, 8, 8), 3.0, np.float32)
    scan[..., 3, 3] = B_VALUE
    with h5py.File(data / "propB" / "scan.h5", "w") as f:
        f["d"] = scan
    evil = _nexus_4d(data / "propA" / "scan4d.nxs", h5py.ExternalLink(str(data / "propB" / "scan.h5"), "/d"))
    denied(lambda: a.reduce("stem4d", [str(evil)], STEM))
    # a .mib alone: the service reads the .hdr beside it, here a link to B's
    frames = np.ones((16, 8, 8), np.uint16)
    frames[:, 3, 3] = 200
    write_mib(data / "propA" / "run.mib", frames)
    (data / "propB" / "run.hdr").write_text("Frames per Trigger (Number):\t2\n")
    os.symlink(data / "propB" / "run.hdr", data / "propA" / "run.hdr")
    denied(lambda: a.reduce("stem4d", [str(data / "propA" / "run.mib")], STEM))
    # A's own: the signal linked to A's file beside it, the .mib with A's own .hdr
    with h5py.File(data / "propA" / "frames.h5", "w") as f:
        f["d"] = np.where(scan == B_VALUE, 50.0, scan)
    mine = _nexus_4d(data / "propA" / "mine4d.nxs", h5py.ExternalLink("frames.h5", "/d"))
    assert a.reduce("stem4d", [str(mine)], STEM).summary["frames"] == 16
    os.remove(data / "propA" / "run.hdr")
    (data / "propA" / "run.hdr").write_text("Frames per Trigger (Number):\t4\n")
    assert a.reduce("stem4d", [str(data / "propA" / "run.mib")], STEM).summary["frames"] == 16


SX = {"threshold": 60, "min_snr": 5, "min_pix_count": 2, "max_pix_count": 30, "local_bg_radius": 3, "min_peaks": 10}


def _with_user_block(path: Path, target: Path) -> Path:
    """An HDF5 file whose first 512 bytes (a user block) read as an EDF header: its
    signature is not at offset 0, yet h5py opens it and follows its external link."""
    with h5py.File(path, "w", userblock_size=512) as f:
        f["entry_1/data_1/data"] = h5py.ExternalLink(str(target), "/entry_1/data_1/data")
    raw = path.read_bytes()
    path.write_bytes(b"{ not an EDF header }".ljust(512, b" ") + raw[512:])
    assert h5py.is_hdf5(path) and not raw.startswith(b"\x89HDF")
    return path


def test_serial_crystallography_never_reads_b_through_an_hdf5_with_a_user_block(site):
    data, a = site
    rng = np.random.default_rng(1)
    frames = np.array([render(c, rng.uniform(200, 1500, len(c)), rng=rng) for c in [spots(rng, 20) for _ in range(5)]])
    write_stack(data / "propB" / "b.cxi", frames)
    (data / "propA" / "det.geom").write_text(GEOM)
    evil = _with_user_block(data / "propA" / "ub.cxi", data / "propB" / "b.cxi")
    denied(lambda: a.reduce("serial_crystallography", [str(evil), str(data / "propA" / "det.geom")], SX))
    write_stack(data / "propA" / "own.cxi", frames)  # the same, linked to A's own stack
    mine = _with_user_block(data / "propA" / "ub-own.cxi", data / "propA" / "own.cxi")
    done = a.reduce("serial_crystallography", [str(mine), str(data / "propA" / "det.geom")], SX)
    assert done.summary["n_frames"] == 5


def test_the_check_is_by_content_not_by_suffix(tmp_path):
    """The one check, without servers: each attack refused whatever its name; a TIFF, an
    EDF or an HDF5 file that names nothing passes; a damaged one is its reader's to report."""
    a, b = tmp_path / "propA", tmp_path / "propB"
    for kind, path in attacks(a, b, _image()).items():
        renamed = path.with_name(f"renamed-{path.stem}.dat")
        os.link(path, renamed)
        for p in (path, renamed):
            with pytest.raises(errors.PermissionDenied, match="not followed"):
                locations.check_file_references(p, [a])
        del kind
    b.joinpath("x.cxi").write_bytes(b"")
    with pytest.raises(errors.PermissionDenied, match="not followed"):
        locations.check_file_references(_with_user_block(a / "ub.tif", b / "x.cxi"), [a])
    tifffile.imwrite(a / "plain.tif", _image())
    (a / "damaged.tif").write_bytes(b"II*\x00" + b"\xff" * 20)
    with h5py.File(a / "plain.h5", "w") as f:
        f["x"] = 1
    for name in ("plain.tif", "damaged.tif", "plain.h5"):
        locations.check_file_references(a / name, [a])
