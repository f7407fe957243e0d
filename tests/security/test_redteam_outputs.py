"""Red team (issue 12): outputs after the fact. A's finished job's output folder replaced
by a link to B's output folder (same file names): Download, GetMetadata and a new Reduce
of A's recorded outputs resolve the link and refuse; an output naming an input file is the
caller's mistake before anything runs. (All refused already: kept as regression tests.)"""

from __future__ import annotations

import os
import shutil

import pytest
from locations_support import SECRET, refused, two_proposals


@pytest.fixture
def site(tmp_path):
    with two_proposals(tmp_path) as s:
        yield s


def test_a_finished_jobs_output_folder_swapped_for_a_link_to_bs(site, tmp_path):
    d, a, b = site.data, site.a, site.b
    theirs = b.reduce("toy", [str(d / "propB" / "secret.npy")], {}, str(d / "propB" / "out") + "/")
    mine = a.reduce("toy", [str(d / "propA" / "v.npy")], {}, str(d / "propA" / "out") + "/")
    assert {o.uri.rsplit("/", 1)[1] for o in mine.outputs} == {o.uri.rsplit("/", 1)[1] for o in theirs.outputs}
    shutil.rmtree(d / "propA" / "out")
    os.symlink(d / "propB" / "out", d / "propA" / "out")
    for o in mine.outputs:
        exc = refused(lambda o=o: a.download(o.uri, tmp_path / "got"))
        assert exc.code.name == "PERMISSION_DENIED"
        refused(lambda o=o: a.metadata(o.uri))
    refused(lambda: a.reduce("toy", [str(d / "propA" / "out") + "/"], {}))
    assert not (tmp_path / "got").exists()
    assert b.download(theirs.outputs[0].uri, tmp_path / "b.nxs").size == theirs.outputs[0].size
    assert str(SECRET) not in str(mine.summary)


def test_an_output_naming_an_input_is_refused_before_the_job_runs(site):
    d, a = site.data, site.a
    v = d / "propA" / "v.npy"
    before = v.read_bytes()
    for out in (str(v), str(v) + "/", f"file://{v}"):
        exc = refused(lambda out=out: a.reduce("toy", [str(v)], {}, out))
        assert exc.code.name == "INVALID_ARGUMENT" and "existing file" in str(exc)
    assert v.read_bytes() == before
