import os

import pytest
from hypothesis import HealthCheck, settings

import gradcheck

pytest_plugins = ["pytester"]

# "ci" is fixed and derandomised, so every run checks the same networks; "thorough" explores.
# Choose with --hypothesis-profile=thorough (or HYPOTHESIS_PROFILE=thorough).
_slow = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "ci", max_examples=25, derandomize=True, deadline=None, suppress_health_check=_slow
)
settings.register_profile("thorough", max_examples=400, deadline=None, suppress_health_check=_slow)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=gradcheck.available_backends())
def backend(request):
    """Every backend available here, in turn."""
    return gradcheck.get_backend(request.param)
