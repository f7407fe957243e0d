"""The ISIS raw NeXus reader: real LOQ files, run summation, event mode, damaged files."""

import h5py
import numpy as np
import pytest
from sans_synthetic import write_raw

from panreduce import errors
from panreduce_sans.rawfile import histogram_events, read_run, read_run_info, sum_runs


def test_scattering_run_main_bank(dataset):
    path = dataset("loq-gfp/raw/LOQ75884.nxs")
    run = read_run(path, path.name, spectra=(3, 16386))
    assert run.run_number == 75884 and run.title.startswith("LC 1 mg/ml GFP")
    assert run.counts.shape == (16384, 102) and run.spectra[0] == 3 and run.spectra[-1] == 16386
    assert run.tof.size == 103 and run.tof[0] == 3500 and run.tof[-1] == 43500
    assert np.allclose(run.tof[1:-1] / run.tof[:-2], 1.025, rtol=1e-4)  # the last edge is cut at 43500
    assert set(run.monitors) == {1, 2} and run.monitors[2].sum() > 1e6
    assert (run.sample.thickness, run.sample.width, run.sample.shape) == (2.0, 8.0, "Disc")
    assert run.proton_charge == pytest.approx(70.019, abs=1e-3)


def test_transmission_run_has_m3_as_spectrum_3(dataset):
    path = dataset("loq-gfp/raw/LOQ75869.nxs")
    run = read_run(path, path.name)
    assert run.spectra.tolist() == [3, 4, 5, 6, 7, 8]
    assert run.spectrum(3).sum() > 1e5 and run.counts[1:].sum() == 0
    info = read_run_info(path, path.name)
    assert (info.run_number, info.n_spectra) == (75869, 6)


def test_sum_runs_adds_counts_and_keeps_the_first_metadata(tmp_path):
    tof = np.linspace(1000, 2000, 6)
    runs = []
    for k, n in enumerate((11, 12, 13)):
        p = write_raw(
            tmp_path / f"LOQ{n}.nxs",
            run_number=n,
            counts=np.full((2, 5), k + 1),
            spectra=np.array([3, 4]),
            tof=tof,
            monitors={2: np.full(5, 10 * (k + 1))},
            title=f"t{n}",
        )
        runs.append(read_run(p, p.name))
    total = sum_runs(runs)
    assert total.counts.tolist() == [[6.0] * 5] * 2
    assert total.monitors[2].tolist() == [60.0] * 5
    assert total.runs == (11, 12, 13) and total.run_number == 11 and total.title == "t11"
    assert total.name == "13-add" and total.proton_charge == pytest.approx(30.0)
    other = write_raw(
        tmp_path / "LOQ14.nxs",
        run_number=14,
        counts=np.ones((2, 4)),
        spectra=np.array([3, 4]),
        tof=tof[:5],
        monitors={2: np.ones(4)},
    )
    with pytest.raises(errors.InvalidInput, match=r"LOQ14\.nxs"):
        sum_runs([runs[0], read_run(other, other.name)])


def test_event_mode_histograms_onto_the_monitor_grid(tmp_path):
    rng = np.random.default_rng(5)
    tof = np.linspace(1000.0, 6000.0, 11)
    ids = rng.integers(3, 7, 5000)
    t = rng.uniform(500.0, 6500.0, 5000)  # some outside the grid
    p = write_raw(
        tmp_path / "LOQ20.nxs",
        run_number=20,
        counts=None,
        spectra=None,
        tof=tof,
        monitors={2: np.ones(10)},
        events=(ids, t),
    )
    run = read_run(p, p.name, spectra=(3, 6))
    assert run.event_mode and run.counts.shape == (4, 10)
    expected = np.stack([np.histogram(t[ids == s], bins=tof)[0] for s in range(3, 7)])
    assert np.array_equal(run.counts, expected)


def test_histogram_events_drops_unknown_ids():
    h = histogram_events(
        np.array([3, 3, 9, 4]), np.array([1.5, 2.5, 1.5, 9.0]), np.array([4, 3]), np.array([1.0, 2, 3])
    )
    assert h.tolist() == [[0, 0], [1, 1]]


