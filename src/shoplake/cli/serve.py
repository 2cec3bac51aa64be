"""`shoplake serve`, `shoplake pg`, `shoplake dashboard export` and `shoplake serve-token ...`.

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
    pg_port: Annotated[int | None, typer.Option(help="also serve the PostgreSQL protocol on this port "
                                                "(BI tools, psql, JDBC; off by default)")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate for TLS on the PostgreSQL port")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM key of --tls-cert")] = None,
) -> None:
    """Serve the dashboard and the SQL API (OpenAPI docs at /docs); Ctrl-C or SIGTERM stops it."""
    from shoplake.serve.app import create_app, run_server
    from shoplake.serve.security import load_tokens, tokens_file
    from shoplake.serve.web import LOOPBACK_HOSTS

    loopback = _check_host(host, allow_remote, "the dashboard and the SQL API")
    hosts = tuple(allowed_host or ()) or ((host,) if not loopback and host not in ("0.0.0.0", "::") else ())
    settings = cli.settings()
    pg = None if pg_port is None else {"host": host, "port": pg_port, "tls": _tls(tls_cert, tls_key)}
    app = create_app(settings, allowed_hosts=LOOPBACK_HOSTS + hosts, pg=pg)
    path = tokens_file(settings)
    count = len(load_tokens(path))
    cli.console.print(f"dashboard: http://{host}:{port}/   API docs: http://{host}:{port}/docs")
    if pg_port is not None:
        cli.console.print(f"PostgreSQL: psql 'host={host} port={pg_port} dbname=shoplake user=<token name>' "
                          f"(password: the token's secret)")
    cli.console.print(f"SQL API tokens: {count} in {path}" if count else
                      "SQL API: no tokens yet; create one with `shoplake serve-token add NAME --role analyst`")
    run_server(app, host=host, port=port)


def _check_host(host: str, allow_remote: bool, what: str) -> bool:
    """Whether `host` is loopback; refuse any other unless `--allow-remote` (then warn)."""
    import ipaddress

    from shoplake.errors import ConfigError

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise ConfigError(f"--host {host} would expose {what} beyond this machine; "
                          f"add --allow-remote (and put TLS in front) or use --host 127.0.0.1")
    if not loopback:
        cli.console.print(f"[yellow]warning: listening on {host}: other machines can reach {what}; tokens "
                          f"travel in clear text unless TLS is used[/yellow]")
    return loopback


def _tls(cert: Path | None, key: Path | None):
    from shoplake.errors import ConfigError
    from shoplake.serve.pg import tls_context

    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    return tls_context(str(cert), str(key))


def pg(
    host: Annotated[str, typer.Option(help="interface to listen on (127.0.0.1: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 5433,
    allow_remote: Annotated[bool, typer.Option("--allow-remote", help="required to listen on an interface other "
                                               "than loopback (use TLS)")] = False,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: TLS (then cleartext passwords too)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM key of --tls-cert")] = None,
) -> None:
    """Serve only the PostgreSQL protocol (BI tools, psql, JDBC); Ctrl-C or SIGTERM stops it."""
    import signal
    import threading

    from shoplake.serve.pg import PgServer
    from shoplake.serve.service import QueryService

    _check_host(host, allow_remote, "the PostgreSQL endpoint")
    service = QueryService(cli.settings())
    service.start()
    server = PgServer(service, host=host, port=port, tls=_tls(tls_cert, tls_key))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server.start()
        cli.console.print(f"PostgreSQL: psql 'host={host} port={server.port} dbname=shoplake user=<token name>' "
                          f"(password: the token's secret); Ctrl-C stops")
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        service.close()


def export(
    file: Annotated[Path, typer.Argument(help="the HTML file to write")],
    start: Annotated[str | None, typer.Option(help="first date, YYYY-MM-DD (default: each table's last complete "
                                                   "month of data)")] = None,
    end: Annotated[str | None, typer.Option(help="last date, YYYY-MM-DD")] = None,
) -> None:
    """Write every dashboard page into one self-contained HTML file (works offline)."""
    from shoplake.serve.app import export_dashboard
    from shoplake.serve.view import parse_filters

    titles = export_dashboard(cli.lake(), file, parse_filters({"start": start, "end": end}))
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


# `serve`, `pg`, `dashboard export` and `serve-token` on the shoplake command line.
cli.app.command("serve")(serve)
cli.app.command("pg")(pg)
dashboard = typer.Typer(no_args_is_help=True, help="The dashboard as a file.")
dashboard.command("export")(export)
cli.app.add_typer(dashboard, name="dashboard")
tokens = typer.Typer(no_args_is_help=True, help="Bearer tokens of the SQL API (operator).")
tokens.command("add")(add_token)
tokens.command("list")(list_tokens)
tokens.command("remove")(remove)
cli.app.add_typer(tokens, name="serve-token")
