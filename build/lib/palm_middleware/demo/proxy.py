"""Start and stop a LiteLLM proxy process with PALM on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from ..exceptions import ConfigError

__all__ = ["ProxyProcess", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ProxyProcess:
    """``litellm --config CONFIG`` in its own process group, with ``PALM_CONFIG`` set.

    Use as a context manager; :meth:`start` waits until ``/health/liveliness`` answers.

    Args:
        config: LiteLLM proxy config.
        palm_config: ``palm.yaml`` of the deployment.
        port: Port on ``host`` (default: a free one).
        host: Bind address; 127.0.0.1 keeps the proxy local.
        log: File that receives the proxy's output (default: ``proxy.log`` beside ``config``).
    """

    def __init__(
        self,
        config: str | Path,
        palm_config: str | Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        log: str | Path | None = None,
    ) -> None:
        # Absolute: the proxy runs in the config's folder, so relative paths would not resolve.
        self.config = Path(config).resolve()
        self.palm_config = Path(palm_config).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.log = Path(log).resolve() if log is not None else self.config.parent / "proxy.log"
        self.url = f"http://{host}:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The proxy's command line."""
        litellm = Path(sys.executable).parent / "litellm"
        if not litellm.exists():
            raise ConfigError(
                f"{litellm} not found: the demo needs the LiteLLM proxy; install "
                "it with `pip install -e adapters/litellm` (make setup does)"
            )
        return [
            str(litellm),
            "--config",
            str(self.config),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--num_workers",
            "1",
        ]

    def start(self, timeout: float = 240.0) -> ProxyProcess:
        """Start the proxy and wait until it is live; raises with its log tail if it dies."""
        env = dict(os.environ)
        env.update(
            {
                "PALM_CONFIG": str(self.palm_config.resolve()),
                # Offline start: LiteLLM's bundled cost map instead of fetching it.
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": env.get("LITELLM_LOG", "ERROR"),
                "NO_PROXY": "127.0.0.1,localhost",
            }
        )
        env.pop("DATABASE_URL", None)  # no LiteLLM database: keys live in palm.yaml
        with open(self.log, "wb") as out:
            self._proc = subprocess.Popen(
                self.command(),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.config.parent,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ConfigError(
                    f"the LiteLLM proxy exited with {self._proc.returncode}; "
                    f"end of {self.log}:\n{self._tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health/liveliness", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise ConfigError(
            f"the LiteLLM proxy was not live after {timeout:.0f} s; end of "
            f"{self.log}:\n{self._tail()}"
        )

    def _tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Terminate the proxy's process group (SIGTERM, then SIGKILL after 15 s)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def __enter__(self) -> ProxyProcess:
        return self.start() if self._proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
