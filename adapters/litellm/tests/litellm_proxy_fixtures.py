"""Helpers that build a proxy deployment and start/stop a real LiteLLM proxy on 127.0.0.1.

The members are tiny random GPT-2-shaped decoders built by ``tests/engines/tiny.py`` (they
stand for a deployment's aligned members: their text is noise, their serving path is real):

- ``balanced``: its own ONNX folder (the deployment default for the test policy);
- ``playful``: another ONNX folder (other weights);
- ``terse``: a prompted member over the shared base ``base`` (system prompt, ``max_tokens: 4``),
  which the hook applies before re-targeting to the ``base`` group.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from tests.engines.tiny import train_tokenizer, write_model

HERE = Path(__file__).parent

BLOCK_WORD = "forbidden-topic"
RULE_ID = "no-forbidden-topic"

POLICY = f"""\
version: 2
name: adapter-test
traits: [safety, helpfulness, humor, brevity]
defaults:
  weights: {{safety: 0.3, helpfulness: 0.4, humor: 0.1, brevity: 0.2}}
  prior_strength: 10
personalization: true
exploration: false
topics:
  forbidden: {{keywords: [{BLOCK_WORD}]}}
bounds:
  - id: safety-floor
    layer: law
    min: {{safety: 0.2}}
  - id: {RULE_ID}
    when: {{topic: forbidden}}
    action: block
    message: This assistant does not discuss that topic.
