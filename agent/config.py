"""The agent's own small configuration: a TOML file, overridden by command-line flags.

Option names follow Octavia's amphora agent where it has them
(``[amphora_agent] amphora_id``, ``[health_manager] controller_ip_port_list``,
``heartbeat_interval``). The agent does not import the manager's config.

    [amphora_agent]
    amphora_id = "6f1c0d2e-..."
    haproxy_socket = "/run/haproxy/stats.sock"   # or "127.0.0.1:9000"
    state_dir = "/var/lib/amphora-agent"          # sequence reservation lives here
    # ACTIVE_STANDBY: no heartbeats while keepalived is not running (Octavia's paths)
    keepalived_pid_file = "/var/lib/octavia/vrrp/octavia-keepalived.pid"
    keepalived_config_file = "/var/lib/octavia/vrrp/octavia-keepalived.conf"

    [health_manager]
    controller_ip_port_list = ["192.0.2.10:5555", "[2001:db8::1]:5555"]
    heartbeat_interval = 10                        # seconds, at most between heartbeats
    poll_interval = 1                              # seconds between HAProxy readings
    coalesce_window = 0.2                          # seconds: changes within go out as one
    heartbeat_key_id = 1                           # id of the master key it derives from
    heartbeat_key_file = "/etc/amphora-agent/heartbeat.key"
    send_to = "round_robin"                        # or "all"
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.cadence import Timing
from agent.haproxy import parse_address
from agent.vrrp import KeepalivedCheck
from healthmgr.wire.addresses import HEARTBEAT_PORT, join_host_port, split_host_port
from healthmgr.wire.ids import id_bytes, id_str, parse_id
from healthmgr.wire.limits import MAX_KEY_ID

DEFAULT_PORT = HEARTBEAT_PORT
KEY_BYTES = 32


class ConfigError(Exception):
    """A bad configuration: the message names the option and what is wrong."""


@dataclass(frozen=True, slots=True)
class Destination:
    host: str
    port: int

    def __str__(self) -> str:
        return join_host_port(self.host, self.port)


def parse_destination(text: str) -> Destination:
    """``ip:port``, ``[ipv6]:port`` or a bare address (port 5555), as the manager reads them."""
    if not text.strip():
        raise ValueError("empty controller address")
    return Destination(*split_host_port(text, default_port=DEFAULT_PORT))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AmphoraAgentSection(_Section):
    amphora_id: str | None = None
    haproxy_socket: str = "/run/haproxy/stats.sock"
    state_dir: Path = Path("/var/lib/amphora-agent")
    haproxy_timeout: float = Field(default=5.0, gt=0)
    keepalived_pid_file: Path | None = None
    keepalived_config_file: Path | None = None

    @field_validator("amphora_id")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                return id_str(parse_id(value))
            except ValueError:
                raise ValueError(f"not a UUID: {value!r}") from None
        return value

    @field_validator("haproxy_socket")
    @classmethod
    def _socket(cls, value: str) -> str:
        parse_address(value)
        return value


class HealthManagerSection(_Section):
    controller_ip_port_list: list[str] = Field(default_factory=list)
    heartbeat_interval: float = Field(default=10.0, gt=0, le=3600)
    poll_interval: float = Field(default=1.0, gt=0, le=3600)
    coalesce_window: float = Field(default=0.2, ge=0, le=60)
    heartbeat_key_id: int | None = Field(default=None, ge=0, le=MAX_KEY_ID)
    heartbeat_key_file: Path | None = None
    # Octavia's agent sends each heartbeat to ONE controller, rotating through
    # the list ("round_robin"); "all" sends every heartbeat to every controller.
    send_to: Literal["round_robin", "all"] = "round_robin"

    @field_validator("controller_ip_port_list")
    @classmethod
    def _destinations(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_destination(item)
        return value


class FileConfig(_Section):
    amphora_agent: AmphoraAgentSection = Field(default_factory=AmphoraAgentSection)
    health_manager: HealthManagerSection = Field(default_factory=HealthManagerSection)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything the agent needs, validated."""

    amphora_id: bytes
    key_id: int
    key: bytes
    destinations: tuple[Destination, ...]
    haproxy_socket: str
    interval: float
    state_dir: Path
    send_to: str = "round_robin"
    haproxy_timeout: float = 5.0
    poll_interval: float = 1.0
    coalesce_window: float = 0.2
    keepalived: KeepalivedCheck | None = None

    @property
    def timing(self) -> Timing:
        return Timing(self.interval, self.poll_interval, self.coalesce_window)


def _pydantic_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}"


def load_file(path: Path) -> FileConfig:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    try:
        return FileConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"config file {path}: {_pydantic_message(exc)}") from None


_HEX = re.compile(r"^[0-9a-fA-F]+$")


@dataclass(frozen=True, slots=True)
class ProvisionedKey:
    key: bytes
    key_id: int | None = None  # when the file says
    amphora_id: str | None = None  # when the file says


