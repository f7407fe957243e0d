"""Fault injection at the job level: the S3 server stops answering while a job stages
its inputs. The job fails as UNAVAILABLE (a server-side condition the caller may retry,
never INTERNAL and never the caller's fault), publishes nothing, and the same request
succeeds once S3 is back."""

from __future__ import annotations

import io

import numpy as np
import pytest
from s3_faults import Fault

from panreduce import errors
from panreduce.client import Client
from panreduce.kit.server import start_technique
from panreduce.kit.toy import Toy
from panreduce.storage import Stores

pytestmark = pytest.mark.s3

MiB = 1 << 20


def test_s3_stopped_mid_staging_fails_unavailable_then_recovers(s3, s3_prefix, fault_proxy, tmp_path):
    buf = io.BytesIO()
    a = np.arange(12 * MiB // 8, dtype=float)  # 12 MiB: three ranged reads
    np.save(buf, a)
    (tmp_path / "a.npy").write_bytes(buf.getvalue())
    (uri,) = s3.publish([(tmp_path / "a.npy", "a.npy")], s3_prefix + "raw")

    stores = Stores(tmp_path / "store")
    stores.register(
        "s3",
        s3.with_config(
            endpoint=fault_proxy.endpoint,
            part_size=5 * MiB,
            concurrency=2,
            init_backoff=0.02,
            max_backoff=0.05,
            max_retries=2,
            retry_timeout=5.0,
        ),
    )
    server = start_technique(Toy, stores=stores)
    try:
        # the first range is served, then the server "stops": every later read is 503
        served = {"n": 0}

        def after_first_range(method: str, path: str, headers: dict) -> bool:
            if method == "GET" and "range" in headers:
                served["n"] += 1
                return served["n"] > 1
            return False

        fault_proxy.clear()
        fault_proxy.add(Fault(after_first_range, status=503, times=10_000))
        out = s3_prefix + "results/job1/"
        with Client(server.address, timeout=120) as c:
            with pytest.raises(errors.PanReduceError) as failed:
                c.reduce("toy", [uri], {"scale": 1.0}, out)
            assert failed.value.code.name == "UNAVAILABLE", failed.value
            assert not isinstance(failed.value, errors.InternalError)
            assert served["n"] > 1  # it did stop mid-staging, after a range was read
            with pytest.raises(errors.InputNotFound):
                s3.list(out)  # nothing published

            # S3 is back: the same request succeeds
            fault_proxy.clear()
            done = c.reduce("toy", [uri], {"scale": 1.0}, out)
            assert done.summary["total"] == pytest.approx(float(a.sum()))
            assert sorted(r.name for r in s3.list(out)) == ["provenance.json", "toy.csv", "toy.nxs"]
    finally:
        server.drain_and_stop(1)
