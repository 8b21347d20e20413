"""The pytest plugin: one `llmtape serve` per session (per worker under
pytest-xdist) on 127.0.0.1:0, serving the fixtures folder.

- `--llmtape=replay|record|auto|off` (ini `llmtape`; default `replay` when
  `$CI` is set, else `auto`), `--llmtape-fixtures DIR` (ini
  `llmtape_fixtures`; default `tests/fixtures/llmtape`, from the rootdir).
- Started before conftest files are imported, so `OPENAI_BASE_URL` (the
  proxy's `/v1`) and `ANTHROPIC_BASE_URL` are set before any client is
  built; in replay, `OPENAI_API_KEY` and `ANTHROPIC_API_KEY` get dummy values
  when unset, so CI needs no secret.
- How a replay miss fails the test that caused it, even when the client
  swallowed the 404: the proxy writes one log line per request (its stderr
  goes to a file); after each test the plugin reads the lines written since
  the test began (synchronised with the proxy's miss counter in
  `/_llmtape/metrics`, so a line still being written is waited for, at most
  `MISS_LOG_WAIT`) and fails the test with each miss's method, path and
  key, and the nearest recording (the line's `nearest=KEY`).
- New recordings (record, auto) are the fixture files created or rewritten
  while the test ran.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from .server import LlmtapeError, Server, start

#: The longest wait for the proxy's log to show a miss its counter shows.
MISS_LOG_WAIT = 2.0
DEFAULT_FIXTURES = "tests/fixtures/llmtape"
DUMMY_KEYS = {"OPENAI_API_KEY": "sk-test-dummy", "ANTHROPIC_API_KEY": "sk-ant-test-dummy"}
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def pytest_addoption(parser):
    group = parser.getgroup("llmtape", "record and replay LLM API calls through llmtape")
    group.addoption("--llmtape", dest="llmtape_mode", default=None,
                    choices=["replay", "record", "auto", "off"],
                    help="replay: answer from the fixtures only, a miss fails the test; "
                         "record: re-record every call; auto: replay, record misses; "
                         "off: no proxy (default: replay when $CI is set, else auto)")
    group.addoption("--llmtape-fixtures", dest="llmtape_fixtures", default=None, metavar="DIR",
                    help=f"fixtures folder (default: {DEFAULT_FIXTURES})")
    parser.addini("llmtape", "llmtape mode: replay, record, auto or off", default=None)
    parser.addini("llmtape_fixtures", "llmtape fixtures folder", default=None)


def _option(config, name):
    # Early (pytest_load_initial_conftests) only the known args are parsed.
    # config.option may hold only defaults then, so the known args come first.
    value = getattr(getattr(config, "known_args_namespace", None), name, None)
    if value is None:
        value = getattr(config.option, name, None)
    return value


def _mode(config) -> str:
    mode = _option(config, "llmtape_mode") or config.getini("llmtape")
    if not mode:
        mode = "replay" if os.environ.get("CI") else "auto"
    if mode not in ("replay", "record", "auto", "off"):
        raise pytest.UsageError(f"llmtape = {mode!r} in the ini file: expected replay, record, auto or off")
    return mode


def _fixtures(config) -> Path:
    value = _option(config, "llmtape_fixtures") or config.getini("llmtape_fixtures") \
        or DEFAULT_FIXTURES
    path = Path(value)
    return path if path.is_absolute() else Path(config.rootpath) / path


def _is_xdist_controller(config) -> bool:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return False
    # xdist turns --dist=no into load only later, when it sees -n.
    return bool(_option(config, "numprocesses"))


def _snapshot(folder: Optional[Path]) -> Dict[str, int]:
    if folder is None or not folder.is_dir():
        return {}
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*.json")}


def _changed(before: Dict[str, int], after: Dict[str, int]) -> List[str]:
    return sorted(p for p, m in after.items() if before.get(p) != m)


class Session:
    """The session's proxy and what it has counted."""

    def __init__(self, config, mode: str, fixtures: Path):
        self.config = config
        self.mode = mode
        self.fixtures = fixtures
        self.server: Optional[Server] = None
        self.saved_env: Dict[str, Optional[str]] = {}
        self.log_offset = 0
        self.misses_seen = 0.0
        self.start_files: Dict[str, int] = {}
        self.hits_at_start = 0.0
        self.stats = None

    def start(self) -> None:
        if self.mode == "off":
            return
        self.fixtures.mkdir(parents=True, exist_ok=True)
        self.start_files = _snapshot(self.fixtures)
        try:
            self.server = start(mode=self.mode, fixtures=self.fixtures)
        except LlmtapeError as e:
            raise pytest.UsageError(f"llmtape: {e}") from e
        env = {"OPENAI_BASE_URL": self.server.base_url, "ANTHROPIC_BASE_URL": self.server.url}
        if self.mode == "replay":
            for name, value in DUMMY_KEYS.items():
                if not os.environ.get(name):
                    env[name] = value
        for name, value in env.items():
            self.saved_env[name] = os.environ.get(name)
            os.environ[name] = value

    def stop(self) -> None:
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _misses_counted(self) -> float:
        return self.server.metrics().get('llmtape_requests_total{outcome="miss"}', 0.0)

    def new_log_lines(self) -> List[Dict[str, str]]:
        """The proxy's request lines written since the last call."""
        with open(self.server.log_path, "rb") as f:
            f.seek(self.log_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.log_offset += end
        out = []
        for line in data[:end].decode(errors="replace").splitlines():
            if " llmtape::serve::proxy: request " not in line:
                continue
            fields = {k: (v[1:-1] if v.startswith('"') else v) for k, v in _FIELD.findall(line)}
            out.append(fields)
        return out

    def requests_since_last_check(self) -> List[Dict[str, str]]:
        """Request lines up to now, waiting for the log to show every miss
        the proxy has counted."""
        counted = self._misses_counted()
        lines = self.new_log_lines()
        seen = self.misses_seen + sum(1 for f in lines if f.get("outcome") == "miss")
        deadline = time.monotonic() + MISS_LOG_WAIT
        while seen < counted and time.monotonic() < deadline:
            time.sleep(0.02)
            more = self.new_log_lines()
            lines += more
            seen += sum(1 for f in more if f.get("outcome") == "miss")
        self.misses_seen = seen
        return lines

    def summary(self) -> Dict[str, float]:
        if self.stats is not None:
            return self.stats
        if self.server is None:
            return {}
        m = self.server.metrics()
        self.stats = {
            "hits": m.get('llmtape_requests_total{outcome="hit"}', 0.0),
            "misses": m.get('llmtape_requests_total{outcome="miss"}', 0.0),
            "recordings": len(_changed(self.start_files, _snapshot(self.fixtures))),
        }
        return self.stats


class Tape:
    """The `llmtape` fixture: this test's view of the session's proxy.

    `url` (no `/v1`), `base_url` (`/v1`), `mode` and `namespace` (the
    marker's, else the session's), `fixtures` (the folder), `headers` (the
    per-request overrides the marker asks for: pass them to a client as
    `default_headers=llmtape.headers`), `recordings` (the fixture files
    written so far in this test), `take_misses()` (for a test that expects
    a replay miss)."""

    def __init__(self, session: Session, mode: str, namespace: Optional[str], before: Dict[str, int]):
        self._session = session
        server = session.server
        self.url = server.url if server else None
        self.base_url = server.base_url if server else None
        self.mode = mode
        self.namespace = namespace
        self.fixtures = session.fixtures
        self.headers: Dict[str, str] = {}
        if server and mode != session.mode:
            # off, for one test: the proxy forwards and stores nothing.
            self.headers["x-llmtape-mode"] = "passthrough" if mode == "off" else mode
        if namespace:
            self.headers["x-llmtape-namespace"] = namespace
        self._before = before

    def take_misses(self) -> List[Dict[str, str]]:
        """The replay misses (404) of this test so far, as serve's request
        lines name them (`method`, `path`, `key`, `nearest`, ...). Taken
        misses no longer fail the test: for a test that expects one."""
        if self._session.server is None:
            return []
        return [f for f in self._session.requests_since_last_check() if _is_replay_miss(f)]

    @property
    def recordings(self) -> List[Path]:
        return [Path(p) for p in _changed(self._before, _snapshot(self._session.fixtures))]


_KEY = pytest.StashKey[Session]()
_TEST_FILES = pytest.StashKey[Dict[str, int]]()


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    # Before conftest files are imported: a conftest that builds a client at
    # import time must already see OPENAI_BASE_URL.
    _configure(early_config)


def _configure(config) -> Session:
    if _KEY in config.stash:
        return config.stash[_KEY]
    session = Session(config, _mode(config), _fixtures(config))
    config.stash[_KEY] = session
    # --help and --version run no test; the xdist controller runs none either.
    if not (_option(config, "help") or _option(config, "version") or _is_xdist_controller(config)):
        session.start()
    return session


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "llmtape(mode=None, namespace=None): this test's llmtape mode and namespace "
        "(sent as x-llmtape-mode and x-llmtape-namespace through llmtape.headers)")
    _configure(config)


