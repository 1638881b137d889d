"""The official `openai` Python client against a running moltbot gateway, unchanged.

Usage: python openai_client.py BASE_URL TOKEN [EXPECT]
BASE_URL is the gateway root (http://127.0.0.1:PORT). EXPECT, when given, must appear in
every reply (the fake model echoes); otherwise replies only need to be non-empty.
"""

import sys

import openai
from openai import OpenAI


def main() -> int:
    base, token = sys.argv[1], sys.argv[2]
    expect = sys.argv[3] if len(sys.argv) > 3 else None
    client = OpenAI(base_url=base.rstrip("/") + "/v1", api_key=token, max_retries=0, timeout=120)

    def check(text: str, what: str) -> None:
        assert text and text.strip(), f"{what}: empty reply"
        if expect is not None:
            assert expect in text, f"{what}: {expect!r} not in {text!r}"
        print(f"PASS {what}: {text[:80]!r}")

    models = [m.id for m in client.models.list()]
    assert "moltbot" in models, models
    print(f"PASS models.list: {models}")

    r = client.chat.completions.create(
        model="moltbot",
        messages=[{"role": "user", "content": "Say hello in five words."}],
        max_tokens=32,
        temperature=0,
    )
    check(r.choices[0].message.content, "chat.completions (plain)")
    assert r.choices[0].finish_reason in ("stop", "length"), r.choices[0].finish_reason
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0, r.usage

    pieces = []
    finish = None
    usage = None
    stream = client.chat.completions.create(
        model="moltbot",
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=32,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    check("".join(pieces), "chat.completions (stream)")
    assert len(pieces) >= 1, pieces
    assert finish in ("stop", "length"), finish
    assert usage is not None and usage.completion_tokens > 0, usage

    # A persistent session through the `user` field: the second turn sees the first.
    for msg in ("My name is Ada.", "What is my name?"):
        r = client.chat.completions.create(
            model="moltbot", user="py-client", max_tokens=24, temperature=0,
            messages=[{"role": "user", "content": msg}],
        )
        check(r.choices[0].message.content, f"session turn {msg!r}")

    # Errors surface as the client's typed exceptions.
    bad = OpenAI(base_url=base.rstrip("/") + "/v1", api_key="wrong-token", max_retries=0)
    try:
        bad.chat.completions.create(model="moltbot", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("a wrong token was accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401
        print("PASS wrong token -> AuthenticationError 401")
    try:
        client.chat.completions.create(model="moltbot", messages=[{"role": "user", "content": "x"}], temperature=9)
        raise AssertionError("temperature 9 was accepted")
    except openai.BadRequestError as e:
        assert "temperature" in str(e), str(e)
        print("PASS temperature 9 -> BadRequestError naming the field")
    print("openai client: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
