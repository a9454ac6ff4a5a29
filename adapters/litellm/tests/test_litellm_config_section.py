"""Issue 14 part 3: PALM's settings in the proxy's own ``config.yaml`` (a top-level ``palm:``).

A real LiteLLM 1.106.2 proxy started without ``PALM_CONFIG`` reads them there and serves; a
setting error is located in ``config.yaml``; both sources at once are refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from litellm_proxy_fixtures import Deployment, Proxy, build_deployment, start_proxy, stop_proxy

from palm_litellm.config import SECTION, PalmProxySettings, settings_source
from palm_middleware.exceptions import ConfigError


def merged_config(dep: Deployment, name: str = "config.yaml") -> Path:
    """``config.yaml`` with ``palm.yaml`` folded in under ``palm:`` (one file, no PALM_CONFIG)."""
    config = yaml.safe_load((dep.root / "config.yaml").read_text())
    config[SECTION] = yaml.safe_load((dep.root / "palm.yaml").read_text())
    path = dep.root / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def one_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    dep = build_deployment(tmp_path_factory.mktemp("onefile"))
    merged_config(dep)
    (dep.root / "palm.yaml").unlink()  # nothing else to find
    p = start_proxy(dep, palm_config=False)
    yield p
    stop_proxy(p)


def test_proxy_serves_with_settings_in_its_config(one_file: Proxy) -> None:
    dep = one_file.deployment
    ready = httpx.get(one_file.url + "/health/readiness", timeout=30)
    assert ready.status_code == 200, ready.text
    with openai.OpenAI(
        base_url=one_file.url + "/v1", api_key=dep.keys["alice"], max_retries=0, timeout=60
    ) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Hello"}], max_tokens=4
        )
    assert raw.headers["x-palm-member"] == "balanced"
    assert raw.parse().choices[0].message.content
    profile = httpx.get(
        one_file.url + "/palm/v1/profile",
        headers={"Authorization": f"Bearer {dep.keys['alice']}"},
        timeout=30,
    )
    assert profile.status_code == 200, profile.text
    assert (dep.root / "palm.db").is_file()  # the store path is relative to config.yaml


def test_error_in_section_is_located_in_config_yaml(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("model_list: []\npalm:\n  portfolio: p.yaml\n  route_models: []\n")
    with pytest.raises(ConfigError) as info:
        PalmProxySettings.from_file(path, SECTION)
    text = str(info.value)
    assert "config.yaml:4" in text and "palm.route_models" in text, text


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("model_list: []\npalm: 3\n")
    with pytest.raises(ConfigError, match="`palm:` must be a mapping"):
        PalmProxySettings.from_file(path, SECTION)


def test_settings_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PALM_CONFIG alone, the proxy's section alone, neither, or both (refused)."""
    config = tmp_path / "config.yaml"
    config.write_text("model_list: []\npalm: {portfolio: p.yaml}\n")
    plain = tmp_path / "plain.yaml"
    plain.write_text("model_list: []\n")
    monkeypatch.delenv("CONFIG_FILE_PATH", raising=False)
    monkeypatch.delenv("PALM_CONFIG", raising=False)
    monkeypatch.setenv("WORKER_CONFIG", json.dumps({"config": str(config)}))
    assert settings_source() == (config, SECTION)
    monkeypatch.setenv("PALM_CONFIG", str(tmp_path / "palm.yaml"))
    with pytest.raises(ConfigError, match="keep one"):
        settings_source()
    monkeypatch.setenv("WORKER_CONFIG", json.dumps({"config": str(plain)}))
    assert settings_source() == (tmp_path / "palm.yaml", None)
    monkeypatch.delenv("PALM_CONFIG")
    with pytest.raises(ConfigError, match="no PALM settings"):
        settings_source()


def test_palm_proxy_cli_uses_the_section(tmp_path: Path) -> None:
    """``palm proxy`` on a config with ``palm:`` sets no PALM_CONFIG and checks the section."""
    import subprocess
    import sys

    dep = build_deployment(tmp_path)
    config = merged_config(dep, "one.yaml")
    cmd = [sys.executable, "-m", "palm_middleware.cli", "proxy", "--config", str(config)]
    out = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "PALM_CONFIG=" not in out.stdout and str(config) in out.stdout
    broken = yaml.safe_load(config.read_text())
    broken[SECTION]["route_models"] = []
    config.write_text(yaml.safe_dump(broken, sort_keys=False))
    out = subprocess.run([*cmd, "--port", "1"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "one.yaml" in out.stderr, out.stderr
