"""The OpenAI Agents SDK recipe (README, Framework recipes): its model calls
read OPENAI_BASE_URL and go through llmtape (the Responses API by default),
but its traces go straight to https://api.openai.com/v1/traces/ingest, past
the proxy: offline (and so that a replayed run sends nothing anywhere)
turn tracing off, here in code; `OPENAI_AGENTS_DISABLE_TRACING=1` does the
same from the environment."""

import os

import pytest

if os.environ.get("CI"):
    import agents  # scripts/test installs openai-agents: missing is a failure under CI
else:
    agents = pytest.importorskip("agents")

agents.set_tracing_disabled(True)


def test_openai_agents_runner():
    agent = agents.Agent(name="helper", instructions="Be brief.", model="gpt-4o-mini")
    result = agents.Runner.run_sync(agent, "Name a bird.")
    assert result.final_output
