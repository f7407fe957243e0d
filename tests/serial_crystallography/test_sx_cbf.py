"""CBF_PACKED / CBF_PACKED_V2 images: the data sets' original CBFs decode to exactly the
pixels of their HDF5/CXI copies, hit finding on them gives the CXI run's peaks, written
streams (V1 and V2, 16- and 32-bit) read back, and broken or oversized files are refused
naming the file."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from sx_cbf_packed import pack, section, write_cbf
from sx_synthetic import GEOM, SHAPE, render, spots, write_stack

from panreduce import constants, kit
from panreduce.errors import InputTooLarge, InvalidInput
from panreduce.storage import Stores
from panreduce_serial_crystallography.cbf import CbfError, open_cbf, read_cbf, unpack
from panreduce_serial_crystallography.technique import Technique

CSPAD = "sfx-thermolysin-cspad"
CBFS = [f"idx-20130301060858{s}01.cbf" for s in (4, 6, 7, 8)]
WAVELENGTHS = [1.272607, 1.272444, 1.271876, 1.270917]  # the README's
PF = {"threshold": 200, "min_snr": 6, "min_pix_count": 2, "max_pix_count": 30, "local_bg_radius": 3, "min_peaks": 10}


def _run(paths, tmp_path, **raw):
    out = tmp_path / "job" / "out"
    result = kit.run(Technique, [str(p) for p in paths], raw, out, stores=Stores(tmp_path / "job" / "store"))
    json.dumps(result.summary, allow_nan=False)
    return result.summary, out


def _peaks(out):
    with h5py.File(out / "hits.cxi", "r") as f:
        r = f["entry_1/result_1"]
        return {k: r[k][()] for k in ("nPeaks", "peakXPosRaw", "peakYPosRaw", "peakTotalIntensity", "peakSNR")}


@pytest.mark.data
def test_real_packed_cbfs_equal_their_hdf5_copies(dataset):
    with h5py.File(dataset(f"{CSPAD}/thermolysin_cspad_4hits.cxi"), "r") as f:
        stack = f["entry_1/data_1/data"][()]
    for i, name in enumerate(CBFS):
        img = open_cbf(dataset(f"{CSPAD}/{name}"))
        assert len(img.arrays) == 4 and all(a.dims == (8, 185, 388) for a in img.arrays)
        assert img.shape == (1480, 1552) and img.dtype == np.int32
        assert img.wavelength_angstrom == pytest.approx(WAVELENGTHS[i], abs=1e-7)
        frame = read_cbf(img)
        assert frame.dtype == np.int32 and np.array_equal(frame, stack[i])  # every pixel, exactly
    with h5py.File(dataset("sfx-rayonix-mfx/rayonix_mfx_hit.h5"), "r") as f:
        ray = f["entry_1/data_1/data"][0]
    img = open_cbf(dataset("sfx-rayonix-mfx/hit-20181213155134902.cbf"))
    assert img.shape == (1920, 1920) and img.wavelength_angstrom == pytest.approx(1.30375729885)
    assert np.array_equal(read_cbf(img), ray)


@pytest.mark.data
def test_hit_finding_on_the_cbfs_gives_the_cxi_peaks(dataset, tmp_path):
    geom = dataset(f"{CSPAD}/thermolysin_cspad_derived.geom")
    cbfs = [dataset(f"{CSPAD}/{n}") for n in CBFS]
    summary, out = _run([*cbfs, geom], tmp_path / "cbf", geometry=geom.name, **PF)
    assert summary["n_hits"] == 4
    rows = [r.split(",") for r in (out / "frames.csv").read_text().splitlines() if r and not r.startswith("#")]
    energies = [float(r[rows[0].index("photon_energy_ev")]) for r in rows[1:]]
    assert energies == pytest.approx(
        [constants.H_C_EV_ANGSTROM / w for w in WAVELENGTHS], rel=1e-6
    )  # from the CBF headers
    got = _peaks(out)
    # the same pixels without the CXI file's mask (a CBF carries none): identical peak lists
    nomask = tmp_path / "nomask.geom"
    nomask.write_text("\n".join(x for x in geom.read_text().splitlines() if not x.startswith("mask")))
    _, out2 = _run([dataset(f"{CSPAD}/thermolysin_cspad_4hits.cxi"), nomask], tmp_path / "cxi", **PF)
    ref = _peaks(out2)
    for k in got:
        np.testing.assert_array_equal(got[k], ref[k])
    # with the mask (pixels <= -400 or >= 16383 in any frame): all its 470 peaks are among the CBF run's 475
    _, out3 = _run([dataset(f"{CSPAD}/thermolysin_cspad_4hits.cxi"), geom], tmp_path / "cxim", geometry=geom.name, **PF)
    masked = _peaks(out3)
    assert masked["nPeaks"].tolist() == [160, 115, 133, 62] and got["nPeaks"].tolist() == [161, 117, 134, 63]
    for i in range(4):
        a = np.c_[got["peakXPosRaw"][i, : got["nPeaks"][i]], got["peakYPosRaw"][i, : got["nPeaks"][i]]]
        m = np.c_[masked["peakXPosRaw"][i, : masked["nPeaks"][i]], masked["peakYPosRaw"][i, : masked["nPeaks"][i]]]
        assert (np.abs(m[:, None] - a[None]).max(-1).min(1) < 1e-3).all()


@pytest.mark.parametrize("version", [1, 2])
def test_written_streams_read_back(version, tmp_path):
    rng = np.random.default_rng(version)
    # smooth parts, noise, isolated huge jumps (16- and 32-bit widths), negative values
    a = (rng.normal(0, 30, (3, 21, 17)) + np.arange(17) * 5).astype(np.int32)
    a[1, 5, 3] = 2**30
    a[2, 0, 0] = -(2**29)
    a[0, 7, 16] = -40000
    b = rng.integers(0, 65535, (1, 9, 1)).astype(np.uint16)  # one column: only "up" predictions
    for arr in (a, b):
        stream = np.frombuffer(pack(arr, version=version, rng=rng), np.uint8)
        np.testing.assert_array_equal(unpack(stream, arr.shape, version=version), arr)
    # two sections side by side along fs, through the reader
    c = rng.integers(-50, 3000, (2, 4, 6)).astype(np.int32)
    d = rng.integers(-50, 3000, (1, 8, 5)).astype(np.int32)
    p = write_cbf(tmp_path / "x.cbf", [section(c, version=version), section(d, version=version, binary_id=2)])
    img = open_cbf(p)
    assert img.shape == (8, 11) and img.wavelength_angstrom == pytest.approx(1.3776)
    frame = read_cbf(img)
    np.testing.assert_array_equal(frame, np.hstack([c.reshape(8, 6), d.reshape(8, 5)]))


def _cbf_frames(tmp_path, n=2):
    rng = np.random.default_rng(11)
    frames = np.array([render(spots(rng, 20), np.full(20, 900.0), rng=rng) for _ in range(n)]).astype(np.int32)
    paths = []
    for i, fr in enumerate(frames):
        paths.append(write_cbf(tmp_path / f"f{i}.cbf", [section(fr[None], version=1 + i % 2)]))
    geom = tmp_path / "det.geom"
    geom.write_text(GEOM)
    return frames, paths, geom


def test_technique_reads_packed_cbfs_as_the_stack(tmp_path):
    frames, paths, geom = _cbf_frames(tmp_path)
    raw = {"threshold": 60, "min_snr": 5, "min_pix_count": 2, "max_pix_count": 30, "min_peaks": 10}
    s1, o1 = _run([*paths, geom], tmp_path / "a", **raw)
    stack = write_stack(tmp_path / "s.cxi", frames, np.zeros(SHAPE, np.uint16))
    s2, o2 = _run([stack, geom], tmp_path / "b", **raw)
    assert s1["n_hits"] == s2["n_hits"] == 2
    p1, p2 = _peaks(o1), _peaks(o2)
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])
    with h5py.File(o1 / "hits.cxi", "r") as f:
        assert f["entry_1/data_1/data"].dtype == np.int32
        np.testing.assert_array_equal(f["entry_1/data_1/data"][()], frames)


def test_attacks_broken_and_oversized_cbfs(tmp_path):
    frames, _, geom = _cbf_frames(tmp_path, n=1)
    fr = frames[0][None]
    good = section(fr)
    stream = pack(fr)

    def refused(name, sec, exc=InvalidInput, match=None):
        p = write_cbf(tmp_path / name, [sec])
        with pytest.raises(exc, match=match or name):
            _run([p, geom], tmp_path / ("job-" + name))

    # the stream cut short (header consistent with the shorter data)
    refused("short.cbf", section(fr, stream=stream[: len(stream) // 2]), match=r"short.cbf.*ends before")
    # the header promises more bytes than the file holds
    p = write_cbf(tmp_path / "cut.cbf", [good])
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(InvalidInput, match=r"cut.cbf.*declares"):
        _run([p, geom], tmp_path / "job-cut")
    # dimensions that do not multiply to the element count, or do not fit the geometry
    refused("dims.cbf", section(fr, **{"X-Binary-Size-Fastest-Dimension": 127}), match=r"dims.cbf.*dimensions")
    small = fr[:, :100]
    refused("shape.cbf", section(small), match=r"shape.cbf.*not the geometry")
    # huge declared dimensions: refused from the header, before anything is allocated
    huge = {
        "X-Binary-Number-of-Elements": 10**15,
        "X-Binary-Size-Fastest-Dimension": 10**5,
        "X-Binary-Size-Second-Dimension": 10**5,
        "X-Binary-Size-Third-Dimension": 10**5,
    }
    refused("huge.cbf", section(fr, **huge), exc=InputTooLarge, match="huge.cbf")
    # garbage where numbers belong, an element count the stream's own header contradicts
    refused("nan.cbf", section(fr, **{"X-Binary-Size": "12e3"}), match=r"nan.cbf.*not a non-negative integer")
    refused(
        "count.cbf",
        section(fr, **{"X-Binary-Number-of-Elements": fr.size - 128, "X-Binary-Size-Second-Dimension": 191}),
    )
    # undefined V2 width code 15 in the first block header
    bad = bytes([0xF0]) + stream[1:]
    refused("code.cbf", section(fr, version=2, stream=bad), match=r"code.cbf.*bit width")
    # a corrupted stream whose values overflow the element type
    p = tmp_path / "ovf.cbf"
    big = np.full((1, *SHAPE), 2**31 - 1 + 2**30, np.int64)
    big[0, 0, 0] = 2**31 - 1
    write_cbf(p, [section(fr, stream=pack(big))])
    with pytest.raises(InvalidInput, match=r"ovf.cbf.*outside int32"):
        _run([p, geom], tmp_path / "job-ovf")
    with pytest.raises(CbfError):
        open_cbf(write_cbf(tmp_path / "none.cbf", []))
