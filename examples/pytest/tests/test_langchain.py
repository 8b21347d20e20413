"""The LangChain recipe (README, Framework recipes): ChatOpenAI and
OpenAIEmbeddings read OPENAI_BASE_URL and OPENAI_API_KEY like the SDK.
Offline, OpenAIEmbeddings needs check_embedding_ctx_length=False, or it
downloads tokenizer data at run time. A replay miss reaches LangChain as a
404 it reports as "model not found"; the plugin names the request too."""

import os

import pytest

if os.environ.get("CI"):
    import langchain_openai  # scripts/test installs it: missing is a failure under CI
else:
    langchain_openai = pytest.importorskip("langchain_openai")


def test_langchain_chat():
    chat = langchain_openai.ChatOpenAI(model="gpt-4o-mini", temperature=0, seed=7)
    assert chat.invoke("Name a fruit.").content


def test_langchain_embeddings():
    embeddings = langchain_openai.OpenAIEmbeddings(
        model="text-embedding-3-small", check_embedding_ctx_length=False)
    assert len(embeddings.embed_query("llmtape")) > 0
