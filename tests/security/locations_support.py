"""Shared set-up of the location and HDF5-link attack tests (tests/security has no
conftest: others add files to this folder too).

:func:`two_proposals` starts, on loopback, two real technique services (the kit's toy,
which reads .npy files, and :class:`H5Sum`, which reads HDF5 through the kit's
``open_hdf5``) behind a real gateway with a tokens file for proposals ``propA`` and
``propB`` and ``--allowed-prefix DATA/{proposal}/``. Proposal B's files hold the marker
:data:`SECRET`; no answer to A may ever contain it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import h5py
import numpy as np
import pytest
from pydantic import Field

from panreduce import errors
from panreduce.client import Client
from panreduce.jobs import JobStore
from panreduce.kit import Context, Inputs, Parameters, Technique
from panreduce.kit.readers import open_hdf5, read_array
from panreduce.kit.server import start_technique
from panreduce.kit.toy import Toy
from panreduce.serving import start_server
from panreduce.storage import Stores
from panreduce_gateway.auth import Access, StaticTokens
from panreduce_gateway.gateway import GatewayConfig, GatewayService

SECRET = 73519.25  # the value in every file of proposal B
SECRET_TEXT = "B-ONLY-sample-name"
REFUSED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


class H5SumParameters(Parameters):
    scale: float = Field(1.0, gt=0, le=1000, description="factor applied to the sum (dimensionless)")


class H5Sum(Technique[H5SumParameters, list]):
    """Sums /entry/data of HDF5 inputs, read through the kit's open_hdf5 (tests)."""

    name = "h5sum"
    version = "1.0.0"
    title = "HDF5 sum (tests)"
    description = "Sums /entry/data of HDF5 files"
    Parameters = H5SumParameters
    input_kinds = ("nexus",)
    output_formats = ("csv",)

    def load(self, inputs: Inputs, params: H5SumParameters, ctx: Context) -> list:
        arrays = []
        for f in inputs.files:
            with open_hdf5(f) as h5:
                arrays.append(read_array(h5, "entry/data", f.name))
        return arrays

    def reduce(self, data: list, params: H5SumParameters, ctx: Context) -> dict:
        total = float(sum(float(np.sum(a)) for a in data)) * params.scale
        ctx.output_path("sum.csv", format="csv", role="table").write_text(f"total\n{total}\n")
        return {"total": total}


def write_nexus(path: Path, value: float, sample: str = "A's own sample") -> Path:
    """A small NeXus file: /entry/data = [value], /entry/sample/name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.create_dataset("data", data=np.array([value]))
        sample_group = entry.create_group("sample")
        sample_group.attrs["NX_class"] = "NXsample"
        sample_group.create_dataset("name", data=sample)
    return path


@dataclass
class Site:
    """What :func:`two_proposals` yields."""

    address: str
    data: Path
    store: Path
    a: Client
    b: Client

    def secret_file(self) -> Path:
        return self.data / "propB" / "secret.nxs"


def two_proposal_access(root: Path, data: Path) -> Access:
    """Access for alice (token-a, propA) and bob (token-b, propB), each limited to
    ``data/<proposal>/``; the tokens file is written in ``root``."""
    tokens = root / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "tokens": [
                    {"token": "token-a", "subject": "alice", "proposals": ["propA"]},
                    {"token": "token-b", "subject": "bob", "proposals": ["propB"]},
                ]
            }
        )
    )
    return Access([StaticTokens.from_file(tokens)], prefixes=[str(data) + "/{proposal}/"])


@contextmanager
def two_proposals(tmp_path: Path, job_store: JobStore | None = None) -> Iterator[Site]:
    """The site; ``job_store``: the gateway's job table (default in memory)."""
    data = tmp_path / "data"
    for p in ("propA", "propB", "propAB"):
        (data / p).mkdir(parents=True)
    np.save(data / "propA" / "v.npy", np.arange(5.0))
    np.save(data / "propB" / "secret.npy", np.full(3, SECRET))
    np.save(data / "propAB" / "v.npy", np.full(3, SECRET))
    write_nexus(data / "propA" / "mine.nxs", 2.0)
    write_nexus(data / "propB" / "secret.nxs", SECRET, SECRET_TEXT)
    access = two_proposal_access(tmp_path, data)
    stores = Stores(tmp_path / "store")
    toy = start_technique(Toy, stores=stores)
    h5 = start_technique(H5Sum, stores=stores)
    gateway = GatewayService(
        {"toy": toy.address, "h5sum": h5.address}, stores=stores, store=job_store, config=GatewayConfig(access=access)
    )
    gw = start_server(gateway, name="gateway", manager=gateway.manager)
    gw.set_serving(True)
    a = Client(gw.address, token="token-a", timeout=30)
    b = Client(gw.address, token="token-b", timeout=30)
    try:
        yield Site(gw.address, data, tmp_path / "store", a, b)
    finally:
        a.close()
        b.close()
        gw.drain_and_stop(2)
        gateway.close()
        toy.drain_and_stop(2)
        h5.drain_and_stop(2)


def refused(call: Callable[[], object], *secrets: str) -> errors.PanReduceError:
    """Run an attack: it must fail with PERMISSION_DENIED, NOT_FOUND or INVALID_ARGUMENT
    (never INTERNAL), and its message must hold neither B's marker nor ``secrets``."""
    with pytest.raises(errors.PanReduceError) as info:
        call()
    exc = info.value
    assert exc.code in REFUSED, f"{exc.code}: {exc}"
    text = f"{exc} {exc.metadata}"
    for s in (repr(SECRET), str(SECRET), SECRET_TEXT, *secrets):
        assert s not in text
    return exc
