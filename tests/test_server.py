"""``pyllama-mtp serve`` through the official openai client, on 127.0.0.1: the same greedy text as a
local session, streamed and whole; usage with the draft figures; bad requests answered with a
4xx JSON error while the server keeps serving; a client that leaves stops its generation; and a
bounded load of 32 concurrent clients in which every reply is its own conversation's."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pyllama_mtp import Model, MtpSession, Sampling
from pyllama_mtp.benchmark.loopback import rpc_servers
from pyllama_mtp.benchmark.serve_load import conversations, expected_replies, run_load, running_server
from pyllama_mtp.fixtures import Pair, PairConfig, build_pair

openai = pytest.importorskip("openai")  # the [test] extra installs it; CI always has it

N_CTX = 1024
MODEL = "fixture"


@pytest.fixture(scope="module")
def chat_pair() -> Pair:
    return build_pair(PairConfig(chat=True))


@pytest.fixture(scope="module")
def server(chat_pair: Pair) -> Iterator[str]:
    args = ["-m", str(chat_pair.target_gguf), "-md", str(chat_pair.drafter_gguf), "-c", str(N_CTX), "-np", "2"]
    with running_server([*args, "--alias", MODEL]) as base:
        yield base


@pytest.fixture(scope="module")
def client(server: str) -> Any:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def local(chat_pair: Pair) -> Iterator[MtpSession]:
    """A session like one of the server's slots, started afresh for each reference reply."""
    with (
        Model(chat_pair.target_gguf) as target,
        Model(chat_pair.drafter_gguf) as drafter,
        MtpSession(target, drafter, n_ctx=N_CTX) as session,
    ):
        yield session


FRESH = {"cache_prompt": False}  # the server starts from an empty KV, as the reference does


def _metrics(server: str) -> dict[str, float]:
    text = httpx.get(f"{server}/metrics").text
    return {m[1]: float(m[2]) for m in re.finditer(r"^(pyllama_mtp_\S+) ([\d.]+)$", text, re.M)}


def test_models_and_health(server: str, client: Any) -> None:
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}
    assert [m.id for m in client.models.list().data] == [MODEL]


@pytest.mark.parametrize("messages", conversations(3))
def test_chat_whole_and_streamed_equal_the_session(client: Any, local: MtpSession, messages: list) -> None:
    local.reset()
    expected = local.chat(messages, 24)
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24, extra_body=FRESH)
    assert whole.choices[0].message.content == expected.text
    assert whole.choices[0].finish_reason == expected.finish_reason
    usage = whole.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (expected.n_prompt, len(expected.tokens))
    assert usage.model_extra["draft_tokens"] > 0 and 0 <= usage.model_extra["acceptance_rate"] <= 1
    assert usage.model_extra["tokens_per_second"] > 0

    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=24, stream=True, stream_options={"include_usage": True},
            extra_body=FRESH,
        )
    )  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expected.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(expected.tokens)


def test_completions_equal_session_complete(client: Any, local: MtpSession) -> None:
    prompt = "speculative decoding with a drafter"
    local.reset()
    expected = "".join(local.generate_text(prompt, 16))
    whole = client.completions.create(model=MODEL, prompt=prompt, max_tokens=16, extra_body=FRESH)
    assert whole.choices[0].text == expected and whole.choices[0].finish_reason == "length"
    streamed = client.completions.create(model=MODEL, prompt=prompt, max_tokens=16, stream=True, extra_body=FRESH)
    assert "".join(c.choices[0].text for c in streamed) == expected
    ids = local.target.tokenize(prompt)
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=16, extra_body=FRESH)
    assert by_ids.choices[0].text == expected


def test_a_target_split_over_rpc_serves_the_same_text(chat_pair: Pair, local: MtpSession) -> None:
    prompt = "speculative decoding with a drafter"
    local.reset()
    expected = "".join(local.generate_text(prompt, 16))
    with rpc_servers(2) as lent:
        args = ["-m", str(chat_pair.target_gguf), "-md", str(chat_pair.drafter_gguf), "-c", str(N_CTX)]
        with running_server([*args, "--alias", MODEL, "--rpc", ",".join(s.endpoint for s in lent)]) as base:
            split = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
            reply = split.completions.create(model=MODEL, prompt=prompt, max_tokens=16, extra_body=FRESH)
    assert reply.choices[0].text == expected


