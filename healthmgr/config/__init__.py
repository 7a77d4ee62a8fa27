"""Configuration: a TOML file, environment overrides, secrets from files.

Every option can be overridden by ``HEALTHMGR_<SECTION>__<OPTION>`` (the
environment wins over the file); lists and tables take JSON there. Parsing is
pydantic-settings' (its TOML and environment sources), validation pydantic's;
every problem is collected, named by its dotted key, and raised as one
:class:`ConfigError`.

- :mod:`.sections`: the options, section by section, with their checks;
- :mod:`.values`: the value types they share (ports, seconds, secret files);
- :mod:`.loading`: :class:`Settings` and :func:`load_settings` (the sources);
- :mod:`.errors`: the lines an operator reads;
- :mod:`.display`: SIGHUP's view (:func:`diff_reloadable`) and ``config show``'s
  (:func:`redacted`).
"""

from healthmgr.config.display import REDACTED, RELOADABLE, diff_reloadable, redacted
from healthmgr.config.errors import ConfigError
from healthmgr.config.loading import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    ENV_DELIMITER,
    ENV_PREFIX,
    Settings,
    env_var_name,
    load_settings,
    resolve_config_path,
)
from healthmgr.config.sections import (
    FAILOVER_DRIVER_GROUP,
    FAILOVER_PLACEHOLDERS,
    MIN_SECRET_BYTES,
    DatabaseSettings,
    FailoverSettings,
    HealthManagerSettings,
    KeysSettings,
    LoggingSettings,
    MasterKeyEntry,
    MetricsSettings,
    available_failover_drivers,
)
from healthmgr.config.values import FileSecret

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATH",
    "ENV_DELIMITER",
    "ENV_PREFIX",
    "FAILOVER_DRIVER_GROUP",
    "FAILOVER_PLACEHOLDERS",
    "MIN_SECRET_BYTES",
    "REDACTED",
    "RELOADABLE",
    "ConfigError",
    "DatabaseSettings",
    "FailoverSettings",
    "FileSecret",
    "HealthManagerSettings",
    "KeysSettings",
    "LoggingSettings",
    "MasterKeyEntry",
    "MetricsSettings",
    "Settings",
    "available_failover_drivers",
    "diff_reloadable",
    "env_var_name",
    "load_settings",
    "redacted",
    "resolve_config_path",
]