"""

PORTFOLIO = {
    "version": 1,
    "name": "adapter-test",
    "traits": ["safety", "helpfulness", "humor", "brevity"],
    "default_member": "balanced",
    "members": [
        {
            "id": "balanced",
            "backend": {"kind": "onnx", "path": "models/balanced"},
            "reward": {"safety": 0.84, "helpfulness": 0.78, "humor": 0.38, "brevity": 0.55},
        },
        {
            "id": "terse",
            "backend": {
                "kind": "prompted",
                "base": "base",
                "system_prompt": "Answer in one line.",
                "generation": {"max_tokens": 4},
            },
            "reward": {"safety": 0.74, "helpfulness": 0.50, "humor": 0.12, "brevity": 0.96},
        },
        {
            "id": "playful",
            "backend": {"kind": "onnx", "path": "models/playful"},
            "reward": {"safety": 0.66, "helpfulness": 0.64, "humor": 0.92, "brevity": 0.40},
        },
    ],
}


@dataclass(frozen=True)
class Deployment:
    """A folder with palm.yaml, config.yaml, models, and the keys that authenticate."""

    root: Path
    master_key: str
    keys: dict[str, str]  # name -> raw key


def _digest(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()


def build_deployment(root: Path, *, with_hook: bool = True) -> Deployment:
    """Write a complete proxy deployment (models, manifest, policy, palm.yaml, config.yaml)."""
    tok = root / "tok"
    if not (tok / "tokenizer.json").exists():
        train_tokenizer(tok)
    for name, seed in (("balanced", 0), ("playful", 2), ("base", 1)):
        if not (root / "models" / name / "model.onnx").exists():
            write_model(root / "models" / name, tok / "tokenizer.json", seed=seed)
    (root / "portfolio.yaml").write_text(yaml.safe_dump(PORTFOLIO, sort_keys=False))
    (root / "policy.yaml").write_text(POLICY)
    keys = {name: f"sk-palm-{name}-{secrets.token_hex(8)}" for name in ("alice", "bob", "webapp")}
    master = f"sk-palm-master-{secrets.token_hex(12)}"
    palm = {
        "portfolio": "portfolio.yaml",
        "policy": "policy.yaml",
        "store": "palm.db",
        "route_models": ["auto"],
        "bases": {"base": "models/base"},
        "auth": {
            "keys": [
                {"sha256": _digest(keys["alice"]), "user": "alice"},
                {"sha256": _digest(keys["bob"]), "user": "bob"},
                {"sha256": _digest(keys["webapp"]), "app": "webapp"},
            ]
        },
    }
    (root / "palm.yaml").write_text(yaml.safe_dump(palm, sort_keys=False))
    models = [
        {"model_name": n, "litellm_params": {"model": f"palm_onnx/{n}"}}
        for n in ("auto", "balanced", "playful", "base")
    ]
    config: dict[str, object] = {
        "model_list": models,
        "litellm_settings": {
            "custom_provider_map": [
                {"provider": "palm_onnx", "custom_handler": "palm_litellm.provider.instance"}
            ],
        },
        "general_settings": {
            "master_key": master,
            "custom_auth": "palm_litellm.auth.user_api_key_auth",
        },
    }
    if with_hook:
        config["litellm_settings"]["callbacks"] = ["palm_litellm.hook.instance"]  # type: ignore[index]
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return Deployment(root, master, keys)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stub:
    """A real second server process: ``tests/openai_stub.py``, an OpenAI-compatible member."""

    url: str
    process: subprocess.Popen[bytes]


def start_stub(env: dict[str, str]) -> Stub:
    port = free_port()
    repo = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen(
        [sys.executable, str(repo / "tests" / "openai_stub.py"), str(port)],
        env={**os.environ, **env},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/", timeout=0.5)
            return Stub(url, proc)
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("stub server did not start")


def stop_stub(stub: Stub) -> None:
    stub.process.terminate()
    stub.process.wait(timeout=10)


def build_stub_deployment(
    root: Path,
    stub: Stub,
    policy: str,
    members: dict[str, dict[str, float]],
    **palm_settings: object,
) -> Deployment:
    """A deployment whose members (``id -> reward``) are all served by one stub process.

    The first member is the default; one user key (``alice``) and a master key.
    """
    portfolio = {
        "version": 1,
        "name": root.name,
        "traits": list(dict.fromkeys(t for reward in members.values() for t in reward)),
        "default_member": next(iter(members)),
        "members": [
            {"id": m, "backend": {"kind": "litellm", "model": m}, "reward": reward}
            for m, reward in members.items()
        ],
    }
    (root / "portfolio.yaml").write_text(yaml.safe_dump(portfolio, sort_keys=False))
    (root / "policy.yaml").write_text(policy)
    key = f"sk-palm-alice-{secrets.token_hex(8)}"
    master = f"sk-palm-master-{secrets.token_hex(12)}"
    palm = {
        "portfolio": "portfolio.yaml",
        "policy": "policy.yaml",
        "store": "palm.db",
        "route_models": ["auto"],
        "auth": {"keys": [{"sha256": _digest(key), "user": "alice"}]},
        **palm_settings,
    }
    (root / "palm.yaml").write_text(yaml.safe_dump(palm, sort_keys=False))
    upstream = {"model": "openai/echo", "api_base": stub.url + "/v1", "api_key": "stub"}
    config = {
        "model_list": [
            {"model_name": name, "litellm_params": upstream} for name in ("auto", *members)
        ],
        "litellm_settings": {"callbacks": ["palm_litellm.hook.instance"]},
        "general_settings": {
            "master_key": master,
            "custom_auth": "palm_litellm.auth.user_api_key_auth",
        },
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return Deployment(root, master, {"alice": key})


@dataclass
class Proxy:
    url: str
    deployment: Deployment
    process: subprocess.Popen[bytes]
    log: Path


def start_proxy(
    dep: Deployment,
    config: Path | None = None,
    timeout: float = 180.0,
    *,
    env_extra: dict[str, str] | None = None,
    palm_config: bool = True,
) -> Proxy:
    """Start ``litellm --config`` on a free 127.0.0.1 port; wait for liveliness.

    ``env_extra`` adds variables to the proxy's environment (e.g. the Postgres DSN).
    ``palm_config=False``: no ``PALM_CONFIG`` (the settings are in the config's ``palm:``).
    """
    port = free_port()
    env = dict(os.environ)
    env.pop("PALM_CONFIG", None)
    if palm_config:
        env["PALM_CONFIG"] = str(dep.root / "palm.yaml")
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    env.update(env_extra or {})
    env.pop("DATABASE_URL", None)
    litellm_bin = Path(sys.executable).parent / "litellm"
    log = dep.root / f"proxy-{port}.log"
    cmd = [
        str(litellm_bin),
        "--config",
        str(config or dep.root / "config.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=dep.root, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url + "/health/liveliness", timeout=1.0).status_code == 200:
                return Proxy(url, dep, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop_proxy(Proxy(url, dep, proc, log))
    raise RuntimeError(f"proxy not ready in {timeout}s:\n{log.read_text()[-4000:]}")


def stop_proxy(proxy: Proxy) -> None:
    import signal

    if proxy.process.poll() is None:
        os.killpg(proxy.process.pid, signal.SIGTERM)
        try:
            proxy.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proxy.process.pid, signal.SIGKILL)
            proxy.process.wait(timeout=5)


def client_for(proxy: Proxy, who: str) -> httpx.Client:
    """An httpx client on the proxy with ``who``'s API key (the identity the proxy trusts)."""
    key = proxy.deployment.keys[who]
    return httpx.Client(base_url=proxy.url, timeout=60, headers={"Authorization": f"Bearer {key}"})
