"""Hypothesis profiles for the property tests, and the ``slow`` marker.

* ``ci`` (the default): a fixed seed (``derandomize=True``), a bounded number
  of examples per property, no per-example deadline (every fuzz test bounds
  its own time). The whole property suite takes a few minutes on 2 cores.
* ``slow``: many more examples, random seeds. Select it with
  ``pytest --hypothesis-profile=slow``, ``TCC_HYPOTHESIS=slow pytest`` or
  ``pytest -m slow`` (which also runs the tests marked ``slow``).

Each property asks for a multiple of the profile's ``max_examples``
(``strategies.scaled``): with ``ci`` (100) the printing round trip runs 400
programs, backends-vs-interpreter 200, the two finite-difference checks and
the printed backward 100 each, determinism 200; the fuzz tests 200 to 800
inputs. ``slow`` (1000) runs ten times as many. ``dev`` (10) is for editing
the strategies.

Tests marked ``@pytest.mark.slow`` are skipped unless the slow profile or
``-m slow`` is selected. The examples each property ran are printed at the
end of the run (``hypothesis`` statistics: ``pytest --hypothesis-show-statistics``).
"""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, Phase, settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
          HealthCheck.large_base_example]

# report_multiple_bugs=False: on a failure, shrink and report one example
# only, so that a broken build still finishes in minutes.
settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=100, database=None,
    suppress_health_check=_QUIET, print_blob=True, report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink])
settings.register_profile(
    "slow", deadline=None, max_examples=1000, suppress_health_check=_QUIET, print_blob=True)
settings.register_profile(
    "dev", deadline=None, max_examples=10, derandomize=True, database=None,
    suppress_health_check=_QUIET)

_PROFILE = "ci"


def _wanted_profile(config) -> str:
    chosen = None
    try:
        chosen = config.getoption("hypothesis_profile")
    except (ValueError, AttributeError):
        chosen = None
    chosen = chosen or os.environ.get("TCC_HYPOTHESIS")
    markexpr = getattr(config.option, "markexpr", "") or ""
    if not chosen and "slow" in markexpr and "not slow" not in markexpr:
        chosen = "slow"
    return chosen or "ci"


def _slow_requested(config) -> bool:
    markexpr = getattr(config.option, "markexpr", "") or ""
    return _PROFILE == "slow" or ("slow" in markexpr and "not slow" not in markexpr)


def pytest_configure(config):
    global _PROFILE
    config.addinivalue_line("markers", "slow: long property-based runs (pytest -m slow)")
    config.addinivalue_line("markers", "property: a hypothesis property test (runs with the "
                                       "ci profile by default, the slow one under -m slow)")
    _PROFILE = _wanted_profile(config)
    settings.load_profile(_PROFILE)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    slow = _slow_requested(config)
    markexpr = getattr(config.option, "markexpr", "") or ""
    for item in items:
        is_property = item.get_closest_marker("property") and \
            getattr(getattr(item, "obj", None), "is_hypothesis_test", False)
        if slow and "slow" in markexpr and is_property:
            item.add_marker(pytest.mark.slow)   # `pytest -m slow` runs every property
        elif not slow and item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.skip(reason="long run: use pytest -m slow or "
                                                    "TCC_HYPOTHESIS=slow"))

