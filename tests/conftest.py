import pytest

import gradcheck

pytest_plugins = ["pytester"]


@pytest.fixture(params=gradcheck.available_backends())
def backend(request):
    """Every backend available here, in turn."""
    return gradcheck.get_backend(request.param)
