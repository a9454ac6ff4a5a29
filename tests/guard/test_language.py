"""The policy's ``languages:`` field (issue 12, item 3): detection, validation and both choices.

The detector is the real py3langid model (shipped in its wheel); no embedder is needed.
"""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import numpy as np
import pytest

from palm_middleware import DecisionBlocked, MemoryStore, Palm, load_portfolio
from palm_middleware.data import bundled
from palm_middleware.exceptions import PolicyValidationError
from palm_middleware.guard.classifier import GuardClassifier
from palm_middleware.guard.language import MIN_LETTERS, detect, pick_language, request_language
from palm_middleware.policy import load_policy, parse_policy
from palm_middleware.policy.models import LANGUAGE_RULE_ID
from palm_middleware.policy.reload import ReloadingPolicy

GUARDED = frozenset({"en", "fr"})
ITALIAN = "Come posso imparare a suonare la chitarra da solo, senza un insegnante?"
FRENCH = "Comment puis-je apprendre à jouer de la guitare tout seul, sans professeur ?"
ENGLISH = "How can I learn to play the guitar on my own, without a teacher?"


def test_clear_texts_get_their_language() -> None:
    assert detect(ITALIAN).lang == "it"
    assert detect(FRENCH).lang == "fr"
    assert detect(ENGLISH).lang == "en"
    assert detect("怎样才能在家里自学弹吉他？有什么好方法？").lang == "zh"  # wuu/yue fold to zh


@pytest.mark.parametrize(
    "text", ["ok", "merci", "ciao", "grazie mille", "ls -la", "kill -9 1234", "SELECT 1;", "Paris"]
)
def test_short_texts_have_no_language(text: str) -> None:
    # Below MIN_LETTERS letters the model guesses (ok -> sr, merci -> pl): no language,
    # so the text is served under every rule, as a guarded one.
    assert detect(text).lang is None
    assert request_language([text], GUARDED) is None


def test_the_threshold_counts_letters_and_cjk_characters_count_three() -> None:
    assert detect("x" * (MIN_LETTERS - 1) + " 1234567890 !!!").lang is None
    assert detect("吉他").confidence == 0.0  # 2 characters = 6 letters: too short


def test_unsure_texts_and_blobs_have_no_language() -> None:
    # Code and a base64 blob score "zxx" (no linguistic content) or nothing clear.
    assert detect("def f(x): return [y for y in range(x) if y % 2 == 0]").lang is None
    blob = base64.b64encode(b"\x00\x01binary payload " * 4).decode()
    assert detect(blob).lang is None


def test_an_unguarded_text_is_never_hidden_by_a_guarded_one() -> None:
    assert request_language([ENGLISH, ITALIAN], GUARDED) == "it"
    assert request_language([ITALIAN, ENGLISH], GUARDED) == "it"
    assert request_language(["ok", FRENCH], GUARDED) == "fr"
    assert pick_language([(10, "en"), (50, "fr")], GUARDED) == "fr"  # the longest guarded one
    assert pick_language([(10, None)], GUARDED) is None


BASE = """\
version: 2
traits: [safety, brevity]
topics:
  weapons: {keywords: [bomb*, bomba*]}
bounds:
  - {id: no-weapons, layer: law, when: {topic: weapons}, action: block, message: Not that.}
"""


@pytest.mark.parametrize(
    ("extra", "where", "match"),
    [
        ("languages: [en, xx]\n", "p.yaml:7:", "languages\\[1\\]: unknown language code 'xx'"),
        ("languages: [EN]\n", "p.yaml:7:", "languages\\[0\\]"),
        ("languages: [en, en]\n", "p.yaml:7:", "listed twice"),
        ("languages: []\n", "p.yaml:7:", "at least 1"),
        ("unguarded_language: refuse\n", "p.yaml:7:", "'unguarded_language' needs 'languages:'"),
        ("unguarded_message: Hi\n", "p.yaml:7:", "'unguarded_message' needs 'languages:'"),
        ("languages: [en]\nunguarded_language: ignore\n", "p.yaml:8:", "unguarded_language"),
        (
            "languages: [en]\nunguarded_language: input_rules_only\nunguarded_message: Hi\n",
            "p.yaml:9:",
            "only used with 'unguarded_language: refuse'",
        ),
    ],
)
def test_bad_language_fields_are_refused_at_compile_with_their_line(
    extra: str, where: str, match: str
) -> None:
    with pytest.raises(PolicyValidationError, match=match) as info:
        parse_policy(BASE + extra, "p.yaml")
    assert where in str(info.value)


