"""Locust scenario: app users chatting through the PALM proxy replicas and sending feedback.

The replicas are listed in ``PALM_REPLICAS`` (comma-separated base URLs); each simulated user
picks one per request, round robin, as a load balancer would. ``PALM_KEY`` is an app key that
names its end users. Run by ``bench/bench_replicas.py``; by hand:

    PALM_REPLICAS=http://127.0.0.1:4000,http://127.0.0.1:4001 PALM_KEY=sk-... \
        locust -f bench/locustfile.py --headless -u 12 -r 12 -t 30s --host http://127.0.0.1:4000
"""

from __future__ import annotations

import itertools
import os
import random
import uuid

from locust import HttpUser, between, task

REPLICAS = [u for u in os.environ.get("PALM_REPLICAS", "").split(",") if u]
KEY = os.environ.get("PALM_KEY", "")
MEMBERS = ("balanced", "terse", "playful")
_next = itertools.count()


class PalmAppUser(HttpUser):
    """One end user of an app backend: mostly chats, sometimes rates a reply."""

    wait_time = between(0.0, 0.1)

    def on_start(self) -> None:
        self.user_id = f"load-{next(_next) % 10_000}"
        self.turn = 0

    def _base(self) -> str:
        self.turn += 1
        return REPLICAS[self.turn % len(REPLICAS)] if REPLICAS else ""

    @task(4)
    def chat(self) -> None:
        self.client.post(
            f"{self._base()}/v1/chat/completions",
            json={
                "model": "auto",
                "messages": [{"role": "user", "content": "Hello there"}],
                "max_tokens": 4,
                "user": self.user_id,
            },
            headers={"Authorization": f"Bearer {KEY}"},
            name="chat",
        )

    @task(1)
    def feedback(self) -> None:
        winner, loser = random.sample(MEMBERS, 2)
        self.client.post(
            f"{self._base()}/palm/v1/feedback",
            json={
                "type": "pairwise",
                "winner": winner,
                "loser": loser,
                "user": self.user_id,
                "event_id": uuid.uuid4().hex,
            },
            headers={"Authorization": f"Bearer {KEY}"},
            name="feedback",
        )
