"""The pytest plugin, end to end: each test writes a small project with
pytester and runs pytest on it in a subprocess (the plugin loads from its
entry point, the binary is the one the wheel installed or $LLMTAPE_BIN),
against a mock upstream on 127.0.0.1:0. Requests use urllib, so these
tests need no SDK."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import mock_upstream  # noqa: E402

# A request as a test in the written project makes it: a chat completion
# through the proxy at OPENAI_BASE_URL.
CLIENT = '''
import json, os, urllib.request, urllib.error

def ask(question, headers=None, swallow=False):
    body = json.dumps({"model": "gpt-4o-mini", "seed": 1,
                       "messages": [{"role": "user", "content": question}]}).encode()
    req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", body,
                                 {"content-type": "application/json",
                                  "authorization": "Bearer " + os.environ.get("OPENAI_API_KEY", ""),
                                  **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())["choices"][0]["message"]["content"]
    except urllib.error.HTTPError as e:
        if swallow:
            return None
        raise
'''


@pytest.fixture
def upstream(monkeypatch):
    server, url = mock_upstream.serve()
    monkeypatch.setenv("LLMTAPE_UPSTREAM", url)
    yield url
    server.shutdown()


@pytest.fixture
def project(pytester, monkeypatch):
    for name in ("CI", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL",
                 "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(client=CLIENT)
    return pytester


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args,
                                         timeout=120)


def fixture_files(pytester, folder="tests/fixtures/llmtape"):
    root = pytester.path / folder
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.json")) if root.is_dir() else []


def test_auto_records_a_miss_then_replay_answers_it_offline(project, upstream, monkeypatch):
    project.makepyfile(test_one='''
from client import ask
def test_ask(llmtape):
    first = ask("hello")
    assert first.startswith("mock answer")
    assert ask("hello") == first
    assert len(llmtape.recordings) == (1 if llmtape.mode == "auto" else 0)
''')
    result = run(project)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["llmtape mode=auto fixtures=*: 1 hits, 1 misses, 1 new recordings"])
    assert len(fixture_files(project)) == 1
    # Replay: no upstream at all, no key; the CI default.
    monkeypatch.setenv("LLMTAPE_UPSTREAM", "http://127.0.0.1:9")
    monkeypatch.setenv("CI", "true")
    result = run(project)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["llmtape mode=replay fixtures=*: 2 hits, 0 misses, 0 new recordings"])


def test_a_replay_miss_fails_the_test_that_caused_it_even_when_swallowed(project, upstream):
    project.makepyfile(test_miss='''
from client import ask
def test_hit():
    assert ask("known")
def test_swallowed_miss():
    assert ask("unknown", swallow=True) is None   # the client hid the 404
def test_after():
    assert ask("known")
''')
    run(project, "--llmtape=auto", "-k", "hit").assert_outcomes(passed=1, deselected=2)
    (recorded,) = (project.path / "tests/fixtures/llmtape").rglob("*.json")
    known = json.loads(recorded.read_text())["key"]
    result = run(project, "--llmtape=replay")
    result.assert_outcomes(passed=2, failed=1)
    # The nearest recording comes from serve's log line (nearest=KEY): the
    # test never saw the 404 that names it.
    result.stdout.fnmatch_lines([
        "*test_swallowed_miss*",
        "llmtape: 1 replay miss(es) in this test*",
        f"  POST /v1/chat/completions (key *); the nearest recording is {known}",
    ])
    assert "FAILED test_miss.py::test_swallowed_miss" in result.stdout.str()


def test_a_test_that_expects_a_miss_takes_it_and_only_that_miss(project):
    project.makepyfile(test_expect='''
from client import ask
def test_expected(llmtape):
    assert ask("unknown", swallow=True) is None
    (miss,) = llmtape.take_misses()
    assert (miss["method"], miss["path"], miss["status"]) == ("POST", "/v1/chat/completions", "404")
    assert llmtape.take_misses() == []
def test_a_later_miss_still_fails(llmtape):
    ask("unknown", swallow=True)
    assert len(llmtape.take_misses()) == 1
    ask("other", swallow=True)
''')
    result = run(project, "--llmtape=replay")
    result.assert_outcomes(passed=1, failed=1)
    assert "FAILED test_expect.py::test_a_later_miss_still_fails" in result.stdout.str()
    result.stdout.fnmatch_lines(["llmtape: 1 replay miss(es) in this test*"])


def test_a_miss_with_nothing_recorded_names_no_nearest_recording(project):
    project.makepyfile(test_miss='''
from client import ask
def test_nothing_recorded():
    assert ask("unknown", swallow=True) is None
''')
    result = run(project, "--llmtape=replay")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["  POST /v1/chat/completions (key *)"])
    assert "the nearest recording is" not in result.stdout.str()


def test_replay_sets_the_base_urls_and_dummy_keys_before_conftest_is_imported(project):
    project.makeconftest('''
import os
SEEN = {k: os.environ.get(k) for k in
        ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
''')
    project.makepyfile(test_env='''
from conftest import SEEN
def test_env(llmtape):
    assert SEEN["OPENAI_BASE_URL"] == llmtape.base_url == llmtape.url + "/v1"
    assert SEEN["ANTHROPIC_BASE_URL"] == llmtape.url
    assert SEEN["OPENAI_API_KEY"] == "sk-test-dummy"
    assert SEEN["ANTHROPIC_API_KEY"].startswith("sk-ant-test")
''')
    run(project, "--llmtape=replay").assert_outcomes(passed=1)


def test_a_key_already_set_is_kept_in_replay(project, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-mine")
    project.makepyfile(test_env='''
import os
def test_env():
    assert os.environ["OPENAI_API_KEY"] == "sk-test-mine"
''')
    run(project, "--llmtape=replay").assert_outcomes(passed=1)


def test_off_starts_no_proxy(project):
    project.makepyfile(test_env='''
import os
def test_env():
    assert "OPENAI_BASE_URL" not in os.environ
''')
    result = run(project, "--llmtape=off")
    result.assert_outcomes(passed=1)
    assert "llmtape mode=" not in result.stdout.str()


def test_ini_options_and_the_fixtures_flag(project, upstream):
    project.makeini('''
[pytest]
llmtape = auto
llmtape_fixtures = recorded
''')
    project.makepyfile(test_one='''
from client import ask
def test_ask(llmtape):
    assert ask("ini")
    (recording,) = llmtape.recordings
    assert recording.is_relative_to(llmtape.fixtures)
''')
    run(project).assert_outcomes(passed=1)
    assert len(fixture_files(project, "recorded")) == 1
    run(project, "--llmtape-fixtures", "elsewhere").assert_outcomes(passed=1)
    assert len(fixture_files(project, "elsewhere")) == 1


def test_the_marker_sets_namespace_and_mode_headers(project, upstream):
    project.makepyfile(test_marker='''
import pytest
from client import ask

@pytest.mark.llmtape(namespace="suite-a", mode="replay")
def test_marked(llmtape):
    assert llmtape.headers == {"x-llmtape-mode": "replay", "x-llmtape-namespace": "suite-a"}
    assert ask("ns", headers=llmtape.headers, swallow=True) is None

@pytest.mark.llmtape(mode="off")
def test_off_passes_through(llmtape):
    assert llmtape.headers == {"x-llmtape-mode": "passthrough"}
    assert ask("passed through", headers=llmtape.headers).startswith("mock answer")

@pytest.mark.llmtape(mode="sometimes")
def test_bad_mode(llmtape):
    pass
''')
    result = run(project, "--llmtape=auto")
    result.assert_outcomes(failed=1, passed=1, errors=1)
    result.stdout.fnmatch_lines(["llmtape: 1 replay miss(es) in this test*"])
    result.stdout.fnmatch_lines(["*@pytest.mark.llmtape(mode='sometimes'): expected replay, record, auto or off*"])
    assert fixture_files(project) == []


def test_record_rerecords_what_is_there(project, upstream):
    project.makepyfile(test_one='''
from client import ask
def test_ask():
    assert ask("again")
''')
    run(project, "--llmtape=auto").assert_outcomes(passed=1)
    (path,) = (project.path / "tests/fixtures/llmtape").rglob("*.json")
    before = json.loads(path.read_text())
    result = run(project, "--llmtape=record")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["llmtape mode=record *: 0 hits, 1 misses, 1 new recordings"])
    after = json.loads(path.read_text())
    assert after["response"] != before["response"] and len(after["history"]) == 1


def test_xdist_runs_one_proxy_per_worker(project, upstream, monkeypatch):
    if not os.environ.get("CI"):
        pytest.importorskip("xdist")
    project.makepyfile(test_many='''
import os, pytest
from client import ask
@pytest.mark.parametrize("n", range(6))
def test_ask(n, llmtape):
    assert ask(f"q{n}")
    print(os.environ.get("PYTEST_XDIST_WORKER"), llmtape.url)
''')
    run(project, "--llmtape=auto", "-n", "2").assert_outcomes(passed=6)
    assert len(fixture_files(project)) == 6
    monkeypatch.setenv("LLMTAPE_UPSTREAM", "http://127.0.0.1:9")
    result = run(project, "--llmtape=replay", "-n", "2")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["llmtape mode=replay *: 6 hits, 0 misses, 0 new recordings"])
