"""Loading: the file and the environment, through pydantic-settings' own sources.

:class:`Settings` takes its values from three sources, the first one winning,
merged section by section by pydantic-settings: explicit values, the
environment (``HEALTHMGR_<SECTION>__<OPTION>``, its ``EnvSettingsSource``) and
the TOML file (its ``TomlConfigSettingsSource``). What is healthmgr's own:

- the syntax of list options in the environment (JSON, or a comma-separated
  ``controller_ip_port_list``, or a shell-quoted ``failover.command``), in
  :class:`EnvironmentSource`'s ``decode_complex_value``;
- environment text typed for the strict sections (``"6000"`` is a port there,
  while ``bind_port = "6000"`` in the file is an error), in its
  ``prepare_field_value``;
- the checks that every problem is named before validation: unknown sections,
  list values that do not parse (:func:`environment_problems`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import PrivateAttr, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

from healthmgr.config.errors import ConfigError, problems
from healthmgr.config.sections import (
    DatabaseSettings,
    FailoverSettings,
    HealthManagerSettings,
    KeysSettings,
    LoggingSettings,
    MetricsSettings,
)

DEFAULT_CONFIG_PATH = "/etc/healthmgr/healthmgr.toml"
CONFIG_ENV_VAR = "HEALTHMGR_CONFIG"
ENV_PREFIX = "HEALTHMGR_"
ENV_DELIMITER = "__"

# What load_settings() gives the sources of one Settings(): the file, the environment.
_INPUTS: ContextVar[tuple[Path | None, Mapping[str, str] | None]] = ContextVar(
    "healthmgr_config_inputs", default=(None, None)
)


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`; ``Settings()``
    alone is the defaults (and explicit values), without file or environment."""

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
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path, environ = _INPUTS.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings]
        if environ is not None:
            sources.append(EnvironmentSource(settings_cls, environ))
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


# -- the environment -----------------------------------------------------------

# How a list option is written in the environment when it is not JSON.
_LIST_SYNTAX: dict[str, Callable[[str], list[str]]] = {
    "health_manager.controller_ip_port_list": lambda text: [
        item.strip() for item in text.split(",") if item.strip()
    ],
    "failover.command": shlex.split,
}
_JSON_ONLY = {"keys.master"}
_COMPLEX = {dotted.split(".")[1]: dotted for dotted in (*_LIST_SYNTAX, *_JSON_ONLY)}


def env_var_name(section: str, option: str) -> str:
    """The environment variable that overrides ``[section] option``."""
    return f"{ENV_PREFIX}{section.upper()}{ENV_DELIMITER}{option.upper()}"


def decode_env_list(dotted: str, text: str) -> Any:
    """The value of list option ``dotted`` written as ``text`` in the environment."""
    try:
        return json.loads(text)
    except ValueError as exc:
        if dotted not in _LIST_SYNTAX or text.lstrip().startswith(("[", "{")):
            raise ValueError(f"not valid JSON ({exc}); {dotted} takes a JSON list") from None
    try:
        return _LIST_SYNTAX[dotted](text)
    except ValueError as exc:
        raise ValueError(f"cannot split {text!r}: {exc}") from None


