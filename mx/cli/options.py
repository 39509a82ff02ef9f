"""The remote options of the command line: ``--url``, ``--token``, ``--token-file`` and
``--insecure`` (or ``TACTUS_URL`` and ``TACTUS_TOKEN``), and which commands cannot go remote.

They are accepted before the command (``launch.py --url U list jobs``) and after it
(``launch.py list jobs --url U``). The token is read, checked and handed to the client; it is
never printed or logged.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from pathlib import Path

from db.errors import InvalidInput
from mx.client import ApiClient

#: Environment variables naming the installation and the token (flags win over them).
URL_ENV, TOKEN_ENV = "TACTUS_URL", "TACTUS_TOKEN"
#: Commands that act on this machine only, with the reason given when ``--url`` is set.
LOCAL_ONLY = {
    "db": "db changes this machine's store; run it where the store is (the API has no route)",
    "standalone": "standalone runs the scheduler, supervisor and mx on this machine",
    **dict.fromkeys(
        ("token", "user"),
        "credentials are made where the store is, so that no secret crosses the network to be "
        "made; run it on a machine that reaches the store",
    ),
    **dict.fromkeys(
        ("--start", "--stop", "--restart", "--status"),
        "daemons are started and stopped on their own box; a supervised process remotely: "
        "super --start/--stop P --boxid ID",
    ),
}
#: Commands that read no state: they ignore ``--url``.
STATELESS = frozenset({"next-runs"})


def add_remote_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """Add the options to ``parser``; a sub-command's copy leaves the namespace alone unless
    given (``SUPPRESS``), so it never hides a value given before the command."""
    group = parser.add_argument_group("remote installation (through the REST API)")
    default = None if top_level else argparse.SUPPRESS
    group.add_argument(
        "--url", default=default, help=f"the mx to act through, e.g. https://host (or {URL_ENV})"
    )
    tokens = group.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token", default=default, help=f"bearer token (visible to ps: prefer {TOKEN_ENV})"
    )
    tokens.add_argument(
        "--token-file", metavar="PATH", default=default, help="read the bearer token from PATH"
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        default=False if top_level else argparse.SUPPRESS,
        help="allow plain http:// to a host other than loopback (token in clear text)",
    )


def add_to_commands(parsers: Iterable[argparse.ArgumentParser]) -> None:
    """Accept the options after every command too."""
    for parser in parsers:
        add_remote_options(parser, top_level=False)


def remote_url(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """The URL of ``--url``, else ``TACTUS_URL``; None (act on the store) when neither is set."""
    return args.url or environ.get(URL_ENV) or None


def open_client(
    command: str, args: argparse.Namespace, environ: Mapping[str, str]
) -> ApiClient | None:
    """The API client when ``--url`` or ``TACTUS_URL`` is set, else None.

    Raises:
        InvalidInput: the command cannot act remotely (the reason is given), a bad URL, both
            ``--token`` and ``--token-file``, or an unreadable or empty token file.
    """
    url = remote_url(args, environ)
    if url is None or command in STATELESS:
        return None
    if command in LOCAL_ONLY:
        raise InvalidInput("--url", f"not available remotely: {LOCAL_ONLY[command]}")
    return ApiClient(url, token=_token(args, environ), insecure=args.insecure)


def _token(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    if args.token is not None and args.token_file is not None:
        raise InvalidInput("--token", "give --token or --token-file, not both")
    if args.token is not None:
        return args.token
    if args.token_file is not None:
        path = Path(args.token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise InvalidInput("--token-file", f"cannot read {path}: {reason}") from None
        if not token:
            raise InvalidInput("--token-file", f"{path} is empty")
        return token
    return environ.get(TOKEN_ENV) or None
