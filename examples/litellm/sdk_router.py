"""PALM in the LiteLLM SDK, no proxy: ``litellm.Router`` routes ``model="auto"`` per user.

    python examples/litellm/sdk_router.py --palm examples/litellm/palm.yaml \\
        --config examples/litellm/config.yaml

The Router gets the same gate as the proxy (decision, bounds, blocks, audit). Who the caller is
comes from the application's own authentication, set with ``palm_litellm.sdk.acting_as``, never
from a request field (``user``, ``metadata``) that an end user could have written.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import litellm
import yaml

from palm_litellm import sdk
from palm_litellm.config import PalmRuntime
from palm_litellm.provider import PalmProvider
from palm_middleware import PalmError


async def main(palm_yaml: Path, config_yaml: Path) -> list[str]:
    """Route two users and one refused request; return what happened, one line each."""
    runtime = PalmRuntime.from_file(palm_yaml)
    # Local ONNX members are served in-process by the palm_onnx provider.
    litellm.custom_provider_map = [
        {"provider": "palm_onnx", "custom_handler": PalmProvider(runtime)}
    ]
    from litellm.utils import custom_llm_setup

    custom_llm_setup()
    model_list = yaml.safe_load(config_yaml.read_text())["model_list"]
    router = litellm.Router(model_list=model_list)
    sdk.install(router, runtime)

    lines = []
    for user in ("alice", "bob"):
        # In a web app: the user id from the session or token this request authenticated.
        with sdk.acting_as(user):
            out = await router.acompletion(
                model="auto", messages=[{"role": "user", "content": "Hi!"}], max_tokens=8
            )
        lines.append(f"{user} -> {out.model}: {out.choices[0].message.content!r}")
    try:
        with sdk.acting_as("alice"):  # a member named directly: not for personal callers
            await router.acompletion(model="playful", messages=[{"role": "user", "content": "x"}])
    except PalmError as exc:
        lines.append(f"refused: {exc}")
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--palm", type=Path, default=Path(__file__).with_name("palm.yaml"))
    parser.add_argument("--config", type=Path, default=Path(__file__).with_name("config.yaml"))
    args = parser.parse_args()
    for line in asyncio.run(main(args.palm, args.config)):
        print(line)