def pytest_unconfigure(config):
    session = config.stash.get(_KEY, None)
    if session is not None:
        session.stop()


def _is_replay_miss(fields: Dict[str, str]) -> bool:
    return fields.get("outcome") == "miss" and fields.get("status") == "404"


def _marker(item):
    marker = item.get_closest_marker("llmtape")
    return (marker.kwargs if marker else {}) or {}


@pytest.fixture
def llmtape(request) -> Tape:
    """This test's view of the session's llmtape proxy (see `Tape`)."""
    session = request.config.stash[_KEY]
    kwargs = _marker(request.node)
    if kwargs.get("mode") not in (None, "replay", "record", "auto", "off"):
        pytest.fail(f"@pytest.mark.llmtape(mode={kwargs['mode']!r}): expected replay, record, auto or off",
                    pytrace=False)
    if session.server is None and session.mode != "off":
        pytest.skip("llmtape runs in the xdist workers, not the controller")
    before = request.node.stash.get(_TEST_FILES, {})
    return Tape(session, kwargs.get("mode") or session.mode, kwargs.get("namespace"), before)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    session = item.config.stash.get(_KEY, None)
    if session is None or session.server is None:
        return
    item.stash[_TEST_FILES] = _snapshot(session.fixtures)
    # Lines before this test belong to earlier tests (or their teardown).
    session.requests_since_last_check()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when != "call":
        return
    session = item.config.stash.get(_KEY, None)
    if session is None or session.server is None:
        return
    report = outcome.get_result()
    test_mode = _marker(item).get("mode") or session.mode
    misses = [f for f in session.requests_since_last_check() if _is_replay_miss(f)]
    if test_mode != "replay" or not misses:
        return
    lines = [f"llmtape: {len(misses)} replay miss(es) in this test "
             f"(mode=replay, fixtures={session.fixtures}); no recording for:"]
    for f in misses:
        line = f"  {f.get('method', '?')} {f.get('path', '?')} (key {f.get('key', '?')})"
        if f.get("nearest"):
            line += f"; the nearest recording is {f['nearest']}"
        lines.append(line)
    lines.append("  the 404 the client got names the nearest recording and what differs "
                 "(also in the x-llmtape-miss-nearest header); record it with --llmtape=auto")
    text = "\n".join(lines)
    if report.passed:
        report.outcome = "failed"
        report.longrepr = text
    else:
        report.sections.append(("llmtape", text))


def pytest_sessionfinish(session):
    state = session.config.stash.get(_KEY, None)
    workeroutput = getattr(session.config, "workeroutput", None)
    if state is not None and state.server is not None and workeroutput is not None:
        workeroutput["llmtape"] = state.summary()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    state = node.config.stash.get(_KEY, None)
    stats = getattr(node, "workeroutput", {}).get("llmtape")
    if state is None or not stats:
        return
    total = state.stats or {"hits": 0.0, "misses": 0.0, "recordings": 0}
    state.stats = {k: total.get(k, 0) + stats.get(k, 0) for k in ("hits", "misses", "recordings")}


def pytest_terminal_summary(terminalreporter, config):
    state = config.stash.get(_KEY, None)
    if state is None or state.mode == "off":
        return
    stats = state.summary()
    if not stats:
        return
    terminalreporter.write_sep("-", "llmtape")
    terminalreporter.write_line(
        f"llmtape mode={state.mode} fixtures={state.fixtures}: {int(stats['hits'])} hits, "
        f"{int(stats['misses'])} misses, {int(stats['recordings'])} new recordings")
