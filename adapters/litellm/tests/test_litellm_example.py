"""``palm proxy`` starts examples/litellm/config.yaml on 127.0.0.1 (tiny models in the folders)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from litellm_proxy_fixtures import free_port

from palm_middleware.cli.__main__ import main
from tests.engines.tiny import train_tokenizer, write_model

ROOT = Path(__file__).resolve().parents[3]


def test_dry_run_prints_loopback_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["proxy", "--config", str(ROOT / "examples/litellm/config.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--host 127.0.0.1" in out and "PALM_CONFIG=" in out


def test_missing_config_is_an_error(tmp_path: Path) -> None:
    assert main(["proxy", "--config", str(tmp_path / "nope.yaml")]) == 2


def test_palm_proxy_serves_the_example(tmp_path: Path) -> None:
    example = tmp_path / "litellm"
    shutil.copytree(ROOT / "examples" / "litellm", example)
    train_tokenizer(tmp_path / "tok")
    for seed, name in enumerate(("balanced", "playful", "base")):
        write_model(example / "models" / name, tmp_path / "tok" / "tokenizer.json", seed=seed)
    port = free_port()
    master = f"sk-example-{secrets.token_hex(12)}"
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": master,
        "LITELLM_LOG": "ERROR",
        "THOROUGH_API_BASE": "http://127.0.0.1:9/v1",
    }
    log = open(tmp_path / "proxy.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "palm_middleware.cli",
            "proxy",
            "--config",
            str(example / "config.yaml"),
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "proxy.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "proxy not ready"
            try:
                if httpx.get(url + "/health/liveliness", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
        with openai.OpenAI(base_url=url + "/v1", api_key=master, max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="auto", user="u1", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
            assert raw.headers["x-palm-member"] == "balanced"
            assert raw.parse().choices[0].message.content
        r = httpx.get(
            url + "/palm/v1/profile",
            params={"user": "u1"},
            headers={"Authorization": f"Bearer {master}"},
        )
        assert r.status_code == 200 and r.json()["opted_out"] is False
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