class EnvironmentSource(EnvSettingsSource):
    """pydantic-settings' environment source with healthmgr's value syntax.

    ``environ`` is ``os.environ`` for the daemon and the CLI; tests and
    ``config import-octavia`` give their own mapping, put where the source
    keeps what it read (``env_vars``: names lower-cased, as it does itself
    when matching is not case-sensitive).
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        if environ is not os.environ:
            self.env_vars = {name.lower(): value for name, value in environ.items()}

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        dotted = _COMPLEX.get(field_name)
        if dotted is None or not isinstance(value, str):
            return super().decode_complex_value(field_name, field, value)
        return decode_env_list(dotted, value)

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        prepared = super().prepare_field_value(field_name, field, value, value_is_complex)
        options = getattr(field.annotation, "model_fields", None)
        if not isinstance(prepared, dict) or options is None:
            return prepared
        return {name: _typed(options.get(name), text) for name, text in prepared.items()}


def _typed(field: FieldInfo | None, value: Any) -> Any:
    """The text of a boolean or numeric option parsed (leniently, as pydantic parses
    text: "true", "1", "yes", "5", "2.5"); text that does not parse is left for strict
    validation to report, naming the variable."""
    scalar = _scalar_type(field.annotation) if field is not None else None
    if scalar is not None and isinstance(value, str):
        with contextlib.suppress(ValidationError):
            return TypeAdapter(scalar).validate_python(value.strip())
    return value


def _scalar_type(annotation: Any) -> type | None:
    """bool, int or float when that is what an option holds (through Annotated and Optional)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _scalar_type(get_args(annotation)[0])
    if origin in (Union, UnionType):
        found = {_scalar_type(a) for a in get_args(annotation) if a is not type(None)}
        return found.pop() if len(found) == 1 else None
    return annotation if annotation in (bool, int, float) else None


def _options_in(environ: Mapping[str, str]) -> Iterator[tuple[str, str, str, str]]:
    """(variable, section, option, value) of each ``HEALTHMGR_<SECTION>__<OPTION>``."""
    for name, value in environ.items():
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and ENV_DELIMITER in upper:
            section, _, option = upper[len(ENV_PREFIX) :].lower().partition(ENV_DELIMITER)
            yield name, section, option, value


def environment_problems(environ: Mapping[str, str]) -> list[str]:
    """What the environment source would stop at or ignore, every variable named:
    sections that do not exist (pydantic-settings ignores them: a typo must not fall
    back to the default silently) and list values that do not parse."""
    out = []
    sections = Settings.model_fields
    for name, section, option, value in _options_in(environ):
        if section not in sections:
            out.append(f"{name}: unknown section {section!r} (known: {', '.join(sections)})")
        elif _COMPLEX.get(option) == f"{section}.{option}":
            try:
                decode_env_list(f"{section}.{option}", value)
            except ValueError as exc:
                out.append(f"{name}: {exc}")
    return out


# -- loading -------------------------------------------------------------------


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

    ``env`` is the environment (default ``os.environ``). Raises ConfigError naming
    every bad key or value.
    """
    env = os.environ if env is None else env
    file_path, _explicit = resolve_config_path(path, env)
    source = str(file_path) if file_path else None
    if file_path is not None and not file_path.is_file():
        # TomlConfigSettingsSource would skip it: asked for, it is an error.
        reason = "not a file" if file_path.exists() else "no such file"
        raise ConfigError([f"{file_path}: {reason}"], source)
    found = environment_problems(env)
    if found:
        raise ConfigError(found, source)
    token = _INPUTS.set((file_path, env))
    try:
        settings = Settings()
    except ValidationError as exc:
        from_env = {f"{s}.{o}": env_var_name(s, o) for _, s, o, _ in _options_in(env)}
        raise ConfigError(problems(exc, from_env), source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_toml_problem(file_path, exc)], source) from None
    except OSError as exc:
        raise ConfigError([f"{file_path}: cannot read: {exc.strerror or exc}"], source) from None
    except SettingsError as exc:
        cause = exc.__cause__ or exc
        raise ConfigError([f"environment: {str(exc).splitlines()[0]} ({cause})"], source) from None
    finally:
        _INPUTS.reset(token)
    settings._source = source
    return settings


def _toml_problem(path: Path | None, exc: tomllib.TOMLDecodeError) -> str:
    hint = ""
    if path is not None and _looks_like_octavia_conf(path):
        hint = (
            " (this looks like Octavia's octavia.conf: "
            f"`healthmgr config import-octavia {path}` writes the equivalent TOML)"
        )
    return f"{path}: invalid TOML: {exc}{hint}"


def _looks_like_octavia_conf(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(
        line.strip() in ("[DEFAULT]", "[health_manager]", "[controller_worker]")
        for line in text.splitlines()
    )
