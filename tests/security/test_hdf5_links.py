"""HDF5 files cannot reach outside the caller's locations: external links, virtual-dataset
sources and external raw storage are resolved before anything is read and refused when
they lead outside (GetMetadata, Reduce, the catalogue), and the metadata walk is bounded
(each object once, limits on depth, records and time, stops when cancelled)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from locations_support import SECRET, SECRET_TEXT, refused, two_proposals, write_nexus
from stores_support import STORES, job_store

from panreduce import catalogue, errors, metadata
from panreduce.kit.readers import open_hdf5
from panreduce.storage import stage_paths


@pytest.fixture(params=STORES)
def site(request, tmp_path):
    """The site with its job table in SQLite or PostgreSQL."""
    with job_store(request.param, tmp_path, request) as store, two_proposals(tmp_path, store) as s:
        yield s


def _external_link(path, target, target_path="/entry"):
    with h5py.File(path, "w") as f:
        f["entry"] = h5py.ExternalLink(str(target), target_path)
    return path


def _virtual(path, source):
    layout = h5py.VirtualLayout(shape=(1,), dtype="f8")
    layout[:] = h5py.VirtualSource(str(source), "entry/data", shape=(1,))
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.create_virtual_dataset("data", layout)
    return path


def _external_storage(path, raw, offset=128, n=3):
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.create_dataset("data", shape=(n,), dtype="<f8", external=[(str(raw), offset, 8 * n)])
    return path


def _attacks(site, folder):
    """A's files whose references lead into B: (name, path)."""
    b = site.data / "propB"
    folder.mkdir(parents=True, exist_ok=True)
    return [
        ("external link", _external_link(folder / "elink.nxs", b / "secret.nxs")),
        ("relative external link", _external_link(folder / "relink.nxs", "../propB/secret.nxs")),
        ("virtual dataset", _virtual(folder / "vds.nxs", b / "secret.nxs")),
        ("external storage", _external_storage(folder / "raw.nxs", b / "secret.npy")),
    ]


def test_the_attack_files_would_read_b_without_the_check(site, tmp_path):
    """Plain h5py follows every one of them: what the checks below stop is real."""
    for kind, path in _attacks(site, site.data / "propA"):
        with h5py.File(path, "r") as f:
            assert float(np.ravel(f["entry/data"][()])[0]) == SECRET, kind


def test_get_metadata_of_an_upload_never_returns_b(site, tmp_path):
    a = site.a
    for kind, path in _attacks(site, tmp_path / "mine"):
        if kind == "relative external link":
            continue  # relative to the upload's own folder: nothing of B's there
        up = a.upload(path)
        exc = refused(lambda up=up: a.metadata(up.uri))
        assert exc.code.name == "PERMISSION_DENIED" and "not followed" in str(exc), kind


def test_get_metadata_of_a_file_under_a_never_returns_b(site):
    a = site.a
    for kind, path in _attacks(site, site.data / "propA"):
        exc = refused(lambda path=path: a.metadata(str(path)))
        assert exc.code.name == "PERMISSION_DENIED", kind


def test_reduce_of_such_files_is_refused_and_b_data_never_read(site, tmp_path):
    a = site.a
    for kind, path in _attacks(site, site.data / "propA"):
        refused(lambda path=path: a.reduce("h5sum", [str(path)], {}))
        up = a.upload(path)
        refused(lambda up=up: a.reduce("h5sum", [up.uri], {}))
        del kind
    assert a.reduce("h5sum", [str(site.data / "propA" / "mine.nxs")], {}).summary["total"] == 2.0


def test_links_inside_the_callers_locations_still_work(site):
    a, data = site.a, site.data
    write_nexus(data / "propA" / "raw" / "frames.nxs", 5.0, "frames")
    _external_link(data / "propA" / "raw" / "master.nxs", "frames.nxs")  # the detector-master pattern
    meta = a.metadata(str(data / "propA" / "raw" / "master.nxs"))
    assert {r.path: r.value for r in meta}["/entry/data"] == 5.0
    assert a.reduce("h5sum", [str(data / "propA" / "raw" / "master.nxs")], {}).summary["total"] == 5.0
    _virtual(data / "propA" / "raw" / "vds.nxs", data / "propA" / "mine.nxs")
    assert {r.path: r.value for r in a.metadata(str(data / "propA" / "raw" / "vds.nxs"))}["/entry/data"] == 2.0


def test_a_chain_of_links_is_checked_file_by_file(site):
    """A's file links to A's second file, which links to B: refused at the first."""
    data = site.data
    _external_link(data / "propA" / "hop.nxs", data / "propB" / "secret.nxs")
    _external_link(data / "propA" / "start.nxs", data / "propA" / "hop.nxs")
    refused(lambda: site.a.metadata(str(data / "propA" / "start.nxs")))
    with pytest.raises(errors.PermissionDenied):
        with open_hdf5(data / "propA" / "start.nxs"):
            pass


def test_a_deep_link_in_a_folder_does_not_widen_where_links_may_lead(site):
    """A folder whose deeply nested link names A's own file, which links to B: the
    service judges the file's links from the file's own folder, not from the name's depth."""
    data = site.data
    _external_link(data / "propA" / "evil.nxs", data / "propB" / "secret.nxs")
    deep = data / "propA" / "batch" / "data" / "propA"
    deep.mkdir(parents=True)
    (deep / "evil.nxs").symlink_to(data / "propA" / "evil.nxs")  # the name repeats the target's path
    refused(lambda: site.a.reduce("h5sum", [str(data / "propA" / "batch") + "/"], {}))
    inputs = stage_paths([data / "propA" / "batch"])
    with pytest.raises(errors.PermissionDenied):
        with open_hdf5(inputs.files[0]):
            pass


