"""The HDF5 reference listing is done once per unchanged file (the catalogue and the
technique's reader open the same input), and never trusted for a file that changed:
what the names resolve to is checked on every open."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest

from panreduce import errors, locations


@pytest.fixture
def walks(monkeypatch):
    """Stable after 50 ms (not 2 s) so that the test is quick; counts the real walks."""
    monkeypatch.setattr(locations, "REFERENCES_STABLE_S", 0.05)
    monkeypatch.setattr(locations, "_REFERENCES_CACHE", type(locations._REFERENCES_CACHE)())
    calls = []
    real = locations._list_references

    def counted(f, max_objects):
        calls.append(f.filename)
        return real(f, max_objects)

    monkeypatch.setattr(locations, "_list_references", counted)
    return calls


def _write(path, link_to=None):
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry["data"] = np.arange(3.0)
        if link_to is not None:
            entry["detector"] = h5py.ExternalLink(str(link_to), "/entry")


def _check(path, roots):
    with h5py.File(path, "r") as f:
        locations.check_hdf5_references(f, path, roots)


def test_an_unchanged_file_is_walked_once(tmp_path, walks):
    data = tmp_path / "scan.nxs"
    _write(data)
    time.sleep(0.1)
    for _ in range(3):
        _check(data, [tmp_path])
    assert walks == [str(data)]


def test_a_changed_file_is_walked_again_and_its_new_link_refused(tmp_path, walks):
    inside, outside = tmp_path / "a", tmp_path / "b"
    inside.mkdir()
    outside.mkdir()
    _write(outside / "secret.nxs")
    data = inside / "scan.nxs"
    _write(data)
    time.sleep(0.1)
    _check(data, [inside])
    _write(data, link_to=outside / "secret.nxs")  # rewritten: new ctime
    time.sleep(0.1)
    with pytest.raises(errors.PermissionDenied, match="points outside"):
        _check(data, [inside])
    assert len(walks) == 2


def test_a_file_written_just_now_is_not_remembered(tmp_path, walks):
    data = tmp_path / "scan.nxs"
    _write(data)
    _check(data, [tmp_path])
    _check(data, [tmp_path])
    assert len(walks) == 2


def test_remembered_names_are_resolved_again_on_every_check(tmp_path, walks):
    """The remembered listing is resolved again on every check: a link to a file that does
    not exist yet, in a folder outside the roots, is refused as missing (a file made there
    later would be followed); once the target appears, the same listing is refused as
    pointing outside; a link to a file not made yet inside the roots passes, and is refused
    once it resolves outside (the name turned into a link)."""
    inside, outside = tmp_path / "a", tmp_path / "b"
    inside.mkdir()
    outside.mkdir()
    data = inside / "scan.nxs"
    _write(data, link_to=outside / "later.nxs")
    time.sleep(0.1)
    with pytest.raises(errors.PermissionDenied, match="does not exist"):
        _check(data, [inside])
    _write(outside / "later.nxs")
    with pytest.raises(errors.PermissionDenied, match="points outside"):
        _check(data, [inside])
    own = inside / "own.nxs"
    _write(own, link_to=inside / "part.nxs")
    time.sleep(0.1)
    _check(own, [inside])  # not made yet, in the caller's own folder: allowed
    (inside / "part.nxs").symlink_to(outside / "later.nxs")
    with pytest.raises(errors.PermissionDenied, match="points outside"):
        _check(own, [inside])
    assert walks == [str(data), str(own)]
