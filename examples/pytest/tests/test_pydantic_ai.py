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


def agent():
    return pydantic_ai.Agent("openai:gpt-4o-mini", instructions="Be brief.")


def test_pydantic_ai_agent():
    assert agent().run_sync("Name a tree.").output


def test_a_replay_miss_is_model_not_found(llmtape):
    if llmtape.mode != "replay":
        pytest.skip("only replay answers an unrecorded request with a 404")
    with pytest.raises(pydantic_ai.exceptions.ModelNotFoundError,
                       match="llmtape has no recording for this request.*the nearest recording is"):
        agent().run_sync("A question nobody recorded.")
    # Expected here: taken, so the plugin does not fail the test for it.
    (miss,) = llmtape.take_misses()
    assert miss["path"] == "/v1/responses"