def test_stop_strings(client: Any, local: MtpSession) -> None:
    messages = conversations(1)[0]
    local.reset()
    full = local.chat(messages, 24).text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24, stop=[stop], extra_body=FRESH)
    assert reply.choices[0].message.content == full[: full.index(stop)]
    assert reply.choices[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible_and_matches_the_session(client: Any, local: MtpSession) -> None:
    messages = conversations(2)[1]
    kwargs = {"model": MODEL, "messages": messages, "max_tokens": 24, "temperature": 1.0, "seed": 77}
    first = client.chat.completions.create(**kwargs, extra_body=FRESH).choices[0].message.content
    again = client.chat.completions.create(**kwargs, extra_body=FRESH).choices[0].message.content
    local.reset()
    local.set_sampling(Sampling(temperature=1.0, seed=77))
    try:
        expected = local.chat(messages, 24).text
    finally:
        local.set_sampling(Sampling())
    assert first == again == expected
    local.reset()
    assert expected != local.chat(messages, 24).text  # the temperature was honoured


def test_serve_exact_replies_as_the_target_alone(chat_pair: Pair) -> None:
    """`serve --exact`: greedy and seeded replies drafted at k=3 are the target alone's, token for token."""
    messages = conversations(3)[2]
    args = ["-m", str(chat_pair.target_gguf), "-md", str(chat_pair.drafter_gguf), "-c", "512", "--exact"]
    with running_server([*args, "--alias", MODEL]) as base:
        exact_client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
        replies = [
            exact_client.chat.completions.create(model=MODEL, messages=messages, max_tokens=32, extra_body=FRESH, **kw)
            .choices[0]
            .message.content
            for kw in ({}, {"temperature": 1.0, "seed": 5})
        ]
    with Model(chat_pair.target_gguf) as target, MtpSession(target, None, n_draft=0, n_ctx=512, exact=True) as alone:
        greedy = alone.chat(messages, 32).text
        alone.reset()
        alone.set_sampling(Sampling(temperature=1.0, seed=5))
        sampled = alone.chat(messages, 32).text
    assert replies == [greedy, sampled]


def test_the_next_turn_reuses_the_kv(client: Any, local: MtpSession) -> None:
    messages: list[dict[str, str]] = [{"role": "user", "content": "the lazy dog and the quick fox"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "and then"},
    ]
    second = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
    # the first user turn at least is already in the slot's KV (Gemma 4's template renders past model
    # turns without the empty thought channel that opened the first reply, so reuse stops there)
    user_turn = local.chat_template.render(messages[:1], add_generation_prompt=False).prompt
    n_user_turn = len(local.target.tokenize(user_turn, parse_special=True))
    assert n_user_turn < first.usage.prompt_tokens
    assert second.usage.model_extra["prompt_tokens_reused"] >= n_user_turn


BAD_REQUESTS = [
    ("/v1/chat/completions", b"{not json", 400, None),
    ("/v1/chat/completions", {"model": "another-model", "messages": [{"role": "user", "content": "hi"}]}, 404,
     "model_not_found"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, 400, None),
    ("/v1/completions", {"prompt": "hi", "max_tokens": -5}, 400, None),
    ("/v1/chat/completions", {"messages": "hi"}, 400, None),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, None),
    ("/v1/chat/completions", {"messages": [{"content": "no role"}]}, 400, None),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, None),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, None),
    ("/v1/completions", {"prompt": [1, 2, 10**9]}, 400, None),
    ("/v1/completions", {"prompt": "fox " * 2000}, 400, "context_length_exceeded"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "fox " * 2000}], "stream": True}, 400,
     "context_length_exceeded"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "status", "code"), BAD_REQUESTS)
def test_bad_requests_get_a_json_error_and_the_server_keeps_serving(
    server: str, client: Any, path: str, body: Any, status: int, code: str | None
) -> None:
    content = body if isinstance(body, bytes) else None
    response = httpx.post(f"{server}{path}", content=content, json=None if content else body, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert error["code"] == code
    ok = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_a_client_that_leaves_stops_its_generation() -> None:
    # the agreeing pair repeats the prompt's last token, so nothing ends the reply but its budget
    agreeing = build_pair(PairConfig(chat=True, agree=True))
    args = ["-m", str(agreeing.target_gguf), "-md", str(agreeing.drafter_gguf), "-c", "16384", "-np", "1"]
    with running_server(args) as base:
        body = {"prompt": "the quick brown fox", "max_tokens": 16000, "stream": True}
        with httpx.Client(timeout=60) as http, http.stream("POST", f"{base}/v1/completions", json=body) as r:
            assert r.status_code == 200
            assert next(line for line in r.iter_lines() if line.startswith("data:"))
        left = time.monotonic()
        while (metrics := _metrics(base)).get('pyllama_mtp_requests_total{outcome="cancelled"}', 0) < 1:
            assert metrics['pyllama_mtp_requests_total{outcome="ok"}'] == 0, "the generation was not cancelled"
            assert time.monotonic() - left < 10, "the generation went on after the client left"
            time.sleep(0.05)
        assert metrics["pyllama_mtp_completion_tokens_total"] < 8000  # far from its 16000-token budget
        # the one slot is free again at once
        start = time.monotonic()
        quick = httpx.post(f"{base}/v1/completions", json={"prompt": "fox", "max_tokens": 4}, timeout=30)
        assert quick.status_code == 200 and time.monotonic() - start < 5


def test_bounded_load_every_reply_is_its_own(server: str, chat_pair: Pair) -> None:
    convs = conversations(32)
    expected = expected_replies(chat_pair, convs, 16, N_CTX, 3)
    result = asyncio.run(run_load(server, MODEL, convs, expected, clients=32, requests_per_client=4, max_tokens=16))
    assert result.errors == 0
    assert result.answered == 128
    assert result.mismatched == 0
    assert 0 < result.completion_tokens <= 128 * 16
    assert 0 < result.latency_p50_s <= result.latency_p95_s
