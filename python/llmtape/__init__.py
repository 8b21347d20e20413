"""llmtape for Python: the `llmtape` binary this wheel installs, a helper to
run it, and a pytest plugin (`llmtape.pytest_plugin`, loaded by pytest).

    import llmtape
    with llmtape.start(mode="replay", fixtures="tests/fixtures/llmtape") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test-dummy")
"""

from .server import MODES, LlmtapeError, Server, find_binary, start

__all__ = ["MODES", "LlmtapeError", "Server", "find_binary", "start"]
