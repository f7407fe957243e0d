"""Shared fixtures: real facility files from the dataset registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from panreduce import datasets


def _missing(exc: Exception) -> None:
    # Under CI the data must be there: a missing file is a failure, not a skip.
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(str(exc))
    pytest.skip(str(exc))


@pytest.fixture(scope="session")
def dataset():
    """``dataset("i16-scans/794932.nxs")`` -> verified local Path (skip, or fail under CI)."""

    def get(name: str) -> Path:
        try:
            return datasets.path(name)
        except datasets.DatasetMissing as exc:
            _missing(exc)
            raise  # unreachable

    return get


@pytest.fixture(scope="session")
def dataset_folder():
    """``dataset_folder("tomo/savu-tiff")`` -> verified local folder."""

    def get(prefix: str) -> Path:
        try:
            return datasets.folder(prefix)
        except datasets.DatasetMissing as exc:
            _missing(exc)
            raise

    return get
