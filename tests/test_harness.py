"""The test run itself: what `make test` relies on to stay quick."""

import pytest


@pytest.mark.xdist_group("harness")
def test_xdist_keeps_each_group_on_one_worker(request):
    """`make test` runs `--dist loadgroup`, so that the modules with costly module fixtures (trained models, servers)
    build them once, on one worker. A pytest and pytest-xdist pair that disagree ignore the groups without a word."""
    if not request.config.getoption("loadgroup", False):
        pytest.skip("not a --dist loadgroup worker")
    assert request.node.nodeid.endswith("@harness"), "pytest-xdist ignores xdist_group with this pytest"