def test_the_catalogue_skips_files_that_reach_outside(site):
    inputs = stage_paths([p for _, p in _attacks(site, site.data / "propA")])
    assert SECRET_TEXT not in str(catalogue.extract(inputs.files))
    honest = stage_paths([site.data / "propA" / "mine.nxs"])
    assert catalogue.extract(honest.files)["sample"] == "A's own sample"


# -- the walk: cycles, fan-in, limits, cancellation ------------------------------------
def _cycle(path):
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/inner")
        g.create_dataset("x", data=1.5)
        g["up"] = f["entry"]  # a hard link back to an ancestor
        f["entry"]["z_again"] = f["entry/inner"]  # a second path (listed after inner)
    return path


def _dag(path, levels=20):
    """Each level links twice to the one below: 2**levels paths, levels+1 groups."""
    with h5py.File(path, "w") as f:
        prev = f.create_group("l0")
        prev.create_dataset("d", data=np.arange(3.0))
        for i in range(1, levels + 1):
            g = f.create_group(f"l{i}")
            g["a"], g["b"] = prev, prev
            prev = g
    return path


def test_hard_link_cycle_lists_each_object_once(site):
    path = _cycle(site.data / "propA" / "cycle.nxs")
    records = {r.path: r.value for r in site.a.metadata(str(path))}
    assert records["/entry/inner/x"] == 1.5
    assert records["/entry/inner/up"] == {"link": "/entry"}  # the cycle shown as a link, not walked
    assert records["/entry/z_again"] == {"link": "/entry/inner"}
    assert len(records) == 3


def test_a_dag_with_huge_fan_in_is_walked_once_per_object(site):
    path = _dag(site.data / "propA" / "dag.nxs")
    assert path.stat().st_size < 40_000
    meta = site.a.metadata(str(path))  # 2**20 paths: a naive walk would not finish
    assert len(meta.records) == 2 * 20 + 1  # one record per link: 40 links plus the dataset
    assert [r.path for r in meta.records if r.path.endswith("/d")] == ["/l0/d"]  # its content listed once


def test_walk_limits_are_caller_errors_not_internal(site, tmp_path):
    deep = tmp_path / "deep.nxs"
    with h5py.File(deep, "w") as f:
        f.create_group("/".join(f"g{i}" for i in range(80)))
    with pytest.raises(errors.InputTooLarge, match="nesting"):
        metadata.extract(deep)
    dag = _dag(tmp_path / "dag.nxs", levels=10)
    with pytest.raises(errors.InputTooLarge, match="records"):
        metadata.extract(dag, limits=metadata.WalkLimits(max_records=5))
    with pytest.raises(errors.InputTooLarge, match="objects"):
        metadata.extract(dag, limits=metadata.WalkLimits(max_objects=3))
    with pytest.raises(errors.InputTooLarge, match="seconds"):
        metadata.extract(_wide(tmp_path / "slow.nxs"), limits=metadata.WalkLimits(max_seconds=0))
    with pytest.raises(errors.JobCancelled):
        metadata.extract(_wide(tmp_path / "wide.nxs"), cancelled=lambda: True)
    assert len(metadata.extract(_wide(tmp_path / "wide2.nxs"), cancelled=lambda: False)) == 600
    a = site.a
    up = a.upload(deep)
    with pytest.raises(errors.InputTooLarge) as info:
        a.metadata(up.uri)
    assert info.value.code.name == "RESOURCE_EXHAUSTED"


def _wide(path, n=600):
    with h5py.File(path, "w") as f:
        for i in range(n):
            f.create_dataset(f"d{i}", data=i)
    return path


def test_a_reference_to_a_missing_file_in_another_proposals_folder_is_refused(site, tmp_path):
    """A link to a file B has not made yet (absolute, or ``../propB/``) would be followed
    once B makes it, in the gap between the check and the read: refused now. A missing file
    in the caller's own folder, or under a folder above every proposal's (the original
    facility's path in a real file, such as /dls/...), stays allowed: nothing of another
    proposal's can appear there."""
    from panreduce.locations import check_hdf5_references, hdf5_roots

    a = site.data / "propA" / "missing"
    a.mkdir(parents=True, exist_ok=True)
    future = site.data / "propB" / "not-yet.nxs"
    assert future.parent.is_dir() and not future.exists()
    cases = {
        "absolute": _external_link(a / "abs.nxs", future),
        "relative": _external_link(a / "rel.nxs", "../../propB/not-yet.nxs"),
        "virtual": _virtual(a / "vds.nxs", future),
    }
    for kind, path in cases.items():
        with h5py.File(path, "r") as f, pytest.raises(errors.PermissionDenied, match="does not exist"):
            check_hdf5_references(f, path, hdf5_roots(path))
        assert not future.exists(), kind
    harmless = {
        "own folder": _external_link(a / "own.nxs", "later/part.h5"),
        "above every proposal": _external_link(a / "facility.nxs", "/dls/i16/data/2024/cm1234-1/part.h5"),
    }
    for kind, path in harmless.items():
        with h5py.File(path, "r") as f:
            check_hdf5_references(f, path, hdf5_roots(path))  # no error
        assert path.exists(), kind
