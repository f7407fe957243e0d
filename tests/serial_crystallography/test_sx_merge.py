"""Merging: CrystFEL's regression cases with their expected answers, point-group
symmetry, figures of merit on known cases, the real stream to an MTZ read back by gemmi."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from panreduce_serial_crystallography.merge import (
    Merged,
    MergeError,
    figures_of_merit,
    merge_intensities,
    point_group_ops,
    scale_crystals,
    space_group_for,
    write_mtz,
)
from panreduce_serial_crystallography.stream import StreamError, parse_cell_file, read_stream

CASES = "crystfel-geometry/merge_checks/"


def _obs(stream):
    cr = stream.crystals
    return np.concatenate([c.hkl for c in cr]), np.concatenate([c.intensity for c in cr])


def _answer(path):
    rows = []
    for line in path.read_text().splitlines()[3:]:
        p = line.split()
        if len(p) == 7:
            rows.append(((int(p[0]), int(p[1]), int(p[2])), float(p[3]), float(p[5]), int(p[6])))
    return rows


@pytest.mark.data
@pytest.mark.parametrize(
    "case, point_group",
    [
        ("process_hkl_check_1", "1"),
        ("process_hkl_check_2", "-1"),
        ("process_hkl_check_3", "1"),
        ("process_hkl_check_4", "1"),
        ("partialator_merge_check_1", "1"),
    ],
)
def test_crystfel_merge_cases(dataset, case, point_group):
    stream = read_stream(dataset(CASES + case + ".stream").read_text().splitlines())
    hkl, inten = _obs(stream)
    m = merge_intensities(hkl, inten, point_group=point_group)
    got = [
        (tuple(h), round(float(i), 2), round(float(s), 2), int(n))
        for h, i, s, n in zip(m.hkl.tolist(), m.intensity, m.sigma, m.n_measurements, strict=True)
    ]
    assert got == _answer(dataset(CASES + case + "_ans.hkl"))


def _crystals(stream):
    cr = stream.crystals
    return np.concatenate([np.full(len(c.intensity), i) for i, c in enumerate(cr)])


@pytest.mark.data
@pytest.mark.parametrize("case, point_group", [("partialator_merge_check_2", "1"), ("partialator_merge_check_3", "4")])
def test_partialator_scaling_cases(dataset, case, point_group):
    """partialator --model=unity --iterations=1: two crystals a factor 2 apart merge to
    their geometric mean with σ = 0 (the scale absorbs the difference)."""
    stream = read_stream(dataset(CASES + case + ".stream").read_text().splitlines())
    hkl, inten = _obs(stream)
    cell = gemmi.UnitCell(*stream.crystals[0].cell)
    sc = scale_crystals(hkl, inten, _crystals(stream), point_group=point_group, cell=cell, iterations=1)
    assert sc.n_rejected == 0 and sorted(sc.g.tolist()) == pytest.approx([2**-0.5, 2**0.5])
    assert sc.b_angstrom2 == pytest.approx([0, 0], abs=1e-9)
    m = merge_intensities(hkl, sc.corrected, point_group=point_group)
    ans = _answer(dataset(CASES + case + "_ans.hkl"))
    # the same reflections, up to the choice of asymmetric-unit representative ((0,1,0) for
    # CrystFEL's (1,0,0) in 4)
    got = {
        tuple(h): (round(float(i), 2), round(float(s), 2), int(n))
        for h, i, s, n in zip(m.hkl.tolist(), m.intensity, m.sigma, m.n_measurements, strict=True)
    }

    def asu(h):
        return tuple(merge_intensities([h], [0.0], point_group=point_group, min_measurements=1).hkl[0].tolist())

    want = {asu(a[0]): a[1:] for a in ans}
    assert got == want


def _simulated_crystals(rng, n_crystals=40, fraction=0.25):
    """Crystals of a random P222 data set, each with a known G and B, partial sets of
    symmetry-equivalent reflections and 5 % (+ 5 ADU) noise."""
    cell = gemmi.UnitCell(60, 70, 80, 90, 90, 90)
    unique = gemmi.make_miller_array(cell, gemmi.SpaceGroup("P 2 2 2"), 2.5, 0, True)
    true = rng.exponential(1000, len(unique))
    g = np.exp(rng.normal(0, 0.5, n_crystals))
    b = rng.uniform(-8, 8, n_crystals)
    g, b = g / np.exp(np.mean(np.log(g))), b - b.mean()
    signs = np.array([[x, y, z] for x in (1, -1) for y in (1, -1) for z in (1, -1)])
    hs, obs, cs = [], [], []
    for c in range(n_crystals):
        sel = rng.random(len(unique)) < fraction
        h = unique[sel] * signs[rng.integers(0, 8, sel.sum())]
        s2 = cell.calculate_1_d2_array(h.astype(np.int32)) / 4
        i = g[c] * np.exp(-2 * b[c] * s2) * true[sel]
        hs.append(h)
        obs.append(i + rng.normal(0, 0.05 * i + 5))
        cs.append(np.full(len(i), c))
    truth = {tuple(h): t for h, t in zip(unique.tolist(), true, strict=True)}
    return cell, np.concatenate(hs), np.concatenate(obs), np.concatenate(cs), g, b, truth


def test_scaling_recovers_known_factors():
    cell, hkl, inten, crystal, g, b, truth = _simulated_crystals(np.random.default_rng(5))
    sc = scale_crystals(hkl, inten, crystal, point_group="mmm", cell=cell, iterations=10)
    assert sc.n_rejected == 0
    np.testing.assert_allclose(sc.g / g, 1, atol=0.03)  # within 3 %
    np.testing.assert_allclose(sc.b_angstrom2, b, atol=0.6)  # Å², of a ±8 Å² spread

    def cc(m):
        return np.corrcoef([truth[tuple(h)] for h in m.hkl.tolist()], m.intensity)[0, 1]

    raw = merge_intensities(hkl, inten, point_group="mmm")
    scaled = merge_intensities(hkl, sc.corrected, point_group="mmm")
    assert cc(scaled) > 0.999 and cc(raw) < 0.99
    # G only: the B spread is left in, the factors are off by more
    linear = scale_crystals(hkl, inten, crystal, point_group="mmm", cell=cell, iterations=10, bscale=False)
    assert np.all(linear.b_angstrom2 == 0) and np.max(np.abs(linear.g / g - 1)) > 0.1
    # a crystal sharing no reflection with the others cannot be scaled: left out
    lone = np.array([[99, 99, 99], [98, 98, 98]])
    sc = scale_crystals(
        np.concatenate([hkl, lone]),
        np.concatenate([inten, [5.0, 6.0]]),
        np.concatenate([crystal, [40, 40]]),
        point_group="mmm",
        cell=cell,
        iterations=3,
    )
    assert sc.n_rejected == 1 and not sc.ok[40] and np.isnan(sc.corrected[-2:]).all()
    with pytest.raises(ValueError, match="length"):
        scale_crystals(hkl, inten[:-1], crystal, point_group="mmm", cell=cell)


def test_expected_figures_directly():
    m = merge_intensities([[1, 0, 0]] * 3, [100, 100, 200], point_group="1")
    assert m.intensity[0] == pytest.approx(133.333, abs=1e-3) and m.sigma[0] == pytest.approx(27.2166, abs=1e-3)
    assert len(merge_intensities([[1, 0, 0]], [5.0], point_group="1").intensity) == 0
    assert len(merge_intensities([[1, 0, 0]], [5.0], point_group="1", min_measurements=1).intensity) == 1


def test_point_group_symmetry():
    # Friedel mates: apart in 1, together in -1
    hkl, inten = [[1, 2, 3], [-1, -2, -3]], [10.0, 30.0]
    assert len(merge_intensities(hkl, inten, point_group="1", min_measurements=1).intensity) == 2
    assert merge_intensities(hkl, inten, point_group="-1").intensity.tolist() == [20.0]
    # mmm: all eight sign combinations are one reflection
    signs = np.array([[a, b, c] for a in (1, -1) for b in (1, -1) for c in (1, -1)])
    m = merge_intensities(signs * [1, 2, 3], np.arange(8.0), point_group="mmm")
    assert m.n_measurements.tolist() == [8] and m.intensity[0] == pytest.approx(3.5)
    # 222 (acentric): (h,k,l), (-h,-k,l), (h,-k,-l), (-h,k,-l) together; their Friedel mates apart
    m = merge_intensities(signs * [1, 2, 3], np.arange(8.0), point_group="222")
    assert sorted(m.n_measurements.tolist()) == [4, 4] and set(m.friedel.tolist()) == {1, -1}
    # a centric reflection of 222 (h,k,0) is never split by Friedel sign
    m = merge_intensities([[1, 2, 0], [-1, -2, 0], [1, -2, 0], [-1, 2, 0]], [1.0, 2, 3, 4], point_group="222")
    assert m.n_measurements.tolist() == [4]
    # 4: the four-fold about c
    m = merge_intensities([[1, 0, 2], [0, 1, 2], [-1, 0, 2], [0, -1, 2]], [1.0, 2, 3, 4], point_group="4")
    assert m.n_measurements.tolist() == [4]
    # 6/mmm and m-3m exist; nonsense does not
    for pg in ("2/m", "4/mmm", "6/mmm", "m-3m", "-3m1_H", "32_R", "2_uac"):
        point_group_ops(pg)
    for bad in ("fish", "7", ""):
        with pytest.raises(MergeError):
            point_group_ops(bad)
    assert space_group_for("mmm", "C").hm == "C 2 2 2"
    assert space_group_for("4/mmm").hm == "P 4 2 2"
    assert space_group_for("-1").hm == "P 1"


def test_figures_of_merit_on_known_halves():
    rng = np.random.default_rng(0)
    cell = gemmi.UnitCell(40, 50, 60, 90, 90, 90)
    sg = gemmi.SpaceGroup("P 2 2 2")
    hkl = gemmi.make_miller_array(cell, sg, 2.5, 0, True)
    true = rng.exponential(1000, len(hkl))

    def merged(values):
        return Merged(
            hkl.astype(np.int32),
            np.zeros(len(hkl), np.int8),
            values,
            np.full(len(hkl), 10.0),
            np.full(len(hkl), 4, np.int32),
        )

    same = figures_of_merit(merged(true), merged(true), merged(true), cell=cell, space_group=sg, n_shells=5)
    assert same[-1]["cc_half"] == pytest.approx(1.0) and same[-1]["r_split"] == pytest.approx(0.0)
    assert same[-1]["cc_star"] == pytest.approx(1.0)
    assert same[-1]["completeness"] == pytest.approx(1.0) and same[-1]["multiplicity"] == 4
    assert sum(r["n_unique"] for r in same[:-1]) == len(hkl)
    # equal-volume shells hold similar numbers of reflections
    counts = [r["n_possible"] for r in same[:-1]]
    assert max(counts) < 1.3 * min(counts)
    # halves = truth + independent noise of known size: CC½ = var(I) / (var(I) + var(noise))
    noise = 700.0
    a, b = true + rng.normal(0, noise, len(hkl)), true + rng.normal(0, noise, len(hkl))
    foms = figures_of_merit(merged((a + b) / 2), merged(a), merged(b), cell=cell, space_group=sg, n_shells=5)
    expect = np.var(true) / (np.var(true) + noise**2)
    assert foms[-1]["cc_half"] == pytest.approx(expect, abs=0.04)
    assert foms[-1]["cc_star"] == pytest.approx(np.sqrt(2 * expect / (1 + expect)), abs=0.03)
    # Rsplit from its definition
    r = 2 / np.sqrt(2) * np.abs(a - b).sum() / (a + b).sum()
    assert foms[-1]["r_split"] == pytest.approx(r, rel=1e-9)
    # half the reflections measured: completeness 0.5
    half = Merged(
        hkl[::2].astype(np.int32),
        np.zeros(len(hkl[::2]), np.int8),
        true[::2],
        np.ones(len(hkl[::2])),
        np.full(len(hkl[::2]), 2, np.int32),
    )
    f = figures_of_merit(half, half, half, cell=cell, space_group=sg, n_shells=3, d_min_angstrom=2.5)
    assert f[-1]["completeness"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.data
def test_real_stream_to_mtz(dataset, tmp_path):
    stream = read_stream(dataset("crystfel-stream/test.stream").read_text().splitlines())
    assert len(stream.chunks) == 70 and len(stream.crystals) == 32
    hkl, inten = _obs(stream)
    assert len(inten) == 7966
    assert stream.cell.centering == "C" and stream.cell.a_angstrom == pytest.approx(61.4)
    assert stream.crystals[0].cell[0] == pytest.approx(61.3532)
    m = merge_intensities(hkl, inten, point_group="mmm")
    # an independent check of one reflection: all its mmm equivalents, averaged by hand
    target = tuple(m.hkl[np.argmax(m.n_measurements)])
    eq = np.all(np.abs(hkl) == np.abs(np.array(target)), axis=1)
    assert m.n_measurements.max() == eq.sum()
    assert m.intensity[np.argmax(m.n_measurements)] == pytest.approx(inten[eq].mean())
    assert m.sigma[np.argmax(m.n_measurements)] == pytest.approx(inten[eq].std() / np.sqrt(eq.sum()))
    sg = space_group_for("mmm", "C")
    cell = gemmi.UnitCell(*stream.cell.parameters)
    path = tmp_path / "merged.mtz"
    write_mtz(path, m, m, cell=cell, space_group=sg)
    mtz = gemmi.read_mtz_file(str(path))
    assert mtz.spacegroup.hm == "C 2 2 2" and mtz.cell.a == pytest.approx(61.4)
    assert [c.label for c in mtz.columns][:5] == ["H", "K", "L", "IMEAN", "SIGIMEAN"]
    assert mtz.nreflections == len(m.intensity)
    back = np.array(mtz, copy=False)
    order = np.lexsort(m.hkl.T[::-1])
    ref = np.lexsort(back[:, :3].T[::-1])
    np.testing.assert_allclose(back[ref, 3], m.intensity[order], rtol=1e-6)
    # every C-centred reflection has h + k even
    assert np.all((back[:, 0] + back[:, 1]) % 2 == 0)
    # the target layout of dials.merge has these columns too
    dials = gemmi.read_mtz_file(str(dataset("crystfel-geometry/dials_x4wide_merged.mtz")))
    assert {"IMEAN", "SIGIMEAN"} <= {c.label for c in dials.columns}


def test_stream_attacks():
    with pytest.raises(StreamError, match="not a CrystFEL stream"):
        read_stream(["hello"])
    with pytest.raises(StreamError, match="empty"):
        read_stream([])
    with pytest.raises(StreamError, match="truncated"):
        read_stream(["CrystFEL stream format 2.3", "----- Begin chunk -----", "Image filename: x"])
    bad_refl = [
        "CrystFEL stream format 2.3",
        "----- Begin chunk -----",
        "--- Begin crystal",
        "Cell parameters 1 2 3 nm, 90 90 90 deg",
        "Reflections measured after indexing",
        "   h    k    l          I   sigma(I)",
        "1 2 x 4 5",
        "End of reflections",
        "--- End crystal",
        "----- End chunk -----",
    ]
    with pytest.raises(StreamError, match="unreadable"):
        read_stream(bad_refl)
    with pytest.raises(StreamError, match="without its cell"):
        read_stream(
            [
                "CrystFEL stream format 2.3",
                "----- Begin chunk -----",
                "--- Begin crystal",
                "--- End crystal",
                "----- End chunk -----",
            ]
        )


@pytest.mark.data
def test_cell_files(dataset):
    c = parse_cell_file(dataset("crystfel-geometry/cell-example.cell").read_text())
    assert (c.lattice_type, c.centering, c.unique_axis) == ("hexagonal", "H", "c")
    assert c.parameters == pytest.approx((66.2, 66.2, 150.2, 90, 90, 120))


def test_stream_file_reader_takes_a_path_and_names_the_callers_file(tmp_path):
    """``read_stream_file`` takes a plain path; its errors name the caller's file, not the scratch path."""
    from panreduce.errors import InvalidInput
    from panreduce_serial_crystallography.stream import read_stream_file

    p = tmp_path / "scratch-9.bin"
    p.write_text("hello\n")
    with pytest.raises(InvalidInput, match=r"run/lyso\.stream.*not a CrystFEL stream") as err:
        read_stream_file(str(p), name="run/lyso.stream")
    assert "scratch" not in str(err.value)
    p.write_bytes(b"CrystFEL stream format 2.3\n\xff\xfe\n")
    with pytest.raises(InvalidInput, match=r"scratch-9\.bin") as err:  # no name: the path's file name
        read_stream_file(p)
    assert isinstance(err.value.__cause__, UnicodeDecodeError)
    p.write_text("CrystFEL stream format 2.3\n")
    assert read_stream_file(p, name="x.stream").chunks == []


