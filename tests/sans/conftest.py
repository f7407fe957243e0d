"""Fixtures of the sans tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def gfp(dataset_folder):
    """The raw/ and mantid-files/ folders of the LOQ GFP data set."""
    return dataset_folder("loq-gfp/raw"), dataset_folder("loq-gfp/mantid-files")
