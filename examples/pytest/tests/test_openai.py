"""Calls through the official openai SDK; the llmtape plugin points it at
the session's proxy (OPENAI_BASE_URL) before this module is imported."""

from openai import OpenAI

client = OpenAI()


def ask(question):
    return client.chat.completions.create(
        model="gpt-4o-mini", seed=7, temperature=0,
        messages=[{"role": "user", "content": question}],
    )


def test_chat_completion():
    answer = ask("Name a colour.")
    assert answer.choices[0].message.content


def test_streamed_chat_completion():
    stream = client.chat.completions.create(
        model="gpt-4o-mini", seed=7, temperature=0, stream=True,
        messages=[{"role": "user", "content": "Count to three."}],
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text


def test_embedding(llmtape):
    result = client.embeddings.create(model="text-embedding-3-small", input="llmtape")
    assert len(result.data[0].embedding) > 0
    assert llmtape.base_url == str(client.base_url).rstrip("/")
