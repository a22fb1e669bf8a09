"""The whole local stack per test (Temporal, Redis, the paper exchange, real processes) for the parity
test: the fixture of tests/workflows, reused as it is."""

from tests.workflows.conftest import stack  # noqa: F401
