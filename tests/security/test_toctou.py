"""A symbolic link swapped in between the check and the open (TOCTOU) is never followed:
staging pins the resolved file it checked (panreduce.locations.pin), readers refuse any
other file under that name, and Download opens the resolved path without following a
link on any component. Deterministic swaps first, then a thread that swaps a link in a
loop while proposal A reduces and reads metadata through the real gateway."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from locations_support import SECRET, SECRET_TEXT, two_proposals, write_nexus

from panreduce import errors, locations
from panreduce.kit.readers import open_hdf5, read_array
from panreduce.storage import LocalStore, Stores, stage_inputs


def _swap_in_link(path: Path, target: Path) -> None:
    """Atomically replace ``path`` by a symbolic link to ``target``."""
    tmp = path.with_name(path.name + ".swap")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, path)


def test_open_nofollow_refuses_a_link_on_any_component(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "sub" / "f").write_text("mine")
    (tmp_path / "b" / "f").write_text("theirs")
    fd = locations.open_nofollow(tmp_path / "a" / "sub" / "f")
    assert os.read(fd, 10) == b"mine"
    os.close(fd)
    _swap_in_link(tmp_path / "a" / "sub" / "f", tmp_path / "b" / "f")  # the file itself
    with pytest.raises(errors.PermissionDenied, match="symbolic link appeared"):
        locations.open_nofollow(tmp_path / "a" / "sub" / "f")
    os.rename(tmp_path / "a" / "sub", tmp_path / "a" / "old")  # a folder on the way
    (tmp_path / "a" / "sub").symlink_to(tmp_path / "b", target_is_directory=True)
    with pytest.raises(errors.PermissionDenied, match="symbolic link appeared"):
        locations.open_nofollow(tmp_path / "a" / "sub" / "f")
    with pytest.raises(FileNotFoundError):
        locations.open_nofollow(tmp_path / "a" / "missing")


def test_a_link_swapped_in_after_staging_is_refused_by_the_readers_and_download(tmp_path):
    mine = write_nexus(tmp_path / "data" / "propA" / "x.nxs", 2.0)
    secret = write_nexus(tmp_path / "data" / "propB" / "secret.nxs", SECRET, SECRET_TEXT)
    stores = Stores(tmp_path / "store")
    inputs = stage_inputs(stores, [str(mine)], tmp_path / "scratch")
    (staged,) = inputs.files
    assert staged.path == mine.resolve()
    with open_hdf5(staged) as f:
        assert read_array(f, "entry/data", staged.name)[0] == 2.0
    # the attacker (who may write under A's folder) swaps the checked file for a link to B's
    _swap_in_link(mine, secret)
    with pytest.raises(errors.PermissionDenied, match="changed while it was opened"), open_hdf5(staged):
        pass
    # staged again (a new job): the name is pinned to what it is now, and checked again
    os.unlink(mine)
    write_nexus(mine, 5.0)
    (again,) = stage_inputs(stores, [str(mine)], tmp_path / "scratch2").files
    with open_hdf5(again) as f:
        assert read_array(f, "entry/data", again.name)[0] == 5.0
    local = LocalStore()
    link_free = tmp_path / "data" / "propA" / "plain.bin"
    link_free.write_bytes(b"A's bytes")
    assert b"".join(local.open_read(str(link_free))) == b"A's bytes"


def test_swapping_a_link_in_a_loop_never_gives_a_bs_data(tmp_path):
    """While a thread swaps A's ``x.nxs`` between A's own file and a link to B's secret
    (thousands of times), A reduces it and reads its metadata again and again: every
    answer is A's value, or a refusal (never INTERNAL), never B's."""
    with two_proposals(tmp_path) as site:
        folder = site.data / "propA"
        own = write_nexus(folder / ".own.nxs", 2.0)  # hidden: not listed in folder inputs
        target = folder / "x.nxs"
        os.link(own, target)
        stop = threading.Event()
        swaps = 0

        def swapper() -> None:
            nonlocal swaps
            link = folder / ".link"
            hard = folder / ".hard"
            while not stop.is_set():
                link.unlink(missing_ok=True)
                link.symlink_to(site.secret_file())
                os.replace(link, target)
                hard.unlink(missing_ok=True)
                os.link(own, hard)
                os.replace(hard, target)
                swaps += 1

        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        outcomes = {"A": 0, "refused": 0}
        deadline = time.monotonic() + 6
        try:
            while time.monotonic() < deadline:
                for call in (
                    lambda: site.a.reduce("h5sum", [str(target)], {}).summary["total"],
                    lambda: site.a.metadata(str(target)),
                ):
                    try:
                        answer = call()
                    except errors.PanReduceError as exc:
                        assert exc.code not in ("INTERNAL", "UNKNOWN"), exc
                        assert str(SECRET) not in str(exc) and SECRET_TEXT not in str(exc)
                        outcomes["refused"] += 1
                        continue
                    text = (
                        repr(answer)
                        if not hasattr(answer, "records")
                        else repr([(r.path, r.value) for r in answer.records])
                    )
                    assert str(SECRET) not in text and SECRET_TEXT not in text, text[:300]
                    if isinstance(answer, float):
                        assert answer == pytest.approx(2.0)
                    outcomes["A"] += 1
        finally:
            stop.set()
            thread.join(5)
        print(f"swaps {swaps}, answers with A's data {outcomes['A']}, refused {outcomes['refused']}")
        assert swaps > 100 and sum(outcomes.values()) > 10


def test_swapping_an_output_for_a_link_while_downloading_never_gives_bs_bytes(tmp_path):
    """A's job writes into A's own folder; a thread swaps the output file for a link to
    B's secret and back, in a loop, while A downloads it: A gets her bytes or a refusal."""
    with two_proposals(tmp_path) as site:
        job = site.a.reduce("h5sum", [str(site.data / "propA" / "mine.nxs")], {}, str(site.data / "propA" / "out"))
        out = Path(job.outputs[0].uri)
        mine_bytes = out.read_bytes()
        keep = out.with_name(".keep")
        os.link(out, keep)
        theirs = site.secret_file().read_bytes()
        stop = threading.Event()
        swaps = 0

        def swapper() -> None:
            nonlocal swaps
            while not stop.is_set():
                link, hard = out.with_name(".link"), out.with_name(".hard")
                link.unlink(missing_ok=True)
                link.symlink_to(site.secret_file())
                os.replace(link, out)
                hard.unlink(missing_ok=True)
                os.link(keep, hard)
                os.replace(hard, out)
                swaps += 1

        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        got = {"mine": 0, "refused": 0}
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline:
                dest = tmp_path / "dl.csv"
                dest.unlink(missing_ok=True)
                try:
                    site.a.download(str(out), dest)
                except errors.PanReduceError as exc:
                    assert exc.code not in ("INTERNAL", "UNKNOWN"), exc
                    got["refused"] += 1
                    continue
                data = dest.read_bytes()
                assert data != theirs and SECRET_TEXT.encode() not in data
                assert data == mine_bytes
                got["mine"] += 1
        finally:
            stop.set()
            thread.join(5)
        print(f"swaps {swaps}, downloads of A's bytes {got['mine']}, refused {got['refused']}")
        assert swaps > 100 and got["mine"] + got["refused"] > 10


