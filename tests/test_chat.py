"""Chat: the GGUF's own template rendered as Hugging Face renders it, replies that stop where they
should, conversations that reuse their KV, and bad conversations refused with a typed error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyllama_mtp import ChatTemplate, ChatTemplateError, Model, MtpSession, Sampling
from pyllama_mtp._text import TextStream
from pyllama_mtp.chat import message_text
from pyllama_mtp.fixtures import CHAT_TOKENS, Pair, PairConfig, build_pair

CONVERSATIONS = [
    [{"role": "user", "content": "the quick brown fox"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}],
    [
        {"role": "user", "content": "speculative decoding"},
        {"role": "assistant", "content": "with a drafter"},
        {"role": "user", "content": [{"type": "text", "text": "and a "}, {"type": "text", "text": "target"}]},
    ],
]


@pytest.fixture(scope="module")
def chat_pair() -> Pair:
    return build_pair(PairConfig(chat=True))


@pytest.fixture(scope="module")
def models(chat_pair: Pair) -> Iterator[tuple[Model, Model]]:
    with Model(chat_pair.target_gguf) as target, Model(chat_pair.drafter_gguf) as drafter:
        yield target, drafter


@pytest.fixture()
def session(models: tuple[Model, Model]) -> Iterator[MtpSession]:
    target, drafter = models
    with MtpSession(target, drafter, n_draft=3, n_ctx=512, n_threads=2) as s:
        yield s


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_template_renders_as_hugging_face(chat_pair: Pair, models: tuple[Model, Model], messages: list) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_pair.target_hf)
    hf_messages = [{"role": m["role"], "content": message_text(m, i)[1]} for i, m in enumerate(messages)]
    expected = tok.apply_chat_template(hf_messages, add_generation_prompt=True, tokenize=False)
    target = models[0]
    with ChatTemplate(target) as template:
        rendered = template.render(messages)
        ids, _ = template.tokens(messages)
    # llama.cpp leaves the BOS the template writes to the tokenizer, which adds it
    assert "<bos>" + rendered.prompt == expected
    assert ids[0] == target.bos and ids.count(target.bos) == 1
    assert rendered.prompt.endswith("<|turn>model\n<|channel>thought\n<channel|>")  # thinking off by default
    thinking = template_prompt(target, messages, enable_thinking=True)
    assert thinking.endswith("<|turn>model\n")


def template_prompt(target: Model, messages: list, *, enable_thinking: bool) -> str:
    with ChatTemplate(target) as template:
        return template.render(messages, enable_thinking=enable_thinking).prompt


def test_turn_markers_are_single_control_tokens_and_the_turn_end_stops(models: tuple[Model, Model]) -> None:
    target = models[0]
    for marker in CHAT_TOKENS:
        assert len(target.tokenize(marker, add_special=False, parse_special=True)) == 1, marker
    (end_of_turn,) = target.tokenize("<turn|>", add_special=False, parse_special=True)
    assert target.is_eog(end_of_turn)  # the session's loop ends a reply there


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_chat_reply_is_the_sessions_greedy_output(session: MtpSession, messages: list) -> None:
    # each from an empty KV: a reused prefix changes batch shapes, and with them near-tied picks
    ids, _ = session.chat_template.tokens(messages)
    expected = session.complete(ids, 24)
    session.reset()
    reply = session.chat(messages, 24)
    session.reset()
    assert reply.tokens == expected
    assert reply.n_prompt == len(ids)
    assert reply.finish_reason == ("stop" if session.target.is_eog(expected[-1]) else "length")
    assert reply.text == "".join(session.chat_stream(messages, 24))
    assert reply.text == session.target.detokenize([t for t in expected if not session.target.is_eog(t)])


def test_draft_mtp_chat_equals_target_alone(models: tuple[Model, Model]) -> None:
    target, drafter = models
    with (
        MtpSession(target, drafter, n_draft=3, n_ctx=512, n_threads=2, kv_cache_type="f32", flash_attn=False) as mtp,
        MtpSession(target, None, n_draft=0, n_ctx=512, n_threads=2, kv_cache_type="f32", flash_attn=False) as alone,
    ):
        for messages in CONVERSATIONS:
            assert mtp.chat(messages, 32).tokens == alone.chat(messages, 32).tokens


def test_next_turn_reuses_the_conversations_kv(session: MtpSession) -> None:
    messages: list[dict[str, str]] = [{"role": "user", "content": "the quick brown fox"}]
    first_ids, _ = session.chat_template.tokens(messages)
    reply = session.chat(messages, 16)
    messages += [{"role": "assistant", "content": reply.text}, {"role": "user", "content": "and the lazy dog"}]
    second_ids, _ = session.chat_template.tokens(messages)
    cached = first_ids + reply.tokens
    common = next((i for i, (a, b) in enumerate(zip(cached, second_ids, strict=False)) if a != b), len(cached))
    before = session.stats.n_prompt_reused
    session.chat(messages, 16)
    reused = session.stats.n_prompt_reused - before
    # Gemma 4's template drops the empty thought channel from past model turns, so the reuse ends
    # where the first reply began, after the whole first user turn
    assert reused == min(common, len(second_ids) - 1)
    assert reused > len(session.target.tokenize("the quick brown fox"))


def test_max_tokens_and_stop_strings(session: MtpSession) -> None:
    messages = CONVERSATIONS[0]
    session.reset()
    full = session.chat(messages, 24)
    assert len(full.tokens) == 24 and full.finish_reason == "length"
    assert session.chat(messages, 0).text == ""
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    session.reset()
    cut = session.chat(messages, 24, stop=[stop])
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]


def test_max_tokens_none_stops_when_the_context_is_full(models: tuple[Model, Model]) -> None:
    target, drafter = models
    with MtpSession(target, drafter, n_draft=3, n_ctx=64, n_threads=2) as small:
        reply = small.chat(CONVERSATIONS[0])
        assert reply.n_prompt + len(reply.tokens) <= small.n_ctx
        assert reply.finish_reason == "length" or target.is_eog(reply.tokens[-1])


def test_a_model_without_a_template_says_so(pair: Pair) -> None:
    with Model(pair.target_gguf) as plain, MtpSession(plain, None, n_draft=0, n_ctx=128) as s:
        with pytest.raises(ChatTemplateError, match="no chat template"):
            s.chat(CONVERSATIONS[0], 4)
        with ChatTemplate(plain, template="{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}") as t:
            assert t.render(CONVERSATIONS[1]).prompt == "system: be brief\nuser: hello world\n"


def test_chat_template_override_on_the_session(pair: Pair) -> None:
    custom = "{% for m in messages %}[{{ m.role }}] {{ m.content }} {% endfor %}reply:"
    with Model(pair.target_gguf) as plain, MtpSession(plain, None, n_draft=0, n_ctx=128, chat_template=custom) as s:
        ids = plain.tokenize("[user] the quick brown fox reply:")
        assert s.chat(CONVERSATIONS[0], 8).tokens == s.complete(ids, 8)


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "non-empty"),
        ("hello", "non-empty"),
        ([{"content": "no role"}], "role"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "only text"),
        ([{"role": "user", "content": 42}], "string or a list"),
        (["not a mapping"], "mapping"),
    ],
)
def test_bad_messages_raise(session: MtpSession, messages: object, match: str) -> None:
    with pytest.raises(ChatTemplateError, match=match):
        session.chat(messages, 4)  # type: ignore[arg-type]
    assert session.chat(CONVERSATIONS[0], 2).tokens  # and the session still works


def test_a_template_that_raises_and_one_that_does_not_parse(target: Model) -> None:
    strict = (
        "{% for m in messages %}{% if m.role != 'user' %}{{ raise_exception('only users here') }}{% endif %}"
        "{% endfor %}"
    )
    with ChatTemplate(target, template=strict) as t:
        assert t.render(CONVERSATIONS[0]).prompt == ""
        with pytest.raises(ChatTemplateError, match="only users here"):
            t.render(CONVERSATIONS[2])
    with pytest.raises(ChatTemplateError, match="does not parse"):
        ChatTemplate(target, template="{% for m in messages %}")


def test_set_sampling_matches_a_session_made_with_it(models: tuple[Model, Model]) -> None:
    target, drafter = models
    sampled = Sampling(temperature=0.9, top_k=40, seed=1234)
    ids = target.tokenize("the quick brown fox")
    with MtpSession(target, drafter, n_ctx=256, n_threads=2, sampling=sampled) as made:
        expected = made.complete(ids, 24)
        continued = made.complete(ids, 24)  # the stream runs on across generations
    assert continued[0] != expected[0]
    with MtpSession(target, drafter, n_ctx=256, n_threads=2) as switched:
        switched.set_sampling(sampled)
        assert switched.complete(ids, 24) == expected
        switched.set_sampling(sampled)  # the seed restarts the stream ...
        restarted = switched.complete(ids, 24)
        # ... compared on the first token only: this generation reuses the prompt's KV, and on
        # CUDA attention over a reused cache rounds apart from a fresh one, so later near-ties flip
        assert restarted[0] == expected[0]
        switched.set_sampling(Sampling())
        switched.reset()  # from an empty cache, as the sessions compared with
        greedy = switched.complete(ids, 24)
        switched.reset()
        switched.set_sampling(sampled)
        assert switched.complete(ids, 24) == expected
    with MtpSession(target, drafter, n_ctx=256, n_threads=2) as plain:
        assert plain.complete(ids, 24) == greedy
    assert expected != greedy


def test_text_stream_holds_back_split_characters_and_stop_prefixes() -> None:
    text = TextStream(["STOP"])
    euro = "€".encode()
    assert text.push(b"ab" + euro[:1]) == "ab"
    assert text.push(euro[1:] + b"cS") == "€c"  # "S" may start "STOP"
    assert text.push(b"T") == ""
    assert text.push(b"x") == "STx"  # it did not
    assert text.push(b"yST") == "y"
    assert text.push(b"OPz") == "" and text.stopped
    assert text.push(b"more") == "" and text.finish() == ""
    tail = TextStream(["STOP"])
    assert tail.push(b"endST") == "end" and tail.finish() == "ST"