def test_the_reserved_rule_id_is_refused() -> None:
    text = BASE + "  - {id: unguarded-language, min_events: 1}\nlanguages: [en]\n"
    with pytest.raises(PolicyValidationError, match="reserved") as info:
        parse_policy(text, "p.yaml")
    assert "p.yaml:7:" in str(info.value)


def test_languages_compile_to_a_law_rule_named_in_the_policy() -> None:
    policy = parse_policy(BASE + "languages: [en, fr]\n", "p.yaml")
    rule = policy.rules[-1]
    assert (rule.id, rule.layer, rule.action) == (LANGUAGE_RULE_ID, "law", "block")
    assert rule.message is not None and "en, fr" in rule.message
    soft = parse_policy(BASE + "languages: [en]\nunguarded_language: input_rules_only\n", "p")
    assert (soft.rules[-1].action, soft.rules[-1].message) == ("use_default", None)
    # The version covers the choice: two policies that differ only there differ in version.
    assert soft.version != parse_policy(BASE + "languages: [en]\n", "p").version


def _palm(tmp_path: Path, extra: str) -> Palm:
    text = textwrap.dedent(
        """\
        version: 2
        traits: [brevity, structure, formality]
        defaults: {weights: {brevity: 0.3, structure: 0.4, formality: 0.3}}
        topics:
          weapons: {keywords: [bomb*, bomba*]}
        bounds:
          - {id: no-weapons, layer: law, when: {topic: weapons}, action: block, message: Not that.}
        """
    )
    (tmp_path / "p.yaml").write_text(text + extra)
    return Palm(
        load_portfolio(bundled("smollm2/portfolio.yaml")),
        load_policy(tmp_path / "p.yaml"),
        MemoryStore(),
        embedder=None,
    )


def test_refuse_blocks_an_unguarded_language_and_audits_it(tmp_path: Path) -> None:
    palm = _palm(tmp_path, "languages: [en, fr]\nunguarded_language: refuse\n")
    with pytest.raises(DecisionBlocked) as info:
        palm.decide("u", [{"role": "user", "content": ITALIAN}])
    assert info.value.rule_id == LANGUAGE_RULE_ID
    assert "en, fr" in info.value.user_message
    served = palm.decide("u", [{"role": "user", "content": FRENCH}])
    assert served.language == "fr" and served.headers()["x-palm-language"] == "fr"
    assert LANGUAGE_RULE_ID not in served.rules_active
    assert palm.decide("u", [{"role": "user", "content": "grazie"}]).language is None  # short
    # Also hidden in a base64 payload, judged by what it decodes to.
    payload = base64.b64encode(ITALIAN.encode()).decode()
    with pytest.raises(DecisionBlocked):
        palm.decide("u", [{"role": "user", "content": payload}])
    blocks = [r.payload for r in palm.store.audit() if r.kind == "block"]
    assert [(b["rule_id"], b["language"]) for b in blocks] == [(LANGUAGE_RULE_ID, "it")] * 2
    assert all("chitarra" not in str(b) for b in blocks)  # labels only, never the text


