"""Finding the `llmtape` binary and running `llmtape serve` as a child.

Owns the process: start on 127.0.0.1:0, read the ready line
(`llmtape listening on http://ADDR (mode=..., ...)`) within a bounded wait,
keep the log on a file, stop with SIGTERM and a bounded wait. Knows nothing
of pytest (see `pytest_plugin`).
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Sequence

#: How long `start` waits for the ready line: a debug build loading a large
#: fixtures folder on a loaded CI machine still starts well within this.
READY_TIMEOUT = 30.0
#: How long `stop` waits after SIGTERM before SIGKILL (the server drains
#: in-flight requests first; a test suite has none left when it stops).
STOP_TIMEOUT = 10.0

MODES = ("replay", "record", "auto", "off")


class LlmtapeError(RuntimeError):
    """The binary is missing, or the server did not start."""


def find_binary() -> str:
    """The `llmtape` executable: `$LLMTAPE_BIN`, else the one this wheel
    installed beside this interpreter's scripts, else `llmtape` on `PATH`."""
    env = os.environ.get("LLMTAPE_BIN")
    if env:
        if not os.access(env, os.X_OK):
            raise LlmtapeError(f"LLMTAPE_BIN={env} is not an executable file")
        return env
    name = "llmtape.exe" if os.name == "nt" else "llmtape"
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidate = os.path.join(scripts, name)
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("llmtape")
    if found:
        return found
    raise LlmtapeError(
        "cannot find the llmtape binary: set LLMTAPE_BIN, or `pip install llmtape` "
        "(the wheel installs it), or put llmtape on PATH"
    )


def _read_ready_line(stdout, lines: "queue.Queue[Optional[str]]") -> None:
    for line in stdout:
        lines.put(line)
    lines.put(None)


class Server:
    """A running `llmtape serve`. Use `start()`; `stop()` (or `with`) ends it.

    `url` is `http://127.0.0.1:PORT` (no `/v1`); `base_url` adds `/v1` for
    OpenAI clients. `log_path` is the server's stderr (one line per
    request)."""

    def __init__(self, process: subprocess.Popen, url: str, mode: str, log_path: Path,
                 fixtures: Optional[Path], ready_line: str):
        self.process = process
        self.url = url
        self.base_url = url + "/v1"
        self.mode = mode
        self.log_path = log_path
        self.fixtures = fixtures
        self.ready_line = ready_line

    def metrics(self, timeout: float = 5.0) -> Dict[str, float]:
        """`/_llmtape/metrics` as `{"name{labels}": value}`."""
        with urllib.request.urlopen(self.url + "/_llmtape/metrics", timeout=timeout) as r:
            text = r.read().decode()
        out: Dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self.process.stdout:
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(mode: str = "auto", fixtures: Optional[os.PathLike] = None,
          store: Optional[os.PathLike] = None, upstream: Optional[str] = None,
          args: Sequence[str] = (), binary: Optional[str] = None,
          env: Optional[Dict[str, str]] = None, log_path: Optional[os.PathLike] = None,
          ready_timeout: float = READY_TIMEOUT) -> Server:
    """Starts `llmtape serve --listen 127.0.0.1:0` and waits for its ready
    line. `fixtures` serves a fixtures folder (replay reads it, record and
    auto write new files into it); else `store` (default: the binary's,
    `.llmtape/store`). `upstream` defaults to `$LLMTAPE_UPSTREAM`, else the
    binary's default. Raises `LlmtapeError` with the server's log if it
    exits or stays silent."""
    if mode not in ("replay", "record", "auto", "passthrough"):
        raise LlmtapeError(f"unknown mode {mode!r}: expected replay, record, auto or passthrough")
    command: List[str] = [binary or find_binary(), "serve", "--listen", "127.0.0.1:0", "--mode", mode]
    fixtures_path = None
    if fixtures is not None:
        fixtures_path = Path(fixtures)
        fixtures_path.mkdir(parents=True, exist_ok=True)
        command += ["--fixtures", str(fixtures_path)]
    elif store is not None:
        command += ["--store", str(store)]
    if upstream:
        command += ["--upstream", upstream]
    command += list(args)
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="llmtape-", suffix=".log")
        os.close(fd)
        log_path = name
    log_path = Path(log_path)
    child_env = dict(os.environ if env is None else env)
    # The log is parsed: plain text, never colour.
    child_env.pop("LLMTAPE_LOG_FORMAT", None)
    log = open(log_path, "wb")
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=log, env=child_env, text=True)
    finally:
        log.close()
    lines: "queue.Queue[Optional[str]]" = queue.Queue()
    threading.Thread(target=_read_ready_line, args=(process.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + ready_timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
            problem = f"printed no ready line within {ready_timeout:.0f}s"
        else:
            problem = "exited before it was ready" if line is None else ""
        if line and line.startswith("llmtape listening on "):
            url = line.split()[3]
            return Server(process, url, mode, log_path, fixtures_path, line.strip())
        if problem:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=STOP_TIMEOUT)
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise LlmtapeError(
                f"`{' '.join(command)}` {problem} (exit {process.returncode}): "
                + (" | ".join(tail) or "no output")
            )
