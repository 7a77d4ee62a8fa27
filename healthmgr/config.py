"""Configuration: a TOML file, environment overrides, secrets from files.

Option names follow Octavia's ``octavia.conf`` where Octavia has them
(``[health_manager] bind_ip``, ``heartbeat_key``, ``failover_threshold``, ...).
Every option can be overridden by ``HEALTHMGR_<SECTION>__<OPTION>`` (the
environment wins over the file); lists and tables take JSON there.

Parsing is TOML (``tomllib``) and pydantic-settings' environment source;
validation is pydantic. Every problem is collected, named by its dotted key,
and raised as one :class:`ConfigError`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import socket
import string
import tomllib
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError
from pydantic_settings.sources.utils import parse_env_vars

from healthmgr.wire.keys import MasterKey

DEFAULT_CONFIG_PATH = "/etc/healthmgr/healthmgr.toml"
CONFIG_ENV_VAR = "HEALTHMGR_CONFIG"
ENV_PREFIX = "HEALTHMGR_"
ENV_DELIMITER = "__"
FAILOVER_DRIVER_GROUP = "healthmgr.failover_drivers"
FAILOVER_PLACEHOLDERS = ("amphora_id", "load_balancer_id", "reason", "attempt", "request_id")
MIN_SECRET_BYTES = 16
REDACTED = "<redacted>"

# Options that a running manager applies on SIGHUP; anything else needs a restart.
RELOADABLE: frozenset[str] = frozenset(
    {
        "keys.active_key_id",
        "keys.master",
        "health_manager.heartbeat_key",
        "health_manager.heartbeat_key_file",
        "health_manager.failover_threshold",
        "health_manager.failover_settle",
        "health_manager.failover_rate_limit",
        "health_manager.observer_timeout",
        "health_manager.heartbeat_interval",
        "health_manager.heartbeat_timeout",
        "health_manager.health_check_interval",
        "health_manager.max_clock_skew",
        "health_manager.health_update_resolution",
        "health_manager.stats_update_every",
        "health_manager.unlisted_derive_rate",
        "logging.level",
        "logging.rejected_log_interval",
        "failover.command",
        "failover.timeout",
        "failover.max_attempts",
        "failover.retry_backoff",
        "failover.shutdown_grace",
        "failover.lease",
        "failover.transport_url",
        "failover.control_exchange",
    }
)


class ConfigError(Exception):
    """Invalid configuration. ``problems`` names every bad key or value."""

    def __init__(self, problems: Iterable[str], source: str | None = None) -> None:
        self.problems: list[str] = list(problems) or ["invalid configuration"]
        self.source = source
        where = f"invalid configuration ({source})" if source else "invalid configuration"
        more = len(self.problems) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        super().__init__(f"{where}: {self.problems[0]}{tail}")


# -- value types -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileSecret:
    """A secret read from a file at load time; prints as its path, never its value."""

    path: Path
    value: str = field(repr=False)

    def __str__(self) -> str:
        return str(self.path)


def _read_secret_file(raw: object) -> FileSecret:
    if isinstance(raw, FileSecret):
        return raw
    if not isinstance(raw, str | os.PathLike) or not str(raw):
        raise _err("secret_file", f"expected a file path, got {raw!r}")
    path = Path(raw)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _err("secret_file", f"cannot read {path}: {reason}") from None
    # Editors and `echo` add one newline; it is never part of the secret.
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise _err("secret_file", f"{path} is empty")
    return FileSecret(path, text)


SecretFile = Annotated[
    FileSecret, PlainValidator(_read_secret_file), PlainSerializer(lambda s: str(s.path))
]


def _port(value: int, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise _err("port", f"{value} is not a valid port ({low}-65535)")
    return value


def split_host_port(text: str, *, allow_zero_port: bool = False) -> tuple[str, int]:
    """``"10.0.0.1:5555"``, ``"[fd00::1]:5555"`` -> (host, port); ValueError if malformed."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{text!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not (0 if allow_zero_port else 1) <= port <= 65535:
        raise ValueError(f"{text!r}: {port} is not a valid port")
    return host, port


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise _err("ip", f"{value!r} is not an IPv4 or IPv6 address") from None


Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Port = Annotated[int, PlainValidator(lambda v: _port(_strict_int(v)))]


