"""Every input layout read into one Scan: the real files in ../shared/data/tomo and
synthetic files written with h5py/tifffile/scipy (round trips)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import tifffile
from tomo_synthetic import inputs, phantom_scan, write_data_exchange, write_nxtomo

from panreduce import errors
from panreduce_tomography.io import NamedPath, read_hdf5, read_mat, read_scans, read_tiff_stack
from panreduce_tomography.tof import fits_image_info


def _scans(*paths, **kw):
    return read_scans([[NamedPath(f.path, f.name) for f in item.files] for item in inputs(*paths).items], **kw)


@pytest.mark.data
def test_tooth_data_exchange(dataset):
    (scan,) = _scans(dataset("tomo/tooth/tooth.h5"))
    assert scan.layout == "dataexchange" and scan.kind == "intensity"
    assert scan.shape == (181, 2, 640)
    assert scan.darks.shape == (10, 2, 640) and scan.flats.shape == (10, 2, 640)
    assert scan.angles[0] == 0 and scan.angles[-1] == pytest.approx(np.deg2rad(179.0055), abs=1e-4)
    assert scan.read_rows(1, 2).shape == (181, 1, 640)


@pytest.mark.data
def test_diad_nxtomo_with_image_key(dataset_folder):
    (scan,) = _scans(dataset_folder("tomo/diad-k11-18014"))
    assert scan.layout == "nxtomo"
    # 3201 frames: flats 0-49 and 3101-3150, darks 50-99 and 3151-3200, 3001 projections
    assert scan.shape == (3001, 22, 26)
    assert scan.flats.shape == (100, 22, 26) and scan.darks.shape == (100, 22, 26)
    assert scan.flats.mean() > 20 * scan.darks.mean()
    span = np.rad2deg(scan.angles[-1] - scan.angles[0])
    assert span == pytest.approx(180.0, abs=0.1)  # 90 -> 270 degrees
    proj = scan.read_rows(10, 12)
    assert proj.shape == (3001, 2, 26)
    assert scan.darks.mean() < proj.mean() < scan.flats.mean()


@pytest.mark.data
def test_savu_tiff_stack(dataset_folder):
    (scan,) = _scans(dataset_folder("tomo/savu-tiff"))
    assert scan.layout == "tiff" and scan.shape == (91, 135, 160)
    assert scan.darks.shape == (1, 135, 160) and scan.flats.shape == (1, 135, 160)
    # angles.txt repeats its first and last angle for non-projection frames: 111 -> 91
    assert np.rad2deg(scan.angles[0]) == pytest.approx(-88.2) and np.rad2deg(scan.angles[-1]) == pytest.approx(
        91.8, abs=1e-3
    )
    assert np.allclose(np.diff(np.rad2deg(scan.angles)), 2.0, atol=1e-3)


@pytest.mark.data
def test_dendrite_mat_sinogram(dataset):
    (scan,) = _scans(dataset("tomo/dendrite/RealDataDend.mat"))
    assert scan.layout == "sinogram" and scan.kind == "line_integral"
    assert scan.shape == (360, 1, 1260)  # transposed from (1260, 360) using the angle vector
    assert np.ptp(scan.angles) == pytest.approx(np.pi, abs=0.02)


def test_data_exchange_round_trip(tmp_path):
    scan = phantom_scan(n=32, n_angles=20, n_rows=3)
    path = write_data_exchange(tmp_path / "scan.h5", scan)
    (s,) = _scans(path)
    assert s.shape == (20, 3, 32)
    assert np.allclose(s.angles, scan["angles"])
    assert np.array_equal(s.read_rows(0, 3), scan["data"].astype(np.uint16).astype(np.float32))


def test_nxtomo_round_trip(tmp_path):
    scan = phantom_scan(n=32, n_angles=20, n_rows=3)
    (s,) = _scans(write_nxtomo(tmp_path / "scan.nxs", scan))
    assert s.layout == "nxtomo" and s.shape == (20, 3, 32)
    assert np.allclose(s.angles, scan["angles"])
    assert len(s.flats) == len(scan["flats"]) and len(s.darks) == len(scan["darks"])
    assert np.allclose(s.flats.mean(0), scan["flats"].astype(np.uint16).mean(0))


def test_tiff_folder_and_mat_round_trips(tmp_path):
    scan = phantom_scan(n=32, n_angles=12, n_rows=2)
    folder = tmp_path / "stack"
    folder.mkdir()
    for i, img in enumerate(scan["data"]):
        tifffile.imwrite(folder / f"proj_{i:04d}.tif", img.astype(np.uint16))
    tifffile.imwrite(folder / "darks.tif", scan["darks"].astype(np.uint16))
    tifffile.imwrite(folder / "flats.tif", scan["flats"].astype(np.uint16))
    np.savetxt(folder / "angles.txt", np.rad2deg(scan["angles"]))
    (s,) = _scans(folder)
    assert s.shape == (12, 2, 32) and len(s.darks) == len(scan["darks"]) and len(s.flats) == len(scan["flats"])
    assert np.allclose(s.angles, scan["angles"])
    sino = scan["line_integrals"][:, 0]
    scipy.io.savemat(tmp_path / "sino.mat", {"sino": sino.T, "theta_deg": np.rad2deg(scan["angles"])})
    (m,) = _scans(tmp_path / "sino.mat")
    assert m.shape == (12, 1, 32) and np.allclose(m.read_rows(0, 1)[:, 0], sino, atol=1e-6)


def test_series_of_scans(tmp_path):
    paths = [
        write_data_exchange(tmp_path / f"t{i}.h5", phantom_scan(n=32, n_angles=10, n_rows=2, seed=i)) for i in range(3)
    ]
    scans = _scans(*paths)
    assert [s.source for s in scans] == ["t0.h5", "t1.h5", "t2.h5"]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("x.h5", b"not hdf5 at all" * 10, "not an HDF5"),
        ("x.mat", b"garbage" * 10, "MATLAB"),
        ("x.tif", b"garbage" * 10, "TIFF"),
    ],
)
def test_bad_files_are_named(tmp_path, name, content, problem):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(errors.InvalidInput) as err:
        _scans(p)
    assert name in str(err.value) and problem in str(err.value)


def test_hdf5_without_tomography_data(tmp_path):
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.arange(5)
    with pytest.raises(errors.InvalidInput, match=r"other\.h5.*no tomography data"):
        _scans(tmp_path / "other.h5")


@pytest.mark.parametrize("kind", ["raw", "zlib-strips", "multipage", "tiled"])
def test_tiff_stack_is_read_by_row_range(tmp_path, kind):
    """Projections of a TIFF stack are read by detector rows: the values equal the
    whole-image read, and (except for tiled pages, decoded whole) the bytes read from
    the files for 4 of 1024 rows are a small fraction of the stack (whole pages: 100 %)."""
    rng = np.random.default_rng(2)
    n, rows, cols = 6, 1024, 256
    data = rng.integers(0, 60000, (n, rows, cols)).astype(np.uint16)
    folder = tmp_path / kind
    folder.mkdir()
    opts = {
        "raw": {},
        "zlib-strips": {"compression": "zlib", "rowsperstrip": 8},
        "tiled": {"tile": (128, 128), "compression": "zlib"},
        "multipage": {"rowsperstrip": 16},
    }[kind]
    if kind == "multipage":
        tifffile.imwrite(folder / "proj.tif", data, **opts)
    else:
        for i in range(n):
            tifffile.imwrite(folder / f"proj_{i:03d}.tif", data[i], **opts)
    tifffile.imwrite(folder / "flat.tif", np.full((rows, cols), 60000, np.uint16))
    (scan,) = _scans(folder)
    assert scan.shape == (n, rows, cols) and scan.flats.shape == (1, rows, cols)
    io_stats = Path("/proc/self/io")
    if not io_stats.is_file():
        pytest.skip("needs /proc/self/io (Linux) to count the bytes read")

    def rchar():  # bytes this process has read through read(2) so far
        return int(next(line for line in io_stats.read_text().splitlines() if line.startswith("rchar")).split()[1])

    scan.read_rows(0, 1)  # warm up the imports
    before = rchar()
    got = scan.read_rows(100, 104)
    total = rchar() - before
    assert np.array_equal(got, data[:, 100:104].astype(np.float32))
    if kind != "tiled":  # tiled pages are decoded whole (values checked only)
        assert 0 < total < 0.1 * data.nbytes, (total, data.nbytes)
    assert np.array_equal(scan.read_rows(1018, 1024), data[:, 1018:1024].astype(np.float32))


def test_truncated_tiff_is_named(tmp_path):
    folder = tmp_path / "stack"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"proj_{i}.tif", np.ones((64, 32), np.uint16), compression="zlib", rowsperstrip=4)
    raw = (folder / "proj_1.tif").read_bytes()
    (folder / "proj_1.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(errors.InvalidInput, match=r"proj_1\.tif"):
        _scans(folder)


def _rchar() -> int:
    """Bytes this process has read through read(2) so far (Linux /proc/self/io)."""
    text = Path("/proc/self/io").read_text()
    return int(next(line for line in text.splitlines() if line.startswith("rchar")).split()[1])


def test_fits_tof_stack_is_read_by_row_range(tmp_path):
    """FITS ToF stacks (uint16 images, stored as int16 + BZERO, two shutter windows):
    the projections of 4 of 1024 rows equal the overlap-corrected band sums of a whole
    read (Tremsin correction on those rows only, windows restarted), read with < 10 % of
    the stack's bytes; the spectra (computed bin by bin at load) equal whole-stack ones."""
    from astropy.io import fits

    from panreduce_tomography import tof

    rng = np.random.default_rng(5)
    n_proj, n_bins, rows, cols = 3, 6, 1024, 64
    tof_s = (np.arange(n_bins) + 0.5) * 1e-3
    triggers = np.array([400.0, 300.0])
    shutter = np.array([0, 0, 0, 1, 1, 1])  # windows end at 3 and 6 ms
    root = tmp_path / "imat"
    data = {}
    for name in [f"angle_{i:03d}" for i in range(n_proj)] + ["ob"]:
        d = root / name
        d.mkdir(parents=True)
        stack = rng.integers(0, 60, (n_bins, rows, cols)).astype(np.uint16)
        data[name] = stack
        for b in range(n_bins):
            fits.PrimaryHDU(stack[b]).writeto(d / f"IMAT_{b:05d}.fits")
        np.savetxt(d / "IMAT_Spectra.txt", np.c_[tof_s, np.ones(n_bins)])
        np.savetxt(d / "IMAT_ShutterCount.txt", np.c_[[0, 1], triggers])
        np.savetxt(d / "IMAT_ShutterTimes.txt", np.c_[[0, 1], [0.0, 0.0], [3e-3, 3e-3]])
    with fits.open(root / "ob" / "IMAT_00000.fits") as h:  # stored as int16 with an offset
        assert h[0].header["BITPIX"] == 16 and h[0].header["BZERO"] == 32768
    corrected = {k: tof.overlap_correction(v, shutter, triggers) for k, v in data.items()}
    # the correction matters here (up to ~30 % in the last bin of a window)
    assert np.abs(corrected["ob"] / np.maximum(data["ob"], 1) - 1).max() > 0.2
    projs = [f"angle_{i:03d}" for i in range(n_proj)]
    band = (2, 5)  # straddles both windows: bins 0, 1 are read for the correction only
    (scan,) = _scans(root, band=band)
    assert scan.layout == "fits-tof" and scan.shape == (n_proj, rows, cols)
    assert scan.meta["overlap_corrected"]
    want = np.stack([corrected[p][band[0] : band[1]].sum(0) for p in projs])
    assert np.allclose(scan.flats[0], corrected["ob"][band[0] : band[1]].sum(0), rtol=1e-5)
    spec = np.mean([corrected[p].mean(axis=(1, 2)) for p in projs], axis=0)
    assert np.allclose(scan.meta["spectrum_sample"], spec, rtol=1e-9)
    assert np.allclose(scan.meta["spectrum_open"], corrected["ob"].mean(axis=(1, 2)), rtol=1e-9)
    if not Path("/proc/self/io").is_file():
        pytest.skip("needs /proc/self/io (Linux) to count the bytes read")
    scan.read_rows(0, 1)  # warm up
    before = _rchar()
    got = scan.read_rows(100, 104)
    total = _rchar() - before
    stack_bytes = sum(v.nbytes for k, v in data.items() if k != "ob")
    assert np.allclose(got, want[:, 100:104], rtol=1e-5)
    # rows 100:104 of bins 0..4 of 3 projections: 3 x 5 x 4 x 64 x 2 bytes = 7.7 kB
    assert 0 < total < 0.1 * stack_bytes, (total, stack_bytes)
    assert total >= n_proj * 5 * 4 * cols * 2
    assert np.allclose(scan.read_rows(1020, 1024), want[:, 1020:1024], rtol=1e-5)


