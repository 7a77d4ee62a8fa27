"""`healthmgr keys`: heartbeat keys.

    healthmgr keys derive AMPHORA_ID [--key-id N]      key an agent is provisioned with
    healthmgr keys derive AMPHORA_ID --master-key-file FILE --key-id N
    healthmgr keys generate                              a new random master secret

Master keys come from ``[[keys.master]]`` of the configuration (``--config
PATH``, ``$HEALTHMGR_CONFIG`` or the default path); ``derive`` uses the active
key (``keys.active_key_id``) unless ``--key-id`` names another. With
``--master-key-file`` no configuration is read: the file holds the secret as
in ``secret_file`` (its UTF-8 text, one trailing newline ignored).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import uuid
from pathlib import Path

from healthmgr.cli.main import UsageError
from healthmgr.wire.keys import (
    MAX_KEY_ID,
    MIN_MASTER_SECRET_BYTES,
    MasterKey,
    derive_amphora_key,
)

FORMATS = ("text", "json", "value")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("keys", help="heartbeat keys: derive an amphora's key, generate")
    commands = parser.add_subparsers(dest="keys_command", required=True, metavar="KEYS_COMMAND")

    derive = commands.add_parser(
        "derive", help="print the key id and key an amphora agent is provisioned with"
    )
    derive.add_argument("amphora_id", metavar="AMPHORA_ID", help="the amphora's UUID")
    derive.add_argument(
        "--key-id",
        type=int,
        metavar="N",
        help="master key id (default: keys.active_key_id; required with --master-key-file)",
    )
    derive.add_argument(
        "--master-key-file",
        metavar="FILE",
        help="read the master secret from FILE instead of the configuration",
    )
    derive.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $HEALTHMGR_CONFIG or /etc/healthmgr/healthmgr.toml)",
    )
    derive.add_argument(
        "-f", "--format", choices=FORMATS, default="text",
        help="text (default), json, or value: 'KEY_ID KEY_HEX' on one line",
    )  # fmt: skip
    derive.set_defaults(func=cmd_derive)

    generate = commands.add_parser(
        "generate", help="print a new random master secret (64 hex characters)"
    )
    generate.set_defaults(func=cmd_generate)


def cmd_derive(args: argparse.Namespace) -> int:
    amphora = _amphora_id(args.amphora_id)
    if args.master_key_file is not None:
        master = _master_from_file(args.master_key_file, args.key_id)
    else:
        from healthmgr.config import ConfigError

        try:
            master = _master_from_config(args.config, args.key_id)
        except ConfigError as exc:
            print(f"healthmgr: error: {exc}", file=sys.stderr)
            return 1
    try:
        key = derive_amphora_key(master, amphora.bytes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _print(args.format, str(amphora), master.id, key.hex())
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    print(secrets.token_hex(32))
    return 0


def _amphora_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise UsageError(f"AMPHORA_ID: {text!r} is not a UUID") from None


def _master_from_file(path: str, key_id: int | None) -> MasterKey:
    if key_id is None:
        raise UsageError("--key-id N is required with --master-key-file")
    if not 0 <= key_id <= MAX_KEY_ID:
        raise UsageError(f"--key-id: {key_id} is outside 0..{MAX_KEY_ID}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"--master-key-file: cannot read {path}: {reason}") from None
    secret = text.removesuffix("\n").removesuffix("\r").encode("utf-8")
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


def _print(fmt: str, amphora_id: str, key_id: int, key_hex: str) -> None:
    if fmt == "json":
        print(json.dumps({"amphora_id": amphora_id, "key_id": key_id, "key": key_hex}))
    elif fmt == "value":
        print(f"{key_id} {key_hex}")
    else:
        print(f"amphora_id: {amphora_id}\nkey_id: {key_id}\nkey: {key_hex}")