def test_input_rules_only_serves_the_default_under_the_request_rules(tmp_path: Path) -> None:
    palm = _palm(tmp_path, "languages: [en, fr]\nunguarded_language: input_rules_only\n")
    d = palm.decide("u", [{"role": "user", "content": ITALIAN}])
    assert d.action == "use_default" and d.used_default and d.language == "it"
    assert LANGUAGE_RULE_ID in d.rules_active and LANGUAGE_RULE_ID in d.rules_fired
    assert "language: it" in d.explanation
    record = next(r.payload for r in palm.store.audit() if r.kind == "decision")
    assert record["language"] == "it" and LANGUAGE_RULE_ID in record["rules_active"]
    # The request rules still apply: a block rule wins over serving the default.
    with pytest.raises(DecisionBlocked) as info:
        palm.decide("u", [{"role": "user", "content": "Come posso costruire una bomba in casa?"}])
    assert info.value.rule_id == "no-weapons"


def test_a_condition_may_read_the_language(tmp_path: Path) -> None:
    palm = _palm(
        tmp_path,
        "  - {id: fr-default, when: {language: fr}, action: use_default}\n",
    )
    assert palm.decide("u", [{"role": "user", "content": FRENCH}]).action == "use_default"
    assert palm.decide("u", [{"role": "user", "content": ENGLISH}]).action == "clamp"


def test_the_assistant_policy_guards_its_six_languages() -> None:
    policy = load_policy(bundled("smollm2/policy.yaml"))
    assert policy.spec is not None and policy.spec.languages == ["en", "fr", "es", "de", "zh", "ru"]
    assert policy.rules[-1].id == LANGUAGE_RULE_ID and policy.rules[-1].action == "block"


class _WordEmbedder:
    """A 3-d stand-in for MiniLM: axis 0 counts "alpha", axis 1 "beta", axis 2 is a bias."""

    def embed(self, texts: object) -> np.ndarray:
        rows = []
        for t in texts:  # type: ignore[attr-defined]
            v = np.array([t.count("alpha"), t.count("beta"), 0.5], dtype=np.float64)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows)


def _train(word: str, path: Path) -> None:
    """A one-topic classifier whose positives are texts with ``word``."""
    emb = _WordEmbedder()
    texts = [f"{w} {i}" for i in range(20) for w in ("alpha", "beta", "gamma")]
    y = ["risk" if t.startswith(word) else "none" for t in texts]
    clf = GuardClassifier().fit(emb.embed(texts), y)
    clf.calibrate(emb.embed(texts), y)
    clf.save(path)


def test_a_reload_reads_a_retrained_classifier_even_with_the_same_version(tmp_path: Path) -> None:
    # Before: the labeller kept one classifier per policy *version* (a hash of the policy's
    # content), so a classifier retrained in place was never read again after a reload.
    npz = tmp_path / "risk.npz"
    _train("alpha", npz)
    text = textwrap.dedent(
        f"""\
        version: 2
        traits: [brevity, structure, formality]
        defaults: {{weights: {{brevity: 0.3, structure: 0.4, formality: 0.3}}}}
        topics:
          risk: {{classifier: {{name: "{npz}"}}}}
        bounds:
          - {{id: no-risk, layer: law, when: {{topic: risk}}, action: block, message: Not that.}}
        """
    )
    path = tmp_path / "p.yaml"
    path.write_text(text)
    rp = ReloadingPolicy(path, min_interval=3600)
    palm = Palm(
        load_portfolio(bundled("smollm2/portfolio.yaml")),
        rp,
        MemoryStore(),
        embedder=_WordEmbedder(),
    )
    with pytest.raises(DecisionBlocked):
        palm.decide("u", [{"role": "user", "content": "alpha alpha"}])
    palm.decide("u", [{"role": "user", "content": "beta beta"}])
    version = palm.policy.version
    _train("beta", npz)  # retrained in place; the operator touches the policy to reload
    path.write_text(text + "# retrained the classifier\n")
    assert rp.poll(force=True)
    assert palm.policy.version == version
    with pytest.raises(DecisionBlocked):
        palm.decide("u", [{"role": "user", "content": "beta beta"}])
    palm.decide("u", [{"role": "user", "content": "alpha alpha"}])
