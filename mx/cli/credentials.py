"""``launch.py token`` and ``launch.py user``: bearer tokens for scripts and the remote command
line, and users of the web page, made on this machine's store.

A token's secret is printed once, alone on standard output (``launch.py token --create deploy
--role operator > deploy.token``), and only its hash is kept; a password is asked twice on the
terminal (or read from standard input with ``--password-stdin``) and kept as a salted scrypt
hash. Neither is ever logged.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from db import open_store
from db.credentials import CredentialKind
from db.errors import InvalidInput, NotFound
from mx.cli.audit import cli_actor
from mx.cli.render import Out, print_json, render_table
from mx.services.credentials import create_token, create_user

if TYPE_CHECKING:
    from db.credentials import Credential
    from db.store import Store
    from mx.cli.backend import Installation

#: Role given when ``--role`` is not (least privilege: reading only).
DEFAULT_ROLE = "viewer"
#: Table columns of ``--list``.
COLUMNS = ["name", "role", "created_at", "created_by"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``token`` and ``user`` on ``launch.py``'s sub-parsers."""
    for command, noun, remove, text in (
        ("token", "token", "--revoke", "bearer tokens for scripts and the remote command line"),
        ("user", "user", "--delete", "users of the web page (name and password)"),
    ):
        parser = sub.add_parser(command, help=text)
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--create", metavar="NAME", help=f"make a {noun}")
        action.add_argument("--list", action="store_true", help=f"show every {noun}")
        action.add_argument(
            remove, dest="remove", metavar="NAME", help=f"remove a {noun}: it stops working at once"
        )
        parser.add_argument(
            "--role",
            default=DEFAULT_ROLE,
            help=f"viewer, operator, admin or executor (default {DEFAULT_ROLE})",
        )
        parser.add_argument("--json", action="store_true", help="--list as JSON")
    sub.choices["user"].add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (one line) instead of asking",
    )


def cmd_token(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    with open_store(inst.settings.store_uri) as store:
        store.init_schema()
        if args.create:
            secret = create_token(store, args.create, args.role, created_by=cli_actor())
            sys.stderr.write(
                f"token {args.create} ({args.role}) created; it is shown only this once: "
                "send it as 'Authorization: Bearer <token>', or give it to launch.py with "
                "--token-file or TACTUS_TOKEN\n"
            )
            out(secret)
            return 0
        return _list_or_remove(args, store, CredentialKind.TOKEN, out)


def cmd_user(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    with open_store(inst.settings.store_uri) as store:
        store.init_schema()
        if args.create:
            password = _password(args.create, from_stdin=args.password_stdin)
            create_user(store, args.create, password, args.role, created_by=cli_actor())
            out(f"user {args.create} ({args.role}) created")
            return 0
        return _list_or_remove(args, store, CredentialKind.PASSWORD, out)


def _list_or_remove(args: argparse.Namespace, store: Store, kind: CredentialKind, out: Out) -> int:
    noun = "token" if kind is CredentialKind.TOKEN else "user"
    if args.remove:
        try:
            store.delete_credential(kind, args.remove)
        except NotFound:
            raise NotFound(noun, args.remove) from None
        out(f"{noun} {args.remove} removed")
        return 0
    rows = [_row(c) for c in store.list_credentials(kind)]
    if args.json:
        print_json(out, rows)
    else:
        out(render_table(rows, COLUMNS))
    return 0


def _row(credential: Credential) -> dict[str, str]:
    """What may be shown of a credential: never its hash."""
    return {
        "name": credential.name,
        "role": credential.role.value,
        "created_at": credential.created_at.isoformat().replace("+00:00", "Z"),
        "created_by": credential.created_by,
    }


def _password(name: str, *, from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise InvalidInput(
            "--password-stdin", "no terminal to ask the password on: pipe it with --password-stdin"
        )
    first = getpass.getpass(f"Password for {name}: ")
    if getpass.getpass("Again: ") != first:
        raise InvalidInput("password", "the two passwords differ")
    return first
