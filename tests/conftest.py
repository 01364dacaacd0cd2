"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Generator, Iterator

import pytest


def _in_ci() -> bool:
    """CI services (GitHub Actions, GitLab, ...) set ``CI=true``."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None],
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """In CI, a skipped ``real`` test fails: a green run must have run the real models.

    Locally a missing data package, model or server extra skips the test with the reason; in
    CI (``CI=true``) it means the install is broken, so the skip is reported as a failure (an
    error when the skip came from setup: a skipif mark or a fixture) with its reason.
    """
    report = yield
    if (report.skipped and not hasattr(report, "wasxfail") and _in_ci()
            and item.get_closest_marker("real") is not None):
        reason = (report.longrepr[2] if isinstance(report.longrepr, tuple)
                  else str(report.longrepr)).removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = (f"CI=true: a test marked 'real' was skipped (the real models or "
                           f"extras CI needs are not installed): {reason}")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector,
                               ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """In CI, a test module skipped whole at import (``importorskip``) fails collection too.

    Such a skip hides every test in the module before any ``real`` mark can be seen.
    """
    report = yield
    if report.skipped and _in_ci() and isinstance(collector, pytest.Module):
        reason = (report.longrepr[2] if isinstance(report.longrepr, tuple)
                  else str(report.longrepr))
        report.outcome = "failed"
        report.longrepr = f"CI=true: test module {collector.nodeid} was skipped whole: {reason}"
    return report


@pytest.fixture(autouse=True)
def _private_call_cache(tmp_path_factory: pytest.TempPathFactory,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test's LLM-call cache out of the user's cache directory."""
    monkeypatch.setenv("SOCIETIES_CACHE_DIR", str(tmp_path_factory.mktemp("call-cache")))


@pytest.fixture(scope="session")
def llama_server() -> Iterator[str]:
    """A real ``llama_cpp.server`` on loopback serving the bundled SmolLM2 (n_ctx 2048).

    Yields the root URL (``http://127.0.0.1:PORT``; the OpenAI API is under ``/v1``). Started
    once per test session and terminated at its end.
    """
    from societies.backends.bundled import bundled_path
    from societies.errors import UserError
    from tests.servers import start_llama_server, stop_process

    missing = [m for m in ("uvicorn", "fastapi", "sse_starlette", "starlette_context",
                           "pydantic_settings") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"llama_cpp.server needs {', '.join(missing)}: "
                    "pip install 'societies[server]'")
    try:
        model = bundled_path("smollm2")
    except UserError as err:
        pytest.skip(str(err))
    # The prompt cache lets a debate round reuse the KV state of the agent's own first answer.
    url, proc = start_llama_server(model, extra_args=("--cache", "True"))
    try:
        yield url
    finally:
        stop_process(proc)
