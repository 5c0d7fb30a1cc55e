"""Central's settings: ``central.toml`` in the data directory, ``BART_CENTRAL_…``
environment variables, and command-line flags, in increasing order of precedence.

The node's pattern (node/config.py): ``bart central init`` writes the file,
``bart central run`` and its workers read it. Every setting is documented in
docs/central.md (a test checks this). A wrong value is refused with the file or
variable it came from and the rule in plain words, never a library URL.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Final

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from common.ratelimit import check_trusted_proxies
from common.settings import FileSettings
from sync.bodies import SLUG

from .errors import CentralConfigError

CONFIG_FILE: Final = "central.toml"
#: Environment variables that set central's settings start with this, e.g.
#: ``BART_CENTRAL_HTTP_PORT``; ``bart central run`` passes ``--database-url`` to its
#: workers as ``BART_CENTRAL_DATABASE_URL``. (``BART_CENTRAL_DIR`` names the data
#: directory, not a setting.)
ENV_PREFIX: Final = "BART_CENTRAL_"


class CentralSettings(FileSettings):
    """Settings of a central server. See docs/central.md."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    name: str = Field(default="central", pattern=SLUG.pattern)
    database_url: str = Field(default="", max_length=1000)
    public_url: str = Field(default="http://127.0.0.1:8090", max_length=300)
    http_host: str = Field(default="127.0.0.1", max_length=253)
    http_port: int = Field(default=8090, ge=1, le=65535)
    enrol_code_ttl_s: int = Field(default=86_400, ge=60, le=30 * 86_400)
    silent_after_s: int = Field(default=900, ge=60, le=7 * 86_400)
    max_batch_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    #: Handled reports are anonymised this many days later (central/retention.py).
    retention_days: int = Field(default=365, ge=30, le=3650)
    #: Addresses or networks whose X-Forwarded-For/-Proto are believed (the reverse
    #: proxy in front of central); empty: none (issue 17).
    trusted_proxies: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        return check_trusted_proxies(value)

    @property
    def origin(self) -> str:
        """Central's origin in the event model, e.g. ``central-haaglanden``."""
        return self.name if self.name.startswith("central") else f"central-{self.name}"

    @classmethod
    def load(cls, data_dir: Path, **overrides: Any) -> CentralSettings:
        """Read ``data_dir/central.toml``, then the environment, then ``overrides``
        (flags; None means not given)."""
        path = data_dir / CONFIG_FILE
        if not path.exists():
            raise CentralConfigError(
                f"no central in {data_dir} (run: bart central init --data-dir {data_dir})")
        try:
            file_values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CentralConfigError(f"{path}: not valid TOML: {exc}") from exc
        env = env_settings()
        values = {k: v for k, v in file_values.items() if k not in env}
        given = {k: v for k, v in overrides.items() if v is not None}
        values.update(given)
        try:
            return cls(**values)
        except ValidationError as exc:
            where = {k: f"${ENV_PREFIX}{k.upper()}" for k in env if k not in given}
            problem = f"{path}: {plain_errors(exc, where)}"
        # Raised outside the except block: the words above are the whole message (the
        # CLI would otherwise find the library's error in the chain and name the file
        # for a value that came from the environment).
        raise CentralConfigError(problem)

    def render_toml(self) -> str:
        """These settings as ``central.toml`` text (every key, defaults included)."""
        lines = ["# Bart central settings. See docs/central.md for every key.", ""]
        lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}"
                  for k, v in self.model_dump().items()]
        return "\n".join(lines) + "\n"


def env_settings() -> set[str]:
    """The settings the environment sets now (``BART_CENTRAL_HTTP_PORT`` → http_port)."""
    names = set(CentralSettings.model_fields)
    return {k[len(ENV_PREFIX):].lower() for k in os.environ
            if k.upper().startswith(ENV_PREFIX)} & names


def plain_errors(exc: ValidationError, where: dict[str, str] | None = None) -> str:
    """A validation error as one line of words: each setting and its rule, no URLs.

    ``where`` names the source of a setting that did not come from the file
    (an environment variable).

    >>> try:
    ...     CentralSettings(http_port=0)
    ... except ValidationError as exc:
    ...     print(plain_errors(exc))
    http_port must be at least 1 (not 0)
    """
    where = where or {}
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in error.get("loc", ())) or "a value"
        label = f"{loc} (from {where[loc]})" if loc in where else loc
        kind = str(error.get("type", ""))
        limit = next(iter((error.get("ctx") or {}).values()), "?")
        rule = _RULES.get(kind, "").format(limit=limit) or ": " + str(
            error.get("msg", "")).removeprefix("Value error, ").removeprefix(f"{loc}: ")
        given = error.get("input")
        shown = (f" (not {given!r})" if isinstance(given, str | int | float)
                 and not isinstance(given, bool) and len(repr(given)) <= 80
                 and kind != "extra_forbidden" else "")
        if kind == "value_error":
            shown = ""  # the rule's own words name the value
        parts.append(f"{label}{'' if rule.startswith(':') else ' '}{rule}{shown}")
    return "; ".join(parts)


_RULES: Final = {
    "int_parsing": "must be a whole number", "int_type": "must be a whole number",
    "string_type": "must be text", "list_type": "must be a list",
    "string_pattern_mismatch": "has characters that are not allowed there",
    "string_too_long": "must be at most {limit} characters long",
    "too_long": "must have at most {limit} entries",
    "greater_than_equal": "must be at least {limit}",
    "less_than_equal": "must be at most {limit}",
    "extra_forbidden": "is not a setting of central (misspelt? docs/central.md lists them)",
}
