"""The LangChain recipe (README, Framework recipes): ChatOpenAI and
OpenAIEmbeddings read OPENAI_BASE_URL and OPENAI_API_KEY like the SDK.
Offline, OpenAIEmbeddings needs check_embedding_ctx_length=False, or it
downloads tokenizer data at run time. A replay miss reaches LangChain as a
404 it raises as "model not found" (`OpenAIModelNotFoundError`, a
`langchain_core.exceptions.ModelNotFoundError`) with llmtape's message in
it; the plugin names the request too."""

import os

import pytest

if os.environ.get("CI"):
    import langchain_openai  # scripts/test installs it: missing is a failure under CI
else:
    langchain_openai = pytest.importorskip("langchain_openai")


def test_langchain_chat():
    chat = langchain_openai.ChatOpenAI(model="gpt-4o-mini", temperature=0, seed=7)
    assert chat.invoke("Name a fruit.").content


def test_a_replay_miss_is_model_not_found(llmtape):
    if llmtape.mode != "replay":
        pytest.skip("only replay answers an unrecorded request with a 404")
    chat = langchain_openai.ChatOpenAI(model="gpt-4o-mini", temperature=0, seed=7)
    from langchain_core.exceptions import ModelNotFoundError

    with pytest.raises(ModelNotFoundError,
                       match="llmtape has no recording for this request.*the nearest recording is"):
        chat.invoke("A question nobody recorded.")
    # Expected here: taken, so the plugin does not fail the test for it.
    (miss,) = llmtape.take_misses()
    assert miss["path"] == "/v1/chat/completions"


def test_langchain_embeddings():
    embeddings = langchain_openai.OpenAIEmbeddings(
        model="text-embedding-3-small", check_embedding_ctx_length=False)
    assert len(embeddings.embed_query("llmtape")) > 0