def _strict_int(value: object) -> int:
    if isinstance(value, bool):
        raise _err("int_type", f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    raise _err("int_type", f"expected an integer, got {value!r}")


def _err(kind: str, text: str) -> PydanticCustomError:
    """A validation error whose message is ``text`` as is (``kind`` is for tests and logs)."""
    return PydanticCustomError("healthmgr", "{text}", {"text": text, "kind": kind})


def _problem(option: str, text: str) -> PydanticCustomError:
    """An error raised by a model validator, reported under ``<section>.<option>``."""
    return PydanticCustomError("healthmgr_option", "{text}", {"option": option, "text": text})


def _failover_threshold(value: object) -> int | str:
    """A count (>= 1), a share of the fleet ("10%"), or "off"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    text = str(value).strip().lower() if isinstance(value, str) else ""
    if text.isdigit() and int(text) >= 1:
        return int(text)  # from the environment: every value is a string
    if text == "off":
        return "off"
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            share = -1.0
        if 0 < share <= 100:
            return text
    raise _err(
        "threshold",
        f"{value!r} is not a count, a share of the fleet such as \"10%\", or \"off\"",
    )


class _Section(BaseModel):
    # strict: `octavia_compat = "yes"` or `bind_port = "5555"` in the file is an error.
    model_config = ConfigDict(extra="forbid", validate_default=False, strict=True)


# -- sections ----------------------------------------------------------------


class HealthManagerSettings(_Section):
    bind_ip: str = "0.0.0.0"
    bind_port: Port = 5555
    controller_ip_port_list: list[str] = []
    heartbeat_interval: Seconds = 10.0
    heartbeat_timeout: Seconds = Field(60.0, validate_default=True)
    health_check_interval: Seconds = 3.0
    # A count, a share of the monitored fleet ("10%", at least 3 amphorae), or "off".
    failover_threshold: Annotated[int | str, PlainValidator(_failover_threshold)] = "10%"
    failover_threads: Annotated[int, Field(ge=1)] = 10
    # Hold before a stale amphora may be failed over (default 2 x heartbeat_interval).
    failover_settle: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    # Failovers started per heartbeat_timeout, all managers (default: half the threshold).
    failover_rate_limit: Annotated[int, Field(ge=1)] | None = None
    # Longest deferral of an amphora whose last observer cannot vouch for its silence.
    observer_timeout: Seconds = 300.0
    octavia_compat: bool = False
    heartbeat_key: str | None = Field(None, repr=False)
    heartbeat_key_file: SecretFile | None = None
    flush_interval: Seconds = 0.25
    topology_ttl: Seconds = 300.0
    max_clock_skew: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 5.0
    # 32 MiB: a burst of 52,428 seed heartbeats on loopback (docs/configuration.md).
    sock_rlimit: Annotated[int, Field(ge=0)] = 32 << 20
    reuse_port: bool = False
    # The fleet whose keys the decoder derives; others get unlisted_derive_rate.
    fleet_refresh_interval: Seconds = 10.0
    unlisted_derive_rate: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 20.0
    manager_id: str | None = None
    # Write amplification: 0 and 1 keep Octavia's one write per heartbeat.
    health_update_resolution: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    stats_update_every: Annotated[int, Field(ge=1)] = 1

    @field_validator("bind_ip")
    @classmethod
    def _bind_ip(cls, value: str) -> str:
        return _ip(value)

    @field_validator("controller_ip_port_list", mode="before")
    @classmethod
    def _controllers(cls, value: object) -> object:
        # Octavia's ListOpt is comma-separated; accept that form from env too.
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("controller_ip_port_list")
    @classmethod
    def _controllers_valid(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                host, _port_no = split_host_port(item)
                _ip(host)
            except (ValueError, PydanticCustomError):
                raise _err("ip_port", f"{item!r} is not ip:port") from None
        return value

    @field_validator("heartbeat_timeout")
    @classmethod
    def _timeout_after_interval(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("heartbeat_interval")
        if interval is not None and value <= interval:
            raise _err(
                "timeout",
                f"{value} must be greater than heartbeat_interval ({interval}), "
                "or every amphora looks dead",
            )
        return value

    @field_validator("heartbeat_key")
    @classmethod
    def _key_not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise _err("empty", "must not be empty (leave it unset instead)")
        return value

    @field_validator("heartbeat_key_file")
    @classmethod
    def _key_or_file(cls, value: FileSecret | None, info: ValidationInfo) -> FileSecret | None:
        if value is not None and info.data.get("heartbeat_key") is not None:
            raise _err("exclusive", "set heartbeat_key or heartbeat_key_file, not both")
        return value

    @field_validator("health_update_resolution")
    @classmethod
    def _resolution_below_margin(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("heartbeat_interval")
        timeout = info.data.get("heartbeat_timeout")
        if value and interval is not None and timeout is not None and (
            value + interval >= timeout
        ):
            raise _err(
                "resolution",
                f"{value} plus heartbeat_interval ({interval}) must stay below "
                f"heartbeat_timeout ({timeout}), or live amphorae look stale",
            )
        return value

    @model_validator(mode="after")
    def _resolve_key_file(self) -> HealthManagerSettings:
        if self.heartbeat_key_file is not None:
            self.heartbeat_key = self.heartbeat_key_file.value
        return self

    @property
    def controllers(self) -> list[tuple[str, int]]:
        return [split_host_port(item) for item in self.controller_ip_port_list]

    @property
    def effective_manager_id(self) -> str:
        """``manager_id``, or ``<hostname>:<pid>`` of this process when unset."""
        return self.manager_id or f"{socket.gethostname()}:{os.getpid()}"


class MasterKeyEntry(_Section):
    id: Annotated[int, Field(ge=0, le=65535)]
    secret: str | None = Field(None, repr=False)
    secret_file: SecretFile | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> MasterKeyEntry:
        if (self.secret is None) == (self.secret_file is None):
            raise _problem("secret", "set exactly one of secret and secret_file")
        if self.secret_file is not None:
            self.secret = self.secret_file.value
        size = len(self.secret_bytes)
        if size < MIN_SECRET_BYTES:
            where = f"secret_file {self.secret_file}" if self.secret_file else "secret"
            raise _problem(
                "secret_file" if self.secret_file else "secret",
                f"{where} is {size} byte(s); at least {MIN_SECRET_BYTES} are required",
            )
        return self

    @property
    def secret_bytes(self) -> bytes:
        return (self.secret or "").encode("utf-8")


class KeysSettings(_Section):
    master: list[MasterKeyEntry] = []
    active_key_id: int | None = Field(None, validate_default=True)

    @field_validator("master")
    @classmethod
    def _unique_ids(cls, value: list[MasterKeyEntry]) -> list[MasterKeyEntry]:
        seen: set[int] = set()
        for entry in value:
            if entry.id in seen:
                raise _err("duplicate", f"key id {entry.id} is listed twice")
            seen.add(entry.id)
        return value

    @field_validator("active_key_id")
    @classmethod
    def _active_known(cls, value: int | None, info: ValidationInfo) -> int | None:
        if "master" not in info.data:
            return value  # master is invalid; that is reported already
        ids = sorted(entry.id for entry in info.data["master"])
        if value is None:
            if len(ids) > 1:
                raise _err("missing", f"required when several master keys are configured ({ids})")
            return ids[0] if ids else None
        if value not in ids:
            raise _err(
                "unknown_key", f"{value} is not the id of a [[keys.master]] entry (ids: {ids})"
            )
        return value

    @property
    def master_keys(self) -> list[MasterKey]:
        return [MasterKey(id=e.id, secret=e.secret_bytes) for e in self.master]

    @property
    def active_key(self) -> MasterKey | None:
        return next((k for k in self.master_keys if k.id == self.active_key_id), None)


DatabaseSchema = Literal["healthmgr", "octavia", "auto"]
# BaseModel.schema() is pydantic v1's deprecated method; the option keeps the
# name operators look for.
warnings.filterwarnings(
    "ignore", message='Field name "schema" in "DatabaseSettings"', category=UserWarning
)


class DatabaseSettings(_Section):
    connection: str = Field("sqlite:////var/lib/healthmgr/healthmgr.db", repr=False)
    connection_file: SecretFile | None = None
    password_file: SecretFile | None = None
    # Bounds every statement, lock wait and reply (healthmgr.db.engine.Bounds): far
    # above a healthy flush or claim (milliseconds), far below heartbeat_timeout.
    timeout: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 10.0
    # Whose schema the database has: healthmgr's own, Octavia's (created by
    # octavia-db-manage; healthmgr adds only its own tables), or "auto" (what
    # the database holds; `config check --connect` says which it found).
    schema: DatabaseSchema = "healthmgr"

    @field_validator("connection")
    @classmethod
    def _url(cls, value: str) -> str:
        _parse_url(value)
        return value

    @field_validator("connection_file")
    @classmethod
    def _url_file(cls, value: FileSecret | None) -> FileSecret | None:
        if value is not None:
            _parse_url(value.value)
        return value

    @model_validator(mode="after")
    def _effective_url(self) -> DatabaseSettings:
        if self.connection_file is not None:
            if "connection" in self.model_fields_set:
                raise _problem("connection_file", "set connection or connection_file, not both")
            self.connection = self.connection_file.value
        if self.password_file is not None:
            url = _parse_url(self.connection)
            if url.password is not None:
                raise _problem(
                    "password_file", "the connection URL has a password already; remove one"
                )
            url = url.set(password=self.password_file.value)
            self.connection = url.render_as_string(hide_password=False)
        if self.schema == "octavia" and _parse_url(self.connection).get_backend_name() not in (
            "mysql", "mariadb"
        ):
            raise _problem("schema", '"octavia" is Octavia\'s database on MariaDB/MySQL; '
                           "the connection is not one")
        return self

    @property
    def redacted_connection(self) -> str:
        return _parse_url(self.connection).render_as_string(hide_password=True)


def _parse_url(text: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(text)
    except (ArgumentError, ValueError) as exc:
        reason = str(exc).splitlines()[0]
        raise _err(
            "url", f"not a database URL ({reason}); e.g. postgresql+psycopg://user@host/db"
        ) from None


def available_failover_drivers() -> list[str]:
    """Names of the installed failover drivers (entry points in ``FAILOVER_DRIVER_GROUP``)."""
    return sorted({ep.name for ep in entry_points(group=FAILOVER_DRIVER_GROUP)})


class FailoverSettings(_Section):
    driver: str = "record"
    command: list[str] = Field([], validate_default=True)
    timeout: Seconds = 120.0
    max_attempts: Annotated[int, Field(ge=1)] = 3
    retry_backoff: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 5.0
    # A claim is a lease, renewed every lease/3 while its driver runs; a claim
    # not renewed for this long belongs to a dead manager and is taken over.
    lease: Seconds = 30.0
    # At SIGTERM, in-flight failovers get this long to finish, then are abandoned.
    shutdown_grace: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 10.0
    # driver = "octavia": the oslo.messaging transport of Octavia's worker
    # (octavia.conf [DEFAULT] transport_url, e.g. rabbit://user:pass@host:5672/).
    transport_url: str | None = Field(None, repr=False, validate_default=True)
    # Octavia's RPC exchange (it sets oslo.messaging's control_exchange to "octavia").
    control_exchange: str = "octavia"

    @field_validator("transport_url")
    @classmethod
    def _transport(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("driver") == "octavia" and not value:
            raise _err("missing", 'required by driver = "octavia", e.g. "rabbit://user:pass@host:5672/"')
        return value

    @field_validator("driver")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        names = available_failover_drivers()
        if value not in names:
            raise _err(
                "driver", f"unknown driver {value!r} (available: {', '.join(names) or 'none'})"
            )
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("driver") == "exec" and not value:
            raise _err(
                "missing",
                'required by driver = "exec", e.g. ["/usr/local/bin/failover", "{amphora_id}"]',
            )
        for arg in value:
            for name in _placeholders(arg):
                if name not in FAILOVER_PLACEHOLDERS:
                    known = ", ".join(FAILOVER_PLACEHOLDERS)
                    raise _err(
                        "placeholder",
                        f"unknown placeholder {{{name}}} in {arg!r} (known: {known})",
                    )
        return value


def _placeholders(arg: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(arg) if name is not None]
    except ValueError as exc:
        raise _err(
            "placeholder", f"{arg!r}: {exc} (write {{{{ and }}}} for literal braces)"
        ) from None


class MetricsSettings(_Section):
    bind: str = ""

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        value = value.strip()
        if value:
            try:
                split_host_port(value, allow_zero_port=True)
            except ValueError:
                raise _err(
                    "bind", f"{value!r} is not host:port (e.g. 127.0.0.1:9102; empty = off)"
                ) from None
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        return split_host_port(self.bind, allow_zero_port=True) if self.bind else None


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class LoggingSettings(_Section):
    level: LogLevel = "INFO"
    format: Literal["auto", "json", "console"] = "auto"
    rejected_log_interval: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 10.0

    @field_validator("level", "format", mode="before")
    @classmethod
    def _case(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            return value.upper() if info.field_name == "level" else value.lower()
        return value


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        extra="forbid",
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        case_sensitive=False,
    )

    health_manager: HealthManagerSettings = HealthManagerSettings()
    keys: KeysSettings = KeysSettings()
    database: DatabaseSettings = DatabaseSettings()
    failover: FailoverSettings = FailoverSettings()
    metrics: MetricsSettings = MetricsSettings()
    logging: LoggingSettings = LoggingSettings()

    _source: str | None = PrivateAttr(None)

    @property
    def source(self) -> str | None:
        """The file these settings were read from (None: defaults and environment only)."""
        return self._source

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def, override]
        # Only explicit values: load_settings() merges the file and the environment itself
        # so that the environment can be injected (tests) and errors name their origin.
        return (init_settings,)


# -- loading -----------------------------------------------------------------


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of os.environ."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = dict(environ)
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty)


def env_var_name(section: str, option: str) -> str:
    """The environment variable that overrides ``[section] option``."""
    return f"{ENV_PREFIX}{section.upper()}{ENV_DELIMITER}{option.upper()}"


def resolve_config_path(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> tuple[Path | None, bool]:
    """(path to read or None, whether it was asked for explicitly)."""
    env = os.environ if env is None else env
    if path is not None:
        return Path(path), True
    if env.get(CONFIG_ENV_VAR):
        return Path(env[CONFIG_ENV_VAR]), True
    default = Path(DEFAULT_CONFIG_PATH)
    return (default, False) if default.exists() else (None, False)


def load_settings(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> Settings:
    """Read the file (see :func:`resolve_config_path`), apply env overrides, validate.

    Raises ConfigError naming every bad key or value.
    """
    env = os.environ if env is None else env
    file_path, _explicit = resolve_config_path(path, env)
    source = str(file_path) if file_path else None
    data = _read_toml(file_path) if file_path else {}
    overrides, problems = _env_overrides(env)
    if problems:
        raise ConfigError(problems, source)
    try:
        # The sections are strict: a TOML value of the wrong type is an error, never
        # coerced. Environment values are text, so they are typed first (_typed_env).
        settings = Settings(**_deep_merge(data, _typed_env(overrides)))
    except ValidationError as exc:
        raise ConfigError(_problems(exc, overrides), source) from None
    settings._source = source
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"], str(path)) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"], str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        hint = ""
        if _looks_like_octavia_conf(path):
            hint = (" (this looks like Octavia's octavia.conf: "
                    f"`healthmgr config import-octavia {path}` writes the equivalent TOML)")
        raise ConfigError([f"{path}: invalid TOML: {exc}{hint}"], str(path)) from None


def _looks_like_octavia_conf(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(line.strip() in ("[DEFAULT]", "[health_manager]", "[controller_worker]")
               for line in text.splitlines())


# How a list option is written in the environment when it is not JSON.
_ENV_LIST_SYNTAX: dict[str, Callable[[str], list[str]]] = {
    "health_manager.controller_ip_port_list": lambda text: [
        item.strip() for item in text.split(",") if item.strip()
    ],
    "failover.command": shlex.split,
}
_ENV_JSON_ONLY = {"keys.master"}


def _normalise_env(env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Turn list values into JSON for pydantic-settings; name any variable that is not."""
    out, problems = dict(env), []
    for name, value in env.items():
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or ENV_DELIMITER not in upper:
            continue
        section, _, option = upper[len(ENV_PREFIX) :].lower().partition(ENV_DELIMITER)
        dotted = f"{section}.{option}"
        if dotted not in _ENV_LIST_SYNTAX and dotted not in _ENV_JSON_ONLY:
            continue
        try:
            json.loads(value)
            continue
        except ValueError as exc:
            if dotted in _ENV_JSON_ONLY or value.lstrip().startswith(("[", "{")):
                problems.append(f"{name}: not valid JSON ({exc}); {dotted} takes a JSON list")
                continue
        try:
            out[name] = json.dumps(_ENV_LIST_SYNTAX[dotted](value))
        except ValueError as exc:
            problems.append(f"{name}: cannot split {value!r}: {exc}")
    return out, problems


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    problems = _unknown_env_names(env)
    env, more = _normalise_env(env)
    problems += more
    if problems:
        return {}, problems
    try:
        overrides = _MappingEnvSource(env)()
    except SettingsError as exc:
        cause = exc.__cause__ or exc
        problems.append(f"environment: {str(exc).splitlines()[0]} ({cause})")
        overrides = {}
    return overrides, problems


def _unknown_env_names(env: Mapping[str, str]) -> list[str]:
    # pydantic-settings ignores variables for sections that do not exist; a typo there
    # must not silently fall back to the default.
    problems = []
    sections = Settings.model_fields
    for name in env:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or ENV_DELIMITER not in upper:
            continue
        section = upper[len(ENV_PREFIX) :].split(ENV_DELIMITER, 1)[0].lower()
        if section not in sections:
            problems.append(f"{name}: unknown section {section!r} (known: {', '.join(sections)})")
    return problems


def _scalar_type(annotation: Any) -> type | None:
    """bool, int or float when that is what an option holds (through Annotated and Optional)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _scalar_type(get_args(annotation)[0])
    if origin in (Union, UnionType):
        found = {_scalar_type(a) for a in get_args(annotation) if a is not type(None)}
        return found.pop() if len(found) == 1 else None
    return annotation if annotation in (bool, int, float) else None


def _typed_env(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Environment overrides with the text of boolean and numeric options parsed (leniently,
    as pydantic parses text: "true", "1", "yes", "5", "2.5"); text that does not parse is left
    for strict validation to report, naming the variable."""
    out: dict[str, Any] = {}
    for section, options in overrides.items():
        model = Settings.model_fields.get(section)
        fields = getattr(model.annotation, "model_fields", {}) if model else {}
        if not isinstance(options, Mapping):
            out[section] = options
            continue
        typed = {}
        for option, value in options.items():
            scalar = _scalar_type(fields[option].annotation) if option in fields else None
            if scalar is not None and isinstance(value, str):
                with contextlib.suppress(ValidationError):
                    value = TypeAdapter(scalar).validate_python(value.strip())
            typed[option] = value
        out[section] = typed
    return out


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _flat_keys(data: Mapping[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        keys.add(dotted)
        if isinstance(value, Mapping):
            keys |= _flat_keys(value, dotted + ".")
    return keys


def _problems(exc: ValidationError, overrides: Mapping[str, Any]) -> list[str]:
    from_env = _flat_keys(overrides)
    out = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == "healthmgr_option":
            loc.append(ctx["option"])
        key = _dotted(loc)
        if err["type"] == "extra_forbidden":
            message = "unknown section" if len(loc) == 1 else "unknown option"
        else:
            message = _message(err)
        origin = ""
        top = ".".join(str(p) for p in loc[:2] if isinstance(p, str))
        if top in from_env and len(loc) >= 2:
            origin = f" (from {env_var_name(str(loc[0]), str(loc[1]))})"
        out.append(f"{key}: {message}{origin}")
    return out


def _dotted(loc: list[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    if err["type"] in ("healthmgr", "healthmgr_option"):
        return msg
    msg = msg[0].lower() + msg[1:]
    value = err.get("input")
    if isinstance(value, dict | list) or value is None:
        return msg
    return f"{value!r}: {msg}"


# -- reload and display --------------------------------------------------------


def _options(settings: Settings) -> dict[str, Any]:
    flat = {}
    for section in Settings.model_fields:
        model = getattr(settings, section)
        for option in type(model).model_fields:
            flat[f"{section}.{option}"] = getattr(model, option)
    return flat


def diff_reloadable(old: Settings, new: Settings) -> tuple[frozenset[str], frozenset[str]]:
    """(changed options a SIGHUP applies, changed options that need a restart)."""
    before, after = _options(old), _options(new)
    changed = {key for key in after if before.get(key) != after[key]}
    return frozenset(changed & RELOADABLE), frozenset(changed - RELOADABLE)


_SECRET_OPTIONS = {"health_manager.heartbeat_key", "failover.transport_url"}


def redacted(settings: Settings) -> dict[str, dict[str, Any]]:
    """The effective configuration as plain data, secrets replaced by ``<redacted>``."""
    out: dict[str, dict[str, Any]] = {}
    for section in Settings.model_fields:
        model = getattr(settings, section)
        values = model.model_dump(mode="json")
        for option in values:
            if f"{section}.{option}" in _SECRET_OPTIONS and values[option] is not None:
                values[option] = REDACTED
        if section == "keys":
            for entry in values["master"]:
                # A secret read from a file stays a file reference: the output is a valid config.
                if entry["secret_file"] is None:
                    del entry["secret_file"]
                    entry["secret"] = REDACTED
                else:
                    del entry["secret"]
        if section == "health_manager" and values["heartbeat_key_file"] is not None:
            values["heartbeat_key"] = None
        if section == "database":
            values.update(_shown_database(settings.database))
        out[section] = values
    return out


def _shown_database(db: DatabaseSettings) -> dict[str, Any]:
    """connection as a valid config shows it: unset beside connection_file, and without
    the password that password_file adds."""
    if db.connection_file is not None:
        return {"connection": None}
    if db.password_file is not None:
        url = _parse_url(db.connection)._replace(password=None)  # URL.set() ignores None
        return {"connection": url.render_as_string(hide_password=False)}
    return {"connection": db.redacted_connection}
