"""A configuration seen from outside: what a SIGHUP changes, what ``config show`` prints."""

from __future__ import annotations

from typing import Any

from healthmgr.config.loading import Settings
from healthmgr.config.sections import DatabaseSettings
from healthmgr.config.values import parse_url

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
        url = parse_url(db.connection)._replace(password=None)  # URL.set() ignores None
        return {"connection": url.render_as_string(hide_password=False)}
    return {"connection": db.redacted_connection}
