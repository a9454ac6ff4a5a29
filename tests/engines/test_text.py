"""Incremental detokenization and stop-sequence matching (pure text, no model)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from palm_middleware.engines._text import IncrementalDecoder, StopMatcher

TEXT = st.text(alphabet=st.sampled_from(list("ab 🙂é日\n")), max_size=40)


def test_decoder_emits_whole_characters(tokenizer_file: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    text = "Héllo 🙂 日本語 👍🏽 ∑"
    ids = tok.encode(text, add_special_tokens=False).ids
    dec = IncrementalDecoder(lambda i: str(tok.decode(list(i))))
    pieces = [dec.push(t) for t in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert pieces.count("") > 0  # some tokens were partial characters and were held back


def test_decoder_skips_special_tokens(tokenizer_file: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    ids = tok.encode("ab", add_special_tokens=False).ids
    special = tok.token_to_id("<|im_start|>")
    assert special is not None
    dec = IncrementalDecoder(lambda i: str(tok.decode(list(i), skip_special_tokens=True)))
    out = [dec.push(t) for t in [special, *ids, special]] + [dec.flush()]
    assert "".join(out) == "ab"


def _run(text_parts: list[str], stops: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = ""
    for part in text_parts:
        piece, stopped = m.feed(part)
        out += piece
        if stopped:
            return out, True
    return out + m.flush(), False


@given(st.lists(TEXT, max_size=8), st.lists(TEXT.filter(bool), max_size=3))
def test_stop_matcher_equals_find(parts: list[str], stops: list[str]) -> None:
    text = "".join(parts)
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    out, stopped = _run(parts, stops)
    assert stopped == bool(hits)
    assert out == (text[: min(hits)] if hits else text)


@given(st.lists(TEXT, max_size=8), st.lists(TEXT.filter(bool), min_size=1, max_size=3))
def test_stop_matcher_never_emits_a_stop(parts: list[str], stops: list[str]) -> None:
    m = StopMatcher(stops)
    emitted = ""
    for part in parts:
        piece, stopped = m.feed(part)
        emitted += piece
        if stopped:
            break
    assert not any(s in emitted for s in stops)


def test_stop_matcher_holds_back_a_partial_stop() -> None:
    m = StopMatcher(["</answer>"])
    assert m.feed("result: 4 </ans") == ("result: 4 ", False)
    assert m.feed("wer> tail") == ("", True)
    m = StopMatcher(["</answer>"])
    assert m.feed("x </an") == ("x ", False)
    assert m.feed("d") == ("</and", False)