def test_damaged_files_are_named(tmp_path, dataset):
    src = dataset("loq-gfp/raw/LOQ75869.nxs").read_bytes()
    truncated = tmp_path / "LOQ1.nxs"
    truncated.write_bytes(src[: len(src) // 2])
    with pytest.raises(errors.InvalidInput, match=r"LOQ1\.nxs"):
        read_run(truncated, truncated.name)
    garbage = tmp_path / "LOQ2.nxs"
    garbage.write_bytes(b"not a nexus file" * 10)
    with pytest.raises(errors.InvalidInput, match=r"LOQ2\.nxs"):
        read_run(garbage, garbage.name)
    missing_block = write_raw(
        tmp_path / "LOQ3.nxs",
        run_number=3,
        counts=np.ones((2, 4)),
        spectra=np.array([3, 4]),
        tof=np.arange(5.0),
        monitors={2: np.ones(4)},
    )
    with pytest.raises(errors.InvalidInput, match="spectra 3-16386"):
        read_run(missing_block, missing_block.name, spectra=(3, 16386))


def test_direct_chunk_reading_equals_hdf5(dataset):
    import h5py

    from panreduce_sans.rawfile import _read_rows

    path = dataset("loq-gfp/raw/LOQ75884.nxs")
    with h5py.File(path) as f:
        ds = f["raw_data_1/detector_1/counts"]
        for i0, i1 in ((0, 16384), (5, 21), (17780, 17790), (3, 3)):
            assert np.array_equal(_read_rows(ds, i0, i1), ds[0, i0:i1, :])


def test_uncompressed_files_read_through_hdf5(tmp_path):
    p = write_raw(
        tmp_path / "LOQ7.nxs",
        run_number=7,
        counts=np.arange(12).reshape(3, 4),
        spectra=np.array([3, 4, 5]),
        tof=np.arange(5.0),
        monitors={2: np.ones(4)},
    )
    run = read_run(p, p.name, spectra=(4, 5))
    assert run.counts.tolist() == [[4, 5, 6, 7], [8, 9, 10, 11]]


@pytest.mark.parametrize("chunked", [False, True])
def test_multi_period_runs_read_the_chosen_period(tmp_path, chunked):
    tof = np.linspace(1000, 2000, 6)
    counts = np.stack([np.full((2, 5), 1), np.full((2, 5), 7)])  # period 1: ones, period 2: sevens
    monitors = {2: np.stack([np.full(5, 10), np.full(5, 70)])}
    p = write_raw(
        tmp_path / "LOQ21.nxs", run_number=21, counts=counts, spectra=np.array([3, 4]), tof=tof, monitors=monitors
    )
    if chunked:  # the ISIS layout: small gzip chunks of whole spectra, inflated without HDF5's filters
        with h5py.File(p, "r+") as f:
            del f["raw_data_1/detector_1/counts"]
            f.create_dataset(
                "raw_data_1/detector_1/counts", data=counts.astype(np.int32), chunks=(1, 1, 5), compression="gzip"
            )
    run = read_run(p, p.name, period=2)
    assert run.counts.tolist() == [[7.0] * 5] * 2 and run.monitors[2].tolist() == [70.0] * 5
    assert read_run(p, p.name, period=1).counts.sum() == 10
    with pytest.raises(errors.InvalidInput, match="has 2 periods; choose one with the 'period' parameter"):
        read_run(p, p.name)
    with pytest.raises(errors.InvalidInput, match="period 3 does not exist"):
        read_run(p, p.name, period=3)
    # a single-period run (e.g. a transmission run beside a multi-period sample) ignores the period
    single = write_raw(
        tmp_path / "LOQ22.nxs",
        run_number=22,
        counts=np.full((2, 5), 3),
        spectra=np.array([3, 4]),
        tof=tof,
        monitors={2: np.full(5, 30)},
    )
    assert read_run(single, single.name, period=2).counts.sum() == 30
