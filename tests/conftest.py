"""Tests that read the shared real-Caffe fixtures (../shared) are skipped, with the
reason, when they are absent; everything else still runs."""
import sys

import pytest

from . import shared


def _reads_fixtures(module):
    if module is None:
        return False
    return any(getattr(module, n, None) is getattr(shared, n) for n in shared.FIXTURE_NAMES) \
        or getattr(module, "NEEDS_SHARED", False)


def pytest_collection_modifyitems(config, items):
    if shared.SHARED_PRESENT:
        return
    skip = pytest.mark.skip(reason=shared.SKIP_REASON)
    for item in items:
        if _reads_fixtures(sys.modules.get(item.module.__name__) if item.module else None):
            item.add_marker(skip)
