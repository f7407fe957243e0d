"""The result views from real HDF5/NeXus files written with panreduce.nexus: curves with
error bars and the technique's scales, decimation that keeps a peak, images downsampled
by block means, volume slices, complex objects as amplitude and phase, 4-D data as a
virtual image, text tables; a file linking outside its folder is refused."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from panreduce import errors, nexus
from panreduce_web import views


def nx_file(path, name, **kw):
    with h5py.File(path, "w") as f:
        entry = nexus.make_group(f, "entry", "NXentry")
        nexus.write_nxdata(entry, name, **kw)
    return path


def test_iq_is_log_log_with_error_bars(tmp_path):
    q = np.geomspace(1e-3, 0.5, 300)
    i = 1e3 * q**-2.0
    f = nx_file(
        tmp_path / "iq.h5",
        "sasdata",
        signal="I",
        data=i,
        axes=[("Q", q)],
        errors=0.1 * i,
        units={"Q": "1/angstrom", "I": "1/cm"},
    )
    (fig,) = views.figures(f, "sans")
    assert fig["kind"] == "curve" and fig["layout"]["xaxis"]["type"] == "log" == fig["layout"]["yaxis"]["type"]
    tr = fig["data"][0]
    assert tr["x"] == pytest.approx(q.tolist()) and tr["error_y"]["array"] == pytest.approx((0.1 * i).tolist())
    assert "1/angstrom" in fig["layout"]["xaxis"]["title"]["text"]
    (refl,) = views.figures(f, "reflectometry")
    assert refl["layout"]["xaxis"]["type"] == "linear" and refl["layout"]["yaxis"]["type"] == "log"


def test_long_curves_are_decimated_keeping_the_peak(tmp_path):
    x = np.linspace(0, 1, 1_000_000)
    y = np.zeros_like(x)
    y[654_321] = 7.0  # one-sample spike
    f = nx_file(tmp_path / "long.h5", "data", signal="y", data=y, axes=[("x", x)])
    (fig,) = views.figures(f, "thz")
    assert fig["decimated"] and fig["points"] <= views.MAX_POINTS and fig["total"] == 1_000_000
    assert max(fig["data"][0]["y"]) == 7.0
    (full,) = views.figures(f, "thz", full=True)
    assert views.MAX_POINTS < full["points"] <= views.FULL_POINTS and max(full["data"][0]["y"]) == 7.0


def test_images_stacks_complex_and_4d(tmp_path):
    img = np.arange(1024 * 512, dtype=float).reshape(1024, 512)
    f = nx_file(tmp_path / "img.h5", "data", signal="counts", data=img)
    (fig,) = views.figures(f, "stem4d")
    z = np.asarray(fig["data"][0]["z"])
    assert z.shape == (256, 256)  # block means of 4x2
    assert z[0, 0] == pytest.approx(img[:4, :2].mean()) and z.mean() == pytest.approx(img.mean())
    vol = np.stack([np.full((64, 64), k, float) for k in range(20)])
    f = nx_file(tmp_path / "vol.h5", "data", signal="volume", data=vol)
    (fig,) = views.figures(f, "tomography")
    assert fig["kind"] == "stack" and fig["slices"] == 20 and fig["slice"] == 10
    (k7,) = views.figures(f, "tomography", group=fig["group"], slice_index=7)
    assert np.all(np.asarray(k7["data"][0]["z"]) == 7) and k7["slice"] == 7
    (last,) = views.figures(f, "tomography", slice_index=999)
    assert last["slice"] == 19
    obj = np.exp(1j * np.linspace(-1, 1, 64))[None, :] * np.full((32, 1), 2.0)
    f = nx_file(tmp_path / "obj.h5", "object", signal="object", data=obj)
    (fig,) = views.figures(f, "ptychography")
    amp, phase = (np.asarray(t["z"]) for t in fig["data"])
    assert fig["kind"] == "complex" and amp == pytest.approx(2.0) and phase[0] == pytest.approx(np.linspace(-1, 1, 64))
    cube = np.ones((8, 6, 4, 4))
    f = nx_file(tmp_path / "4d.h5", "data", signal="frames", data=cube)
    (fig,) = views.figures(f, "stem4d")
    assert np.asarray(fig["data"][0]["z"]) == pytest.approx(np.full((8, 6), 16.0))


def test_text_tables(tmp_path):
    q = np.linspace(0.01, 0.3, 50)
    r = np.exp(-q * 30)
    path = tmp_path / "refl.ort"
    path.write_text(
        "# ORSO reflectivity\n# columns: Qz R sR\n"
        + "\n".join(f"{a} {b} {0.05 * b}" for a, b in zip(q, r, strict=True))
    )
    (fig,) = views.figures(path, "reflectometry")
    assert fig["data"][0]["y"] == pytest.approx(r.tolist()) and fig["layout"]["yaxis"]["type"] == "log"
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01 not a table")
    assert views.figures(tmp_path / "junk.bin", "scan") == []


def test_an_output_linking_outside_its_folder_is_refused(tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    with h5py.File(outside / "s.h5", "w") as f:
        f["x"] = np.arange(3.0)
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "o.h5"
    with h5py.File(path, "w") as f:
        f["link"] = h5py.ExternalLink(str(outside / "s.h5"), "/x")
    with pytest.raises(errors.PermissionDenied):
        views.figures(path, "scan")
