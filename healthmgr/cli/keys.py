"""`healthmgr keys`: heartbeat keys.

    healthmgr keys derive AMPHORA_ID [--key-id N] > heartbeat.key   an agent's key file
    healthmgr keys derive AMPHORA_ID --master-key-file FILE --key-id N
    healthmgr keys generate > master-1.key                           a new master secret

Master keys come from ``[[keys.master]]`` of the configuration (``--config
PATH``, ``$HEALTHMGR_CONFIG`` or the default path); ``derive`` uses the active
key (``keys.active_key_id``) unless ``--key-id`` names another. With
``--master-key-file`` no configuration is read: the file holds the secret as
in ``secret_file`` (its UTF-8 text, one trailing newline ignored).
"""

from __future__ import annotations

import argparse
import secrets

from healthmgr.cli.base import ShowOne, add_config_option
from healthmgr.cli.errors import UsageError
from healthmgr.secret_files import SecretFileError, read_secret_file
from healthmgr.wire.ids import Id, id_str, parse_id
from healthmgr.wire.keys import (
    MAX_KEY_ID,
    MIN_MASTER_SECRET_BYTES,
    MasterKey,
    derive_amphora_key,
)

KEY_FIELDS = ("amphora_id", "key_id", "key")


class Derive(ShowOne):
    """Print the key id and key an amphora's agent is provisioned with.

    The default output (JSON) is a key file the agent reads as it is:
    ``healthmgr keys derive AMPHORA_ID > heartbeat.key``; so is
    ``-f value -c key_id -c key`` ("KEY_ID" and "KEY" on two lines).
    """

    @property
    def formatter_default(self) -> str:
        return "json"

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("amphora_id", metavar="AMPHORA_ID", help="the amphora's UUID")
        parser.add_argument(
            "--key-id",
            type=int,
            metavar="N",
            help="master key id (default: keys.active_key_id; required with --master-key-file)",
        )
        parser.add_argument(
            "--master-key-file",
            metavar="FILE",
            help="read the master secret from FILE instead of the configuration",
        )
        add_config_option(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        amphora = _amphora_id(parsed_args.amphora_id)
        if parsed_args.master_key_file is not None:
            master = _master_from_file(parsed_args.master_key_file, parsed_args.key_id)
        else:
            master = _master_from_config(parsed_args.config, parsed_args.key_id)
        try:
            key = derive_amphora_key(master, amphora)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return KEY_FIELDS, (id_str(amphora), master.id, key.hex())


class Generate(ShowOne):
    """Print a new random master secret (64 hex characters) for a [[keys.master]] secret_file."""

    @property
    def formatter_default(self) -> str:
        return "value"

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        return ("secret",), (secrets.token_hex(32),)


def _amphora_id(text: str) -> Id:
    try:
        return parse_id(text)
    except ValueError:
        raise UsageError(f"AMPHORA_ID: {text!r} is not a UUID") from None


def _master_from_file(path: str, key_id: int | None) -> MasterKey:
    if key_id is None:
        raise UsageError("--key-id N is required with --master-key-file")
    if not 0 <= key_id <= MAX_KEY_ID:
        raise UsageError(f"--key-id: {key_id} is outside 0..{MAX_KEY_ID}")
    try:
        secret = read_secret_file(path).encode("utf-8")
    except SecretFileError as exc:
        raise UsageError(f"--master-key-file: {exc}") from None
    if len(secret) < MIN_MASTER_SECRET_BYTES:
        raise UsageError(
            f"--master-key-file: {path} holds {len(secret)} bytes; "
            f"at least {MIN_MASTER_SECRET_BYTES} are required"
        )
    return MasterKey(key_id, secret)


def _master_from_config(config: str | None, key_id: int | None) -> MasterKey:
    from healthmgr.config import load_settings  # lazily: only this path needs pydantic

    settings = load_settings(config)
    masters = {m.id: m for m in settings.keys.master_keys}
    where = f" in {settings.source}" if getattr(settings, "source", None) else ""
    if not masters:
        raise UsageError(f"no [[keys.master]] entries are configured{where}")
    wanted = settings.keys.active_key_id if key_id is None else key_id
    if wanted is None:
        raise UsageError("no active master key: set keys.active_key_id or pass --key-id N")
    if wanted not in masters:
        raise UsageError(
            f"--key-id: {wanted} is not a configured master key id (ids: {sorted(masters)})"
        )
    return masters[wanted]
