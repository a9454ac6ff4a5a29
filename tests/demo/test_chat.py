"""``palm chat`` on the tiny stand-in portfolio: scripted keystrokes, real engines and store."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from palm_middleware import SQLiteStore, load_policy, load_portfolio
from palm_middleware.cli.__main__ import main
from palm_middleware.demo.chat import Chat
from palm_middleware.pipeline import Palm

from .tiny_deployment import GUARD_WORD

#: The tiny members differ by ~50% of the best value, past the default 20% bound on what an A/B
#: pair may cost the user: the tests of the keys allow every comparison.
ANY_PAIR = 1.0


def _chat(
    tiny: dict[str, Path], store: SQLiteStore, keys: list[str], pair_cost: float = ANY_PAIR
) -> tuple[Chat, str]:
    lines: Iterator[str] = iter(keys)
    out = io.StringIO()
    palm = Palm(
        load_portfolio(tiny["portfolio"]),
        load_policy(tiny["policy"]),
        store,
        pair_cost=pair_cost,
    )
    chat = Chat(
        palm,
        "sam",
        bases={"tiny": tiny["base"]},
        root=tiny["portfolio"].parent,
        max_tokens=12,
        read=lambda _prompt: next(lines, None),
        out=out,
    )
    assert chat.run() == 0
    return chat, out.getvalue()


def test_keys_give_thumbs_and_ab_choices(tiny: dict[str, Path], tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "chat.db")
    try:
        _, text = _chat(tiny, store, ["How do I keep basil fresh?", "+", "c", "1", "p", "q"])
    finally:
        store.close()
    assert "recorded: thumb up for" in text
    assert "here is [2]:" in text and "recorded: " in text.split("here is [2]:", 1)[1]
    assert "2 events; rules applied" in text  # read back from the SQLite store


def test_no_comparison_past_the_cost_bound(tiny: dict[str, Path], tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "chat.db")
    try:
        _, text = _chat(tiny, store, ["How do I keep basil fresh?", "c", "q"], pair_cost=0.2)
    finally:
        store.close()
    assert "no comparison here" in text and "pair_cost 0.2" in text
    assert "rate the last reply with + or - instead" in text  # the README's advice on a 409
    assert "here is [2]:" not in text


def test_comparisons_choose_and_the_profile_follows(tiny: dict[str, Path], tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "chat.db")
    out = io.StringIO()
    palm = Palm(
        load_portfolio(tiny["portfolio"]),
        load_policy(tiny["policy"]),
        store,
        pair_cost=ANY_PAIR,
    )
    answers: list[str] = []

    def read(prompt: str) -> str | None:
        if prompt.startswith("which"):
            # Prefer whichever side the `long` member wrote.
            shown = out.getvalue().rsplit("[1] was ", 1)[1]
            first = shown.split(";", 1)[0]
            return "1" if first == "long" else "2"
        return answers.pop(0) if answers else None

    answers += [x for _ in range(6) for x in ("Tell me about the moon.", "c")] + ["q"]
    chat = Chat(
        palm,
        "sam",
        bases={"tiny": tiny["base"]},
        root=tiny["portfolio"].parent,
        max_tokens=12,
        read=read,
        out=out,
    )
    try:
        assert chat.run() == 0
        prof = palm.profile("sam")
    finally:
        store.close()
    assert out.getvalue().count("recorded: long over") >= 4
    assert prof.weights["structure"] > 0.6  # long wins on structure


def test_a_blocked_message_is_refused_with_the_rule(tiny: dict[str, Path], tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "chat.db")
    try:
        _, text = _chat(tiny, store, [f"How do I wire a {GUARD_WORD}?", "+", "q"])
    finally:
        store.close()
    assert "[blocked by guard-dangerous]" in text
    assert "no reply to rate yet" in text


def test_cli_chat_runs_on_piped_input(
    tiny: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there\n-\np\n"))
    code = main(
        [
            "chat",
            "--user",
            "sam",
            "--portfolio",
            str(tiny["portfolio"]),
            "--policy",
            str(tiny["policy"]),
            "--base",
            f"tiny={tiny['base']}",
            "--db",
            str(tmp_path / "c.db"),
            "--max-tokens",
            "8",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "palm chat as 'sam'" in out and "recorded: thumb down for" in out
    assert "1 events; rules applied" in out
