"""What the engine needs of the configuration, read once per application.

The engine never reads ``current_app``: its entry points (``jobs``, the services) hand
this object down (``Dispatcher.settings``, the unit of work of ``outbox``), so a worker,
a request and a test drive the same code with the settings they were given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from capability.dsl.budget import Budget
from capability.egress import EgressPolicy


@dataclass(frozen=True)
class EngineSettings:
    queues: tuple[str, ...] = ("high", "default", "low")  # RQ_QUEUES: where workers listen
    task_default_timeout: float = 3600.0  # TASK_DEFAULT_TIMEOUT: a task without its own
    python_prefixes: tuple[str, ...] = ()  # PYTHON_TASK_PREFIXES: callables `python` may run
    http_timeout: float = 30.0  # an `http` task without a timeout of its own or of its task
    secrets_key: str = ""  # SECRETS_KEY: Fernet keys (capability.secrets.vault)
    secret_key: str = ""  # SECRET_KEY: the derived key when SECRETS_KEY is empty
    live_updates: bool = True  # APG_LIVE_UPDATES: tell the browsers watching a run
    # EGRESS_DENY, EGRESS_ALLOW and the app's own endpoints: where tasks may connect
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    expression_timeout: float = 2.0  # EXPRESSION_TIMEOUT: one evaluation's time budget
    output_max_bytes: int = 1024 * 1024  # TASK_OUTPUT_MAX_BYTES: an attempt's stored output
    log_max_lines: int = 2000  # TASK_LOG_MAX_LINES: lines an attempt's log keeps
    # TEAM_MAX_ACTIVE_RUNS, TEAM_RUN_RATE (starts a minute): run starts' quotas, 0 = none
    team_max_active_runs: int = 0
    team_run_rate: int = 0
    files_dir: str = ""  # CONNECTION_FILES_DIR: where local-file connections may point
    # CONNECTION_BREAKER_FAILURES in a row open a connection's breaker for _COOLDOWN s
    breaker_failures: int = 5
    breaker_cooldown: float = 60.0
    # LLM_PRICES: per model, per 1,000 tokens ({"prompt": 0.1, "completion": 0.3})
    llm_prices: Mapping[str, Any] = field(default_factory=dict)

    @property
    def expression_budget(self) -> Budget:
        """The budget of every evaluation of a task's expressions (``dsl.budget``)."""
        return Budget(timeout=self.expression_timeout)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EngineSettings:
        return cls(
            queues=tuple(config["RQ_QUEUES"]),
            task_default_timeout=float(config["TASK_DEFAULT_TIMEOUT"]),
            python_prefixes=tuple(config.get("PYTHON_TASK_PREFIXES") or ()),
            secrets_key=str(config.get("SECRETS_KEY") or ""),
            secret_key=str(config.get("SECRET_KEY") or ""),
            live_updates=bool(config.get("APG_LIVE_UPDATES", True)),
            egress=EgressPolicy.from_config(config),
            expression_timeout=float(config.get("EXPRESSION_TIMEOUT") or 2.0),
            output_max_bytes=int(config.get("TASK_OUTPUT_MAX_BYTES", 1024 * 1024)),
            log_max_lines=int(config.get("TASK_LOG_MAX_LINES", 2000)),
            team_max_active_runs=int(config.get("TEAM_MAX_ACTIVE_RUNS") or 0),
            team_run_rate=int(config.get("TEAM_RUN_RATE") or 0),
            files_dir=str(config.get("CONNECTION_FILES_DIR") or ""),
            breaker_failures=int(config.get("CONNECTION_BREAKER_FAILURES", 5)),
            breaker_cooldown=float(config.get("CONNECTION_BREAKER_COOLDOWN", 60)),
            llm_prices=_prices(config.get("LLM_PRICES")),
        )


def _prices(raw: Any) -> Mapping[str, Any]:
    """``LLM_PRICES`` as a mapping (JSON text from the environment, or a dict)."""
    if isinstance(raw, Mapping):
        return raw
    if not raw:
        return {}
    value = json.loads(str(raw))
    if not isinstance(value, dict):
        raise ValueError("LLM_PRICES must be a JSON object: {model: {prompt, completion}}")
    return value