def _key_bytes(text: str) -> bytes:
    text = text.strip()
    if _HEX.match(text) and len(text) == 2 * KEY_BYTES:
        key = bytes.fromhex(text)
    else:
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("key is neither hex nor base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"key must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def _key_id(value: object) -> int:
    try:
        key_id = int(str(value))
    except ValueError:
        raise ValueError(f"key id {value!r} is not an integer") from None
    if not 0 <= key_id <= MAX_KEY_ID:
        raise ValueError(f"key id {key_id} is outside 0..{MAX_KEY_ID}")
    return key_id


def parse_key_text(text: str) -> ProvisionedKey:
    """The provisioned key file; any output format of ``healthmgr keys derive`` works:

    * text: ``amphora_id: ..`` / ``key_id: N`` / ``key: <hex>`` lines;
    * json: ``{"amphora_id": .., "key_id": N, "key": "<hex>"}``;
    * value: ``N <hex>``;
    * or just the key, hex or base64 (then the key id comes from the config).
    """
    text = text.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
            key_text, key_id, amphora = doc["key"], doc.get("key_id"), doc.get("amphora_id")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError('JSON key file needs {"key_id": N, "key": "<hex>"}') from None
    elif ":" in text:
        fields = {}
        for line in text.splitlines():
            name, _, value = line.partition(":")
            fields[name.strip()] = value.strip()
        if "key" not in fields:
            raise ValueError("no 'key: <hex>' line")
        key_text, key_id, amphora = fields["key"], fields.get("key_id"), fields.get("amphora_id")
    elif len(parts := text.split()) == 2:
        key_id, key_text = parts
        amphora = None
    else:
        key_text, key_id, amphora = text, None, None
    return ProvisionedKey(
        key=_key_bytes(str(key_text)),
        key_id=None if key_id is None else _key_id(key_id),
        amphora_id=None if amphora is None else str(amphora),
    )


def _read_key(path: Path) -> ProvisionedKey:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"key file {path}: {exc.strerror or exc}") from None
    try:
        return parse_key_text(text)
    except ValueError as exc:
        raise ConfigError(f"key file {path}: {exc}") from None


def _other_amphora(file_id: str, configured: str) -> bool:
    """True when a key file names another amphora (or something that is no UUID)."""
    try:
        return parse_id(file_id) != parse_id(configured)
    except ValueError:
        return True


def resolve(file: FileConfig, overrides: Mapping[str, Any]) -> AgentConfig:
    """Merge flags over the file and check that everything needed is there.

    ``overrides`` keys: amphora_id, key_id, key_file, controllers, haproxy_socket,
    interval, poll_interval, state_dir, keepalived_pid_file (None or missing = not given).
    """

    def pick(name: str, default: Any) -> Any:
        value = overrides.get(name)
        return default if value is None else value

    agent, hm = file.amphora_agent, file.health_manager
    try:
        section = AmphoraAgentSection(
            amphora_id=pick("amphora_id", agent.amphora_id),
            haproxy_socket=pick("haproxy_socket", agent.haproxy_socket),
            state_dir=pick("state_dir", agent.state_dir),
            haproxy_timeout=agent.haproxy_timeout,
            keepalived_pid_file=pick("keepalived_pid_file", agent.keepalived_pid_file),
            keepalived_config_file=agent.keepalived_config_file,
        )
        health = HealthManagerSection(
            controller_ip_port_list=pick("controllers", hm.controller_ip_port_list),
            heartbeat_interval=pick("interval", hm.heartbeat_interval),
            poll_interval=pick("poll_interval", hm.poll_interval),
            coalesce_window=hm.coalesce_window,
            heartbeat_key_id=pick("key_id", hm.heartbeat_key_id),
            heartbeat_key_file=pick("key_file", hm.heartbeat_key_file),
            send_to=hm.send_to,
        )
    except ValidationError as exc:
        raise ConfigError(_pydantic_message(exc)) from None
    if section.amphora_id is None:
        raise ConfigError("amphora_agent.amphora_id is not set (or pass --amphora-id)")
    if not health.controller_ip_port_list:
        raise ConfigError(
            "health_manager.controller_ip_port_list is empty (or pass --controller ip:port)"
        )
    if section.keepalived_config_file is not None and section.keepalived_pid_file is None:
        raise ConfigError(
            "amphora_agent.keepalived_config_file is set but keepalived_pid_file is not"
        )
    if health.heartbeat_key_file is None:
        raise ConfigError("health_manager.heartbeat_key_file is not set (or pass --key-file)")
    provisioned = _read_key(health.heartbeat_key_file)
    if provisioned.amphora_id is not None and _other_amphora(
        provisioned.amphora_id, section.amphora_id
    ):
        raise ConfigError(
            f"key file {health.heartbeat_key_file} is for amphora {provisioned.amphora_id}, "
            f"not {section.amphora_id}"
        )
    key_id = health.heartbeat_key_id
    if key_id is None:
        key_id = provisioned.key_id
    elif provisioned.key_id is not None and provisioned.key_id != key_id:
        raise ConfigError(
            f"heartbeat_key_id is {key_id} but key file {health.heartbeat_key_file} "
            f"holds a key for key id {provisioned.key_id}"
        )
    if key_id is None:
        raise ConfigError("health_manager.heartbeat_key_id is not set (or pass --key-id)")
    return AgentConfig(
        amphora_id=id_bytes(section.amphora_id),
        key_id=key_id,
        key=provisioned.key,
        destinations=tuple(parse_destination(d) for d in health.controller_ip_port_list),
        haproxy_socket=section.haproxy_socket,
        interval=health.heartbeat_interval,
        state_dir=section.state_dir,
        send_to=health.send_to,
        haproxy_timeout=section.haproxy_timeout,
        poll_interval=health.poll_interval,
        coalesce_window=health.coalesce_window,
        keepalived=None
        if section.keepalived_pid_file is None
        else KeepalivedCheck(section.keepalived_pid_file, section.keepalived_config_file),
    )
