"""The pydantic-ai recipe (README, Framework recipes): an `openai:` model
reads OPENAI_BASE_URL and OPENAI_API_KEY like the SDK, and calls the
Responses API (/v1/responses). A replay miss reaches pydantic-ai as a 404
it raises as `ModelNotFoundError` ("status_code: 404, model_name: ...,
body: {'message': 'llmtape has no recording for this request ...; the
nearest recording is KEY ...'}"); the plugin names the request too."""

import os

import pytest

if os.environ.get("CI"):
    import pydantic_ai  # scripts/test installs it: missing is a failure under CI
else:
    pydantic_ai = pytest.importorskip("pydantic_ai")


def test_pydantic_ai_agent():
    agent = pydantic_ai.Agent("openai:gpt-4o-mini", instructions="Be brief.")
    assert agent.run_sync("Name a tree.").output
