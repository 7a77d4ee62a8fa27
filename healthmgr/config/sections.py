"""The sections of ``healthmgr.toml``: one pydantic model each, strict, every
option with its default and its checks (docs/configuration.md describes them).

Option names follow Octavia's ``octavia.conf`` where Octavia has them
(``[health_manager] bind_ip``, ``heartbeat_key``, ``failover_threshold``, ...).
"""

from __future__ import annotations

import os
import socket
import warnings
from importlib.metadata import entry_points
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from healthmgr.config.values import (
    FileSecret,
    Port,
    Seconds,
    SecretFile,
    Threshold,
    err,
    ip,
    parse_url,
    placeholders,
    problem,
)
from healthmgr.wire.addresses import HEARTBEAT_PORT, split_host_port
from healthmgr.wire.keys import MasterKey

FAILOVER_DRIVER_GROUP = "healthmgr.failover_drivers"
FAILOVER_PLACEHOLDERS = ("amphora_id", "load_balancer_id", "reason", "attempt", "request_id")
MIN_SECRET_BYTES = 16


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
    failover_threshold: Threshold = "10%"
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
    # "process": the flush's SQL runs in a child process, off the receive loop's GIL.
    writer: Literal["thread", "process"] = "thread"

    @field_validator("bind_ip")
    @classmethod
    def _bind_ip(cls, value: str) -> str:
        return ip(value)

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
                host, _port_no = split_host_port(item, default_port=HEARTBEAT_PORT)
                ip(host)
            except (ValueError, PydanticCustomError):
                raise err("ip_port", f"{item!r} is not ip:port") from None
        return value

    @field_validator("heartbeat_timeout")
    @classmethod
    def _timeout_after_interval(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("heartbeat_interval")
        if interval is not None and value <= interval:
            raise err(
                "timeout",
                f"{value} must be greater than heartbeat_interval ({interval}), "
                "or every amphora looks dead",
            )
        return value

    @field_validator("heartbeat_key")
    @classmethod
    def _key_not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise err("empty", "must not be empty (leave it unset instead)")
        return value

    @field_validator("heartbeat_key_file")
    @classmethod
    def _key_or_file(cls, value: FileSecret | None, info: ValidationInfo) -> FileSecret | None:
        if value is not None and info.data.get("heartbeat_key") is not None:
            raise err("exclusive", "set heartbeat_key or heartbeat_key_file, not both")
        return value

    @field_validator("health_update_resolution")
    @classmethod
    def _resolution_below_margin(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("heartbeat_interval")
        timeout = info.data.get("heartbeat_timeout")
        if value and interval is not None and timeout is not None and (value + interval >= timeout):
            raise err(
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
        return [
            split_host_port(item, default_port=HEARTBEAT_PORT)
            for item in self.controller_ip_port_list
        ]

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
            raise problem("secret", "set exactly one of secret and secret_file")
        if self.secret_file is not None:
            self.secret = self.secret_file.value
        size = len(self.secret_bytes)
        if size < MIN_SECRET_BYTES:
            where = f"secret_file {self.secret_file}" if self.secret_file else "secret"
            raise problem(
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
                raise err("duplicate", f"key id {entry.id} is listed twice")
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
                raise err("missing", f"required when several master keys are configured ({ids})")
            return ids[0] if ids else None
        if value not in ids:
            raise err(
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
        parse_url(value)
        return value

    @field_validator("connection_file")
    @classmethod
    def _url_file(cls, value: FileSecret | None) -> FileSecret | None:
        if value is not None:
            parse_url(value.value)
        return value

    @model_validator(mode="after")
    def _effective_url(self) -> DatabaseSettings:
        if self.connection_file is not None:
            if "connection" in self.model_fields_set:
                raise problem("connection_file", "set connection or connection_file, not both")
            self.connection = self.connection_file.value
        if self.password_file is not None:
            url = parse_url(self.connection)
            if url.password is not None:
                raise problem(
                    "password_file", "the connection URL has a password already; remove one"
                )
            url = url.set(password=self.password_file.value)
            self.connection = url.render_as_string(hide_password=False)
        if self.schema == "octavia" and parse_url(self.connection).get_backend_name() not in (
            "mysql",
            "mariadb",
        ):
            raise problem(
                "schema",
                '"octavia" is Octavia\'s database on MariaDB/MySQL; the connection is not one',
            )
        return self

    @property
    def redacted_connection(self) -> str:
        return parse_url(self.connection).render_as_string(hide_password=True)


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
            raise err(
                "missing", 'required by driver = "octavia", e.g. "rabbit://user:pass@host:5672/"'
            )
        return value

    @field_validator("driver")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        names = available_failover_drivers()
        if value not in names:
            raise err(
                "driver", f"unknown driver {value!r} (available: {', '.join(names) or 'none'})"
            )
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("driver") == "exec" and not value:
            raise err(
                "missing",
                'required by driver = "exec", e.g. ["/usr/local/bin/failover", "{amphora_id}"]',
            )
        for arg in value:
            for name in placeholders(arg):
                if name not in FAILOVER_PLACEHOLDERS:
                    known = ", ".join(FAILOVER_PLACEHOLDERS)
                    raise err(
                        "placeholder",
                        f"unknown placeholder {{{name}}} in {arg!r} (known: {known})",
                    )
        return value


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
                raise err(
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
