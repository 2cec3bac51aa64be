"""`shoplake serve`, `shoplake dashboard export` and `shoplake serve-token ...`.

Heavy imports (FastAPI, uvicorn, plotly) happen inside the commands so the rest of the CLI starts fast.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from shoplake.cli import app as cli


class Role(StrEnum):
    analyst = "analyst"
    engineer = "engineer"



def serve(
    host: Annotated[str, typer.Option(help="interface to listen on (127.0.0.1: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    allow_remote: Annotated[bool, typer.Option("--allow-remote", help="required to listen on an interface other "
                                               "than loopback (put a TLS proxy in front)")] = False,
    allowed_host: Annotated[list[str] | None, typer.Option(help="a host name clients use to reach the server "
                                                           "(Host header); repeatable; default: --host")] = None,
) -> None:
    """Serve the dashboard and the SQL API (OpenAPI docs at /docs); Ctrl-C or SIGTERM stops it."""
    import ipaddress

    from shoplake.errors import ConfigError
    from shoplake.serve.app import create_app, run_server
    from shoplake.serve.security import load_tokens, tokens_file
    from shoplake.serve.web import LOOPBACK_HOSTS

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise ConfigError(f"--host {host} would expose the dashboard and the SQL API beyond this machine; "
                          f"add --allow-remote (and put a TLS proxy in front) or use --host 127.0.0.1")
    if not loopback:
        cli.console.print(f"[yellow]warning: listening on {host}: other machines can reach the dashboard and the "
                           f"SQL API; tokens travel in clear text unless a TLS proxy is in front[/yellow]")
    hosts = tuple(allowed_host or ()) or ((host,) if not loopback and host not in ("0.0.0.0", "::") else ())
    settings = cli.settings()
    app = create_app(settings, allowed_hosts=LOOPBACK_HOSTS + hosts)
    path = tokens_file(settings)
    count = len(load_tokens(path))
    cli.console.print(f"dashboard: http://{host}:{port}/   API docs: http://{host}:{port}/docs")
    cli.console.print(f"SQL API tokens: {count} in {path}" if count else
                       "SQL API: no tokens yet; create one with `shoplake serve-token add NAME --role analyst`")
    run_server(app, host=host, port=port)


def export(
    file: Annotated[Path, typer.Argument(help="the HTML file to write")],
    start: Annotated[str | None, typer.Option(help="first date, YYYY-MM-DD (default: last 30 days of data)")] = None,
    end: Annotated[str | None, typer.Option(help="last date, YYYY-MM-DD")] = None,
) -> None:
    """Write every dashboard page into one self-contained HTML file (works offline)."""
    from shoplake.serve.app import export_dashboard, parse_dates

    titles = export_dashboard(cli.lake(), file, parse_dates(start, end))
    cli.console.print(f"wrote {file} ({file.stat().st_size / 1e6:.1f} MB): {', '.join(titles)}")


def add_token(
    name: Annotated[str, typer.Argument(help="who or what uses the token, e.g. alice or bi-tool")],
    role: Annotated[Role, typer.Option(help="analyst (gold and ops tables) or engineer (every layer)")],
) -> None:
    """Create a token (or replace one of that name) and print its secret once."""
    from shoplake.serve.security import add_token as add
    from shoplake.serve.security import tokens_file

    path = tokens_file(cli.settings())
    secret = add(path, name, role.value)
    cli.console.print(f"token {name!r} ({role.value}) saved in {path} (only its SHA-256 is stored).")
    cli.console.print("Secret, shown once; send it as `Authorization: Bearer <secret>`:")
    print(secret)


def list_tokens() -> None:
    """List the configured tokens (names and roles; secrets are never stored)."""
    from shoplake.serve.security import load_tokens, tokens_file

    path = tokens_file(cli.settings())
    out = Table("token", "role", "sha256 (prefix)", title=str(path))
    for token in load_tokens(path).values():
        out.add_row(token.name, token.role, token.sha256[:12])
    cli.console.print(out)


def remove(name: Annotated[str, typer.Argument(help="token name")]) -> None:
    """Delete a token: its secret stops working at once."""
    from shoplake.serve.security import remove_token, tokens_file

    remove_token(tokens_file(cli.settings()), name)
    cli.console.print(f"token {name!r} removed")


# `serve`, `dashboard export` and `serve-token` on the shoplake command line.
cli.app.command("serve")(serve)
dashboard = typer.Typer(no_args_is_help=True, help="The dashboard as a file.")
dashboard.command("export")(export)
cli.app.add_typer(dashboard, name="dashboard")
tokens = typer.Typer(no_args_is_help=True, help="Bearer tokens of the SQL API (operator).")
tokens.command("add")(add_token)
tokens.command("list")(list_tokens)
tokens.command("remove")(remove)
cli.app.add_typer(tokens, name="serve-token")
