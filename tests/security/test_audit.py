"""The gateway's audit log: one record per access decision (logger panreduce.audit),
with subject, proposal, RPC, resource, allowed/denied and reason; through a real
gateway on loopback."""

from __future__ import annotations

import json
import logging

import pytest
from service_support import access_for, proposal_data, toy_platform
from stores_support import STORES, job_store

from panreduce import audit, errors
from panreduce.client import Client


def decisions(caplog) -> list[dict]:
    out = []
    for r in caplog.records:
        if r.name == "panreduce.audit":
            assert json.loads(r.getMessage()) == r.audit  # the line itself is the JSON record
            out.append(r.audit)
    return out


@pytest.mark.parametrize("kind", STORES)
def test_every_decision_is_one_audit_record(tmp_path, caplog, kind, request):
    files = proposal_data(tmp_path)
    with (
        job_store(kind, tmp_path, request) as store,
        toy_platform(tmp_path, access=access_for(tmp_path), store=store) as (_, gw, _),
        caplog.at_level(logging.INFO, logger="panreduce.audit"),
    ):
        with Client(gw.address, timeout=30) as anonymous, pytest.raises(errors.Unauthenticated):
            anonymous.list_jobs()
        with Client(gw.address, token="alice-token", timeout=30) as alice:
            job = alice.submit("toy", [str(files["pA"])], {}, "")
            alice.wait(job.job_id)
            with pytest.raises(errors.PermissionDenied):
                alice.submit("toy", [str(files["pB"])], {}, "")  # bob's file
        with Client(gw.address, token="bob-token", timeout=30) as bob, pytest.raises(errors.JobNotFound):
            bob.get_job(job.job_id)  # alice's job
    records = decisions(caplog)
    by = {(d["rpc"], d["subject"], d["allowed"], d["resource"]) for d in records}
    assert ("ListJobs", "", False, "") in by  # no token
    assert ("Submit", "alice", True, "") in by  # authenticated
    assert ("Submit", "alice", True, str(files["pA"])) in by  # her input
    assert ("Submit", "alice", False, str(files["pB"])) in by  # bob's input refused
    assert ("GetJob", "bob", False, f"job:{job.job_id}") in by  # another proposal's job
    denied_input = next(d for d in records if d["resource"] == str(files["pB"]))
    assert denied_input["proposal"] == "pA" and "PermissionDenied" in denied_input["reason"]
    assert all(set(d) == {"event", "rpc", "subject", "proposal", "resource", "allowed", "reason"} for d in records)


def test_audit_fields_never_grow_with_the_callers_input(caplog):
    with caplog.at_level(logging.INFO, logger="panreduce.audit"):
        doc = audit.decision(
            subject="s" * 10_000,
            resource="/x/" + "a" * 1_000_000,
            allowed=False,
            reason="r" * 50_000,
            rpc="GetMetadata",
        )
    assert max(len(str(v)) for v in doc.values()) < audit.MAX_FIELD + 20
    assert len(caplog.records[-1].getMessage()) < 2_000
    assert caplog.records[-1].levelno == logging.WARNING  # denials stand out
