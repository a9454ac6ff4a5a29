"""``palm proxy``: start the LiteLLM proxy with the PALM hook, provider and endpoints."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError

__all__ = ["command", "register", "run"]


def register(sub: Any) -> None:
    """Add the ``proxy`` sub-command to ``sub`` (the result of ``add_subparsers``)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "proxy",
        help="run the LiteLLM proxy with PALM routing (needs palm-litellm)",
        description=(
            "Start `litellm --config CONFIG` on HOST:PORT (127.0.0.1 by default). PALM's settings: "
            "the `palm:` section of CONFIG, else PALM_CONFIG set to the palm.yaml next to CONFIG "
            "(or --palm-config). Needs the palm-litellm "
            "package: pip install -e adapters/litellm."
        ),
    )
    parser.add_argument(
        "--config",
        default="examples/litellm/config.yaml",
        help="LiteLLM proxy config (default: %(default)s)",
    )
    parser.add_argument(
        "--palm-config", default=None, help="palm.yaml (default: palm.yaml next to --config)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=4000, help="port (default: %(default)s)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the command and environment instead of running it",
    )
    parser.set_defaults(func=run)


def command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The proxy command line and the environment it runs with."""
    config = Path(args.config).resolve()
    if not args.palm_config and _has_palm_section(config):
        palm_config = config  # the settings are under `palm:` in the proxy's own config
    else:
        palm_config = (
            Path(args.palm_config).resolve() if args.palm_config else (config.parent / "palm.yaml")
        )
    for path in (config, palm_config):
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
    # Looked up, not imported, so a missing adapter is a clear error. check_runtime imports it
    # inside the function: the one CLI -> adapter import tests/test_import_rules.py allows.
    if importlib.util.find_spec("palm_litellm") is None:
        raise ConfigError(
            "palm proxy needs the palm-litellm package; install it with: "
            "pip install -e adapters/litellm"
        )
    litellm = Path(sys.executable).parent / "litellm"
    cmd = [
        str(litellm),
        "--config",
        str(config),
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--num_workers",
        "1",
    ]
    env = {
        # The proxy process exits (3) if it cannot build the runtime, e.g. a member folder.
        "PALM_FAIL_FAST": "1",
        # Offline start: use the cost map bundled with litellm instead of fetching it.
        "LITELLM_LOCAL_MODEL_COST_MAP": os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
    }
    if palm_config != config:
        env["PALM_CONFIG"] = str(palm_config)
    return cmd, env


def _has_palm_section(config: Path) -> bool:
    """True if the proxy's config holds PALM's settings under a top-level ``palm:``."""
    if not config.is_file():
        return False
    from .._yaml import load_yaml_file

    data = load_yaml_file(config, ConfigError).data
    return isinstance(data, dict) and "palm" in data


def check_runtime(palm_config: Path, section: str | None = None) -> None:
    """Build the runtime (palm.yaml, portfolio, policy, store) before serving anything.

    Raises:
        ConfigError: the first broken file, located ``file:line:col``; ``palm`` exits non-zero.
    """
    from palm_litellm.config import PalmRuntime

    runtime = PalmRuntime.from_file(palm_config, section)
    close = getattr(runtime.palm.store, "close", None)
    if callable(close):
        close()


def run(args: argparse.Namespace) -> int:
    """Run the proxy in the foreground; return its exit code."""
    cmd, env = command(args)
    if args.dry_run:
        for k, v in env.items():
            print(f"{k}={shlex.quote(v)}")
        print(shlex.join(cmd))
        return 0
    if "PALM_CONFIG" in env:
        check_runtime(Path(env["PALM_CONFIG"]))
    else:
        check_runtime(Path(args.config).resolve(), "palm")
    print(f"palm proxy: serving on http://{args.host}:{args.port} (Ctrl-C stops)", file=sys.stderr)
    try:
        return subprocess.call(cmd, env={**os.environ, **env})
    except KeyboardInterrupt:
        return 130