def test_truncated_fits_is_named(tmp_path):
    from astropy.io import fits

    root = tmp_path / "imat"
    for i in range(2):
        d = root / f"angle_{i}"
        d.mkdir(parents=True)
        for b in range(3):
            fits.PrimaryHDU(np.ones((64, 32), np.float32)).writeto(d / f"IMAT_{b}.fits")
    raw = (root / "angle_1" / "IMAT_2.fits").read_bytes()
    (root / "angle_1" / "IMAT_2.fits").write_bytes(raw[: len(raw) - 3000])
    with pytest.raises(errors.InvalidInput, match=r"IMAT_2\.fits"):
        _scans(root)


def test_readers_take_paths_and_name_the_callers_file(tmp_path):
    """The readers take plain paths (str or os.PathLike); messages name the caller's file
    (the ``name``/``names`` keyword), never the local scratch path."""
    from astropy.io import fits

    raw = phantom_scan(n=32, n_angles=24, n_rows=2)
    h5 = write_data_exchange(tmp_path / "scratch-0001.bin", raw)
    scan = read_hdf5(str(h5), name="beamtime/run_7.h5")
    assert scan.source == "beamtime/run_7.h5" and scan.shape == (24, 2, 32)
    assert np.allclose(scan.angles, raw["angles"], atol=1e-6)
    assert read_hdf5(h5).source == "scratch-0001.bin"  # no name: the path's file name

    bad = tmp_path / "scratch-0002.bin"
    bad.write_bytes(b"garbage" * 10)
    for read, name, problem in ((read_hdf5, "user/a.h5", "not an HDF5"), (read_mat, "user/a.mat", "MATLAB")):
        with pytest.raises(errors.InvalidInput) as err:
            read(bad, name=name)
        assert name in str(err.value) and problem in str(err.value) and "scratch" not in str(err.value)

    tifs = []
    for i in range(3):
        tifs.append(tmp_path / f"scratch-t{i}.bin")
        tifffile.imwrite(tifs[-1], np.full((8, 6), i + 1, np.uint16))
    stack = read_tiff_stack([str(t) for t in tifs], names=["s/proj_2.tif", "s/proj_0.tif", "s/proj_1.tif"])
    assert stack.shape == (3, 8, 6)
    assert stack.read_rows(0, 8)[:, 0, 0].tolist() == [2.0, 3.0, 1.0]  # sorted by the callers' names
    tifs[1].write_bytes(b"garbage" * 10)
    with pytest.raises(errors.InvalidInput, match=r"s/proj_0\.tif") as err:
        read_tiff_stack(tifs, names=["s/proj_2.tif", "s/proj_0.tif", "s/proj_1.tif"])
    assert "scratch" not in str(err.value)
    with pytest.raises(ValueError, match="2 names for 3 paths"):
        read_tiff_stack(tifs, names=["a.tif", "b.tif"])

    fits_path = tmp_path / "scratch-f.bin"
    fits.PrimaryHDU(np.ones((16, 8), np.float32)).writeto(fits_path)
    assert fits_image_info(str(fits_path), name="ob/IMAT_0.fits").shape == (16, 8)
    fits_path.write_bytes(fits_path.read_bytes()[: 2880 + 100])
    with pytest.raises(errors.InvalidInput, match=r"ob/IMAT_0\.fits") as err:
        fits_image_info(fits_path, name="ob/IMAT_0.fits")
    assert "scratch" not in str(err.value)