def test_publishing_never_follows_a_link_swapped_into_the_output_path(tmp_path):
    """A's output folder ``out`` is swapped, in a loop, for a link to B's folder (the real
    folder renamed aside and back) while A's jobs publish into ``out/run-N``: the gateway
    checked and passed on the resolved path, so only the service's own check at publish
    time stands between the swap and B's folder. Every result lands in A's folder or the
    job fails as the caller's (never INTERNAL); nothing appears in B's."""
    with two_proposals(tmp_path) as site:
        a, b = site.data / "propA", site.data / "propB"
        before = sorted(p.name for p in b.rglob("*"))
        out, aside = a / "out", a / ".out-aside"
        out.mkdir()
        stop = threading.Event()
        swaps = 0

        def swapper() -> None:
            nonlocal swaps
            while not stop.is_set():
                try:
                    os.rename(out, aside)
                    os.symlink(b, out, target_is_directory=True)
                    time.sleep(0.0005)
                    os.unlink(out)
                    os.rename(aside, out)
                except OSError:  # a job made a new ``out`` in between (in A's folder): start again
                    shutil.rmtree(aside, ignore_errors=True)
                    continue
                time.sleep(0.0005)
                swaps += 1

        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        landed, refused = 0, 0
        try:
            for i in range(40):
                try:
                    job = site.a.reduce("toy", [str(a / "v.npy")], {}, str(out / f"run-{i}"))
                except errors.PanReduceError as exc:
                    assert exc.code not in ("INTERNAL", "UNKNOWN"), exc
                    refused += 1
                    continue
                landed += len(job.outputs) > 0
        finally:
            stop.set()
            thread.join(5)
        print(f"swaps {swaps}, published in A's folder {landed}, refused {refused}")
        assert sorted(p.name for p in b.rglob("*")) == before
        assert landed > 0 or refused == 40
        assert landed + refused == 40 and swaps > 10


def test_publish_refuses_an_output_folder_resolving_outside_the_jobs_scope(tmp_path):
    from panreduce import scope as scope_mod

    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    (tmp_path / "A" / "out").symlink_to(tmp_path / "B", target_is_directory=True)
    src = tmp_path / "r.txt"
    src.write_text("result")
    store = LocalStore()
    with scope_mod.active(scope_mod.Scope.of([str(tmp_path / "A") + "/"])):
        with pytest.raises(errors.PermissionDenied, match="not written"):
            store.publish([(src, "r.txt")], str(tmp_path / "A" / "out"))
        (uri,) = store.publish([(src, "sub/r.txt")], str(tmp_path / "A" / "mine"))
    assert Path(uri).read_text() == "result" and not list((tmp_path / "B").iterdir())
    with pytest.raises(errors.FailedPrecondition, match="overwrite"):
        store.publish([(src, "sub/r.txt")], str(tmp_path / "A" / "mine"))