@pytest.mark.data
def test_real_stream_with_scaling(dataset):
    """The real stream (32 crystals, mmm) merged with per-crystal scaling: every crystal
    scaled, factors of order one, the same reflections, CC½ no worse than unscaled."""
    from panreduce_serial_crystallography.pipeline import Crystals, merge_crystals

    xs = Crystals.of(read_stream(dataset("crystfel-stream/test.stream").read_text().splitlines()))
    kw = {"point_group": "mmm", "space_group": None, "min_measurements": 2, "n_shells": 10, "d_min_angstrom": None}
    plain = merge_crystals(xs, progress=lambda f, m: None, **kw)
    scaled = merge_crystals(xs, progress=lambda f, m: None, scale=True, iterations=10, **kw)
    assert plain.scaling is None and scaled.scaling is not None
    sc = scaled.scaling
    assert sc.n_rejected == 0 and len(sc.g) == 32
    assert np.exp(np.mean(np.log(sc.g))) == pytest.approx(1) and 0.1 < sc.g.min() <= sc.g.max() < 10
    assert abs(sc.b_angstrom2.mean()) < 1e-9 and np.abs(sc.b_angstrom2).max() < 200
    assert len(scaled.merged.intensity) == len(plain.merged.intensity) and scaled.n_observations == 7966
    assert scaled.foms[-1]["cc_half"] >= plain.foms[-1]["cc_half"] - 0.02
