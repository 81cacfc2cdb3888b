"""The emulator's settings (what `/_emulator/config` reads and changes) and their validation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from localdev.openai_emulator.faults import FAULT_KINDS
from localdev.openai_emulator.models import validate_models

# The first is infra/main.bicep's default model (a reasoning one), which the local stack gives
# the app as AZURE_OPENAI_DEPLOYMENT (tests/infra checks they agree); the second is a standard
# (non-reasoning) model, for pipelines that name it.
REASONING_DEPLOYMENT = "gpt-5.6-luna"
STANDARD_DEPLOYMENT = "gpt-4.1-mini"
DEFAULT_DEPLOYMENTS = (REASONING_DEPLOYMENT, STANDARD_DEPLOYMENT)
DEFAULT_MAX_TOKENS = 1000
DEFAULT_CONTEXT_WINDOW = 128_000


@dataclass
class EmulatorConfig:
    deployments: list[str] = field(default_factory=lambda: list(DEFAULT_DEPLOYMENTS))
    # Per-deployment model profiles (localdev.openai_emulator.models); unnamed ones follow the name.
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rpm: int = 0
    tpm: int = 0
    fault_rates: dict[str, float] = field(default_factory=dict)
    timeout_seconds: float = 30.0
    fault_retry_after_ms: int = 1000
    context_window: int = DEFAULT_CONTEXT_WINDOW
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int | None = None

    def updated(self, changes: dict[str, Any]) -> EmulatorConfig:
        """A validated copy with `changes` applied; raises ValueError naming the bad field."""
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        merged = asdict(self)
        for key, value in changes.items():
            merged_dicts = key in ("fault_rates", "models") and isinstance(value, dict)
            merged[key] = {**getattr(self, key), **value} if merged_dicts else value
        new = EmulatorConfig(**merged)
        new.validate()
        return new

    def validate(self) -> None:
        if isinstance(self.deployments, str):
            self.deployments = [d.strip() for d in self.deployments.split(",") if d.strip()]
        if not isinstance(self.deployments, list) or not all(isinstance(d, str) and d for d in self.deployments):
            raise ValueError("deployments must be a list of names")
        self.models = validate_models(self.models)
        for name in ("latency_ms", "jitter_ms", "timeout_seconds"):
            value = float(getattr(self, name))
            if value < 0:
                raise ValueError(f"{name} must not be negative")
            setattr(self, name, value)
        for name in ("rpm", "tpm", "fault_retry_after_ms", "context_window", "default_max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number, at least 0")
        if not isinstance(self.fault_rates, dict):
            raise ValueError("fault_rates must be an object of kind: probability")
        rates = {str(k): float(v) for k, v in self.fault_rates.items()}
        bad = set(rates) - set(FAULT_KINDS)
        if bad:
            raise ValueError(f"unknown fault kinds {sorted(bad)}; known: {', '.join(FAULT_KINDS)}")
        if any(not 0.0 <= r <= 1.0 for r in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates must each be within 0..1 and sum to at most 1")
        self.fault_rates = rates
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError("seed must be a whole number or null")
