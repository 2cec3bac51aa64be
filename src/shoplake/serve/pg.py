"""The PostgreSQL wire protocol endpoint: `shoplake serve --pg-port 5433` and `shoplake pg`.

BI tools (Power BI, Tableau, Metabase, Superset, Grafana, DBeaver), psql, JDBC and Python drivers connect
with user = token name and password = token secret. Every query goes through the same
`shoplake.serve.service.QueryService` as the HTTP API (token, role, admission limits, allow-list, killable
worker, `ops.query_log`): this module only speaks the protocol. The messages are encoded and decoded by
`pygwire` (a sans-I/O codec) and SCRAM-SHA-256 is checked by `scramp`; what is here is the glue: the
connection's life (TLS, authentication, simple and extended query protocol, cursors, cancel requests)
and how an outcome of the service becomes PostgreSQL messages.

Session statements (BEGIN, COMMIT, SET, SHOW, DECLARE/FETCH/CLOSE of a cursor, ...) are answered here:
the lake is read-only, so a transaction is only a state the client sees, and a cursor holds the rows of
one query (at most the row cap) that FETCH hands out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import ssl
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from pygwire import BackendConnection
from pygwire.constants import TransactionStatus
from pygwire.exceptions import PygwireError
from pygwire.messages import (
    AuthenticationCleartextPassword,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    BackendKeyData,
    Bind,
    BindComplete,
    CancelRequest,
    Close,
    CloseComplete,
    CommandComplete,
    Describe,
    EmptyQueryResponse,
    ErrorResponse,
    Execute,
    FieldDescription,
    Flush,
    GSSEncRequest,
    GSSResponse,
    NoData,
    NoticeResponse,
    ParameterDescription,
    ParameterStatus,
    Parse,
    ParseComplete,
    PasswordMessage,
    PortalSuspended,
    Query,
    ReadyForQuery,
    RowDescription,
    SASLInitialResponse,
    SASLResponse,
    SSLRequest,
    SSLResponse,
    StartupMessage,
    Sync,
    Terminate,
)
from scramp import ScramMechanism

from shoplake.serve.pgcatalog import PG_TYPES, SERVER_VERSION
from shoplake.serve.security import Token
from shoplake.serve.service import QueryOutcome, QueryService, Unauthorized

log = logging.getLogger(__name__)

# SQLSTATE of each outcome status (the same status string is what ops.query_log records).
SQLSTATE = {"refused": "42601", "forbidden": "42501", "timeout": "57014", "cancelled": "57014", "error": "XX000",
            "unauthorized": "28P01", "rate_limited": "53400", "busy": "53300", "unavailable": "57P03",
            "too_large": "54000", "invalid": "08P01"}
MAX_CONNECTIONS = 256
_EPOCH = datetime(2000, 1, 1)  # PostgreSQL's binary dates and timestamps count from here
_SCRAM = ScramMechanism("SCRAM-SHA-256")
_CONTROL = re.compile(r"^\s*(begin|start\s+transaction|commit|end|rollback|abort|set|reset|show|discard|deallocate|"
                      r"declare|fetch|move|close|listen|unlisten|savepoint|release)\b", re.IGNORECASE)
_DECLARE = re.compile(r"^\s*declare\s+(\"[^\"]+\"|\w+)\s+(?:binary\s+)?(?:(?:asensitive|insensitive)\s+)?"
                      r"(?:no\s+)?(?:scroll\s+)?cursor\s+(?:(?:with|without)\s+hold\s+)?for\s+(.*)$",
                      re.IGNORECASE | re.DOTALL)
_FETCH = re.compile(r"^\s*(fetch|move)\s+(?:(forward|next|all|\d+)\s*(all|\d+)?\s+)?(?:from|in)?\s*(\"[^\"]+\"|\w+)"
                    r"\s*;?\s*$", re.IGNORECASE)
_SET = re.compile(r"^\s*set\s+(?:session\s+|local\s+)?(\w+)\s*(?:=|to)\s*(.*?)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_PARAMETER = re.compile(r"\$(\d+)")


# Session parameters a client may SET (drivers and BI tools set these on connect); they change only what the
# session reports with SHOW. Anything else (DuckDB settings included) is refused, as the HTTP API refuses it.
SETTABLE = frozenset({"application_name", "extra_float_digits", "datestyle", "client_encoding", "search_path",
                      "timezone", "time_zone", "statement_timeout", "intervalstyle", "client_min_messages",
                      "bytea_output", "lc_messages", "lc_monetary", "lc_numeric", "lc_time", "lock_timeout",
                      "idle_in_transaction_session_timeout", "default_transaction_isolation",
                      "default_transaction_read_only", "transaction", "session", "names", "standard_conforming_strings",
                      "geqo", "jit", "join_collapse_limit", "from_collapse_limit", "enable_seqscan"})


def _settings(user: str, application: str) -> dict[str, str]:
    """The run-time parameters a client is told at start-up (and may ask with SHOW)."""
    return {"server_version": SERVER_VERSION, "server_encoding": "UTF8", "client_encoding": "UTF8",
            "DateStyle": "ISO, MDY", "TimeZone": "UTC", "IntervalStyle": "postgres", "integer_datetimes": "on",
            "standard_conforming_strings": "on", "is_superuser": "off", "session_authorization": user,
            "application_name": application, "default_transaction_read_only": "on",
            "search_path": "gold, ops, \"$user\", public", "transaction_isolation": "read committed",
            "max_identifier_length": "63", "extra_float_digits": "1", "lc_collate": "C.UTF-8"}


@dataclass
class Result:
    """What one statement answers: columns (name, type OID), DataRow messages already encoded, a tag."""

    tag: str
    columns: list[tuple[str, int]] | None = None  # None: a statement without rows (BEGIN, SET, ...)
    rows: list[bytes] = field(default_factory=list)
    notice: str | None = None
    sent: int = 0  # rows already handed out (portal executed with a row limit, cursor fetched)


class StatementError(Exception):
    """A statement the client gets an ErrorResponse for."""

    def __init__(self, message: str, sqlstate: str = "42601", *, logged: bool = False):
        super().__init__(message)
        self.sqlstate, self.logged = sqlstate, logged  # logged: the query service already recorded it


def _split_rows(body: bytes) -> list[bytes]:
    """The DataRow messages of a worker's `pg` answer, one by one (each is 'D', Int32 length, payload)."""
    rows, offset = [], 0
    while offset < len(body):
        (length,) = struct.unpack_from("!I", body, offset + 1)
        rows.append(body[offset:offset + 1 + length])
        offset += 1 + length
    return rows


def _identifier(text: str) -> str:
    return text[1:-1] if text.startswith('"') else text.lower()


class PgServer:
    """The PostgreSQL endpoint over one `QueryService`, in an asyncio loop of its own thread."""

    def __init__(self, service: QueryService, *, host: str = "127.0.0.1", port: int = 5433,
                 tls: ssl.SSLContext | None = None):
        self.service = service
        self.host, self.port, self.tls = host, port, tls
        self.sessions: dict[int, _Session] = {}  # by process id, for cancel requests
        # Queries wait for a worker on threads of their own (as the HTTP API's do).
        self.executor = ThreadPoolExecutor(max_workers=service.settings.serve_max_pending + 8,
                                           thread_name_prefix="shoplake-pg-query")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Listen in a background thread; returns once the port is bound (raises if it cannot be)."""
        self._thread = threading.Thread(target=self._run, name="shoplake-pg", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port, limit=2**20))
            self.port = self._server.sockets[0].getsockname()[1]
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def stop(self) -> None:
        """Stop listening and close every connection."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return

        async def shutdown() -> None:
            self._server.close()
            for session in list(self.sessions.values()):
                session.writer.close()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- connections ----------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer)
        try:
            await session.run()
        except (ConnectionError, asyncio.IncompleteReadError, PygwireError, ssl.SSLError):
            pass
        except Exception:
            log.exception("PostgreSQL connection failed")
        finally:
            self.sessions.pop(session.process_id, None)
            writer.close()

    def cancel(self, process_id: int, secret: bytes) -> None:
        session = self.sessions.get(process_id)
        if session is not None and hmac.compare_digest(session.secret, secret):
            session.cancel.set()


class _Session:
    """One client connection."""

    def __init__(self, server: PgServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server, self.service = server, server.service
        self.reader, self.writer = reader, writer
        self.conn = BackendConnection(strict=False)
        self.process_id = secrets.randbelow(2**31 - 1) + 1
        self.secret = secrets.token_bytes(4)
        self.cancel = threading.Event()
        self.token: Token | None = None
        self.params: dict[str, str] = {}
        self.statements: dict[str, tuple[str, list[int]]] = {}
        self.portals: dict[str, tuple[str, tuple, Result | None]] = {}
        self.cursors: dict[str, Result] = {}
        self.transaction = TransactionStatus.IDLE
        self.failed = False  # an error in the extended protocol: skip messages until Sync
        self._pending = bytearray()
        self._queue: list = []

    # -- reading and writing ---------------------------------------------------------------------------------
    async def _next(self):
        limit = self.service.settings.serve_body_limit + 1024
        while not self._queue:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("client closed the connection")
            self._pending += data
            self._queue.extend(self.conn.receive(data))
            if self._queue:
                self._pending.clear()
            elif len(self._pending) > limit:
                self.service.refuse(f"(not read: a message of over {limit} bytes)", "too_large",
                                    "message over the body limit")
                self._send_error(f"message over the {self.service.settings.serve_body_limit}-byte limit", "54000")
                await self.writer.drain()
                raise ConnectionError("message too large")
        return self._queue.pop(0)

    def _send(self, *messages) -> None:
        for message in messages:
            self.writer.write(self.conn.send(message))

    def _send_error(self, message: str, sqlstate: str, severity: str = "ERROR") -> None:
        self._send(ErrorResponse(fields={"S": severity, "V": severity, "C": sqlstate, "M": message}))

    # -- start-up ------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        message = await self._next()
        while isinstance(message, SSLRequest | GSSEncRequest):
            if isinstance(message, SSLRequest) and self.server.tls is not None:
                self._send(SSLResponse(accepted=True))
                await self.writer.drain()
                await self.writer.start_tls(self.server.tls)
            elif isinstance(message, SSLRequest):
                self._send(SSLResponse(accepted=False))  # the client goes on in clear text (or gives up)
            else:
                self._send(GSSResponse(accepted=False))
            await self.writer.drain()
            message = await self._next()
        if isinstance(message, CancelRequest):  # sent on a connection of its own (after SSL negotiation, or not)
            self.server.cancel(message.process_id, bytes(message.secret_key))
            return
        if not isinstance(message, StartupMessage):
            return
        if len(self.server.sessions) >= MAX_CONNECTIONS:
            self._send_error(f"too many connections (at most {MAX_CONNECTIONS})", "53300", "FATAL")
            return
        user = message.params.get("user", "")
        if not await self._authenticate(user):
            return
        self.server.sessions[self.process_id] = self
        self.params = _settings(user, message.params.get("application_name", ""))
        for name, value in self.params.items():
            self._send(ParameterStatus(name=name, value=value))
        self._send(BackendKeyData(process_id=self.process_id, secret_key=self.secret),
                   ReadyForQuery(status=self.transaction))
        await self.writer.drain()
        await self._serve()

    async def _authenticate(self, user: str) -> bool:
        """SCRAM-SHA-256 (or a cleartext password over TLS) against the token named `user`."""
        token = self.service.tokens.current().get(user)
        info = token.scram_auth_info() if token else None
        over_tls = self.writer.get_extra_info("sslcontext") is not None
        refusal = None
        if info is None and token is not None and not over_tls:
            refusal = (f"token {user!r} was created before the PostgreSQL endpoint and has no SCRAM verifier: "
                       f"recreate it with `shoplake serve-token add {user} --role {token.role}`, or connect "
                       f"with TLS (--tls-cert/--tls-key) and sslmode=require")
        elif token is not None and info is None:
            self._send(AuthenticationCleartextPassword())
            await self.writer.drain()
            password = await self._next()
            secret = password.password if isinstance(password, PasswordMessage) else ""
            try:
                identified = self.service.identify(secret if isinstance(secret, str) else secret.decode())
                ok = identified.name == user
            except Unauthorized:
                ok = False
            refusal = None if ok else f"password authentication failed for user {user!r}"
        else:
            # An unknown user gets the same exchange with a made-up verifier, and fails at its end.
            info = info or _SCRAM.make_auth_info(secrets.token_hex(16), iteration_count=4096)
            refusal = await self._scram(user, info)
        if refusal is not None:
            self.service.refuse(f"(PostgreSQL login as {user!r})", "unauthorized", refusal)
            self._send_error(refusal, "28P01", "FATAL")
            await self.writer.drain()
            return False
        self.token = token
        self._send(AuthenticationOk())
        return True

    async def _scram(self, user: str, info: tuple) -> str | None:
        self._send(AuthenticationSASL(mechanisms=["SCRAM-SHA-256"]))
        await self.writer.drain()
        first = await self._next()
        if not isinstance(first, SASLInitialResponse) or first.mechanism != "SCRAM-SHA-256":
            return "SCRAM-SHA-256 authentication expected"
        exchange = ScramExchange(*info)
        try:
            self._send(AuthenticationSASLContinue(data=exchange.server_first(bytes(first.data).decode())))
            await self.writer.drain()
            final = await self._next()
            if not isinstance(final, SASLResponse | PasswordMessage):
                return "SCRAM-SHA-256 authentication expected"
            data = final.data if isinstance(final, SASLResponse) else final.password
            self._send(AuthenticationSASLFinal(data=exchange.server_final(
                bytes(data).decode() if isinstance(data, bytes | bytearray | memoryview) else data)))
        except ScramError:
            return f"password authentication failed for user {user!r}"
        return None

    # -- queries ----------------------------------------------------------------------------------------------------
    async def _serve(self) -> None:
        while True:
            message = await self._next()
            if isinstance(message, Terminate):
                return
            if isinstance(message, Query):
                await self._simple(message.query_string)
            elif isinstance(message, Sync):
                self.failed = False
                self._send(ReadyForQuery(status=self._status()))
            elif isinstance(message, Flush):
                pass
            elif not self.failed:
                try:
                    await self._extended(message)
                except StatementError as exc:
                    self.failed = True
                    self._error_in_transaction()
                    self._send_error(str(exc), exc.sqlstate)
            await self.writer.drain()

    def _status(self) -> TransactionStatus:
        return self.transaction

    def _error_in_transaction(self) -> None:
        if self.transaction == TransactionStatus.IN_TRANSACTION:
            self.transaction = TransactionStatus.ERROR_TRANSACTION

    async def _simple(self, sql: str) -> None:
        statements = [s for s in _split(sql) if s.strip()]
        if not statements:
            self._send(EmptyQueryResponse())
        for statement in statements:
            try:
                result = await self._statement(statement, ())
            except StatementError as exc:
                self._error_in_transaction()
                self._send_error(str(exc), exc.sqlstate)
                break
            self._send_result(result, describe=True, limit=0)
        self._send(ReadyForQuery(status=self._status()))

    async def _extended(self, message) -> None:
        if isinstance(message, Parse):
            self.statements[message.statement] = (message.query, list(message.param_types))
            self._send(ParseComplete())
        elif isinstance(message, Bind):
            if message.statement not in self.statements:
                raise StatementError(f"prepared statement {message.statement!r} does not exist", "26000")
            if any(fmt == 1 for fmt in message.result_formats):
                raise StatementError("binary result format is not supported: ask for text results "
                                     "(JDBC: binaryTransfer=false)", "0A000")
            sql, types = self.statements[message.statement]
            params = tuple(_decode_param(types[i] if i < len(types) else 0,
                                         _format(message.param_formats, i), value)
                           for i, value in enumerate(message.param_values))
            self.portals[message.portal] = (sql, params, None)
            self._send(BindComplete())
        elif isinstance(message, Describe):
            if message.kind == "S":
                if message.name not in self.statements:
                    raise StatementError(f"prepared statement {message.name!r} does not exist", "26000")
                sql, types = self.statements[message.name]
                count = max((int(n) for n in _PARAMETER.findall(sql)), default=0)
                self._send(ParameterDescription(type_oids=[types[i] if i < len(types) and types[i] else 25
                                                           for i in range(count)]))
                result = None if _CONTROL.match(sql) else await self._statement(sql, (None,) * count, limit=0)
            else:
                result = await self._portal_result(message.name)
            if result is None or result.columns is None:
                self._send(NoData())
            else:
                self._send(_row_description(result.columns))
        elif isinstance(message, Execute):
            result = await self._portal_result(message.portal)
            self._send_result(result, describe=False, limit=message.max_rows)
        elif isinstance(message, Close):
            (self.statements if message.kind == "S" else self.portals).pop(message.name, None)
            self._send(CloseComplete())

    async def _portal_result(self, name: str) -> Result:
        if name not in self.portals:
            if name in self.cursors:  # a DECLAREd cursor is a portal too (psycopg describes it)
                return self.cursors[name]
            raise StatementError(f"portal {name!r} does not exist", "34000")
        sql, params, result = self.portals[name]
        if result is None:
            result = await self._statement(sql, params)
            self.portals[name] = (sql, params, result)
        return result

    def _send_result(self, result: Result, *, describe: bool, limit: int) -> None:
        if result.columns is None:
            self._send(CommandComplete(tag=result.tag))
            return
        if describe:
            self._send(_row_description(result.columns))
        end = len(result.rows) if limit <= 0 else min(len(result.rows), result.sent + limit)
        for row in result.rows[result.sent:end]:
            self.writer.write(row)  # encoded by the worker
        sent, result.sent = end - result.sent, end
        if limit > 0 and end < len(result.rows):
            self._send(PortalSuspended())
            return
        if result.notice:
            self._send(NoticeResponse(fields={"S": "NOTICE", "V": "NOTICE", "C": "01000", "M": result.notice}))
        self._send(CommandComplete(tag=result.tag.replace("{n}", str(sent))))

    async def _statement(self, sql: str, params: tuple, *, limit: int | None = None) -> Result:
        """Run one statement: a session statement here, anything else through the query service."""
        if self.transaction == TransactionStatus.ERROR_TRANSACTION and not re.match(
                r"^\s*(rollback|abort|end|commit)\b", sql, re.IGNORECASE):  # ROLLBACK TO SAVEPOINT too
            raise StatementError("current transaction is aborted, commands ignored until end of transaction block",
                                 "25P02")
        control = _CONTROL.match(sql)
        if control:
            try:
                return await self._control(control.group(1).split()[0].lower(), sql, params)
            except StatementError as exc:
                if not exc.logged:
                    self.service.refuse(sql, "refused", str(exc), self.token)  # logged like any refused query
                raise
        outcome = await self._run(sql, params, limit=limit)
        answer = outcome.answer
        names = [name for name, _ in answer.columns]
        notice = None
        if outcome.truncated:
            notice = (f"result cut at {answer.rows} rows by the server's {answer.truncated_by} cap "
                      f"(serve_row_cap {self.service.settings.serve_row_cap}, "
                      f"serve_byte_cap {self.service.settings.serve_byte_cap})")
        return Result("SELECT {n}", list(zip(names, answer.pg_types, strict=True)), _split_rows(answer.body), notice)

    async def _run(self, sql: str, params: tuple, *, limit: int | None) -> QueryOutcome:
        self.cancel.clear()
        run = partial(self.service.run, self.token, sql, limit=limit, fmt="pg", dialect="postgres",
                      params=params, user=self.token.name, cancel=self.cancel)
        outcome = await asyncio.get_running_loop().run_in_executor(self.server.executor, run)
        if outcome.status != "ok" or outcome.answer is None:
            raise StatementError(outcome.message or outcome.status, SQLSTATE.get(outcome.status, "XX000"), logged=True)
        return outcome

    async def _control(self, verb: str, sql: str, params: tuple) -> Result:
        if verb in ("begin", "start"):
            self.transaction = TransactionStatus.IN_TRANSACTION
            return Result("BEGIN")
        if verb in ("savepoint", "release") or re.match(r"^\s*rollback\s+to\b", sql, re.IGNORECASE):
            if verb == "rollback" and self.transaction == TransactionStatus.ERROR_TRANSACTION:
                self.transaction = TransactionStatus.IN_TRANSACTION
            return Result({"savepoint": "SAVEPOINT", "release": "RELEASE"}.get(verb, "ROLLBACK"))
        if verb in ("commit", "end", "rollback", "abort"):
            rolled_back = verb in ("rollback", "abort") or self.transaction == TransactionStatus.ERROR_TRANSACTION
            self.transaction = TransactionStatus.IDLE
            self.cursors.clear()
            return Result("ROLLBACK" if rolled_back else "COMMIT")
        if verb in ("set", "reset"):
            words = sql.split()
            name = words[1].lower() if len(words) > 1 else ""
            if name in ("session", "local") and len(words) > 2:
                name = words[2].lower()
            name = name.rstrip(";").split("=")[0]
            if name not in SETTABLE and name != "all":
                raise StatementError(f"{verb.upper()} {name} is not allowed: the PostgreSQL endpoint lets clients set "
                                     f"only session parameters such as application_name or DateStyle", "42601")
            match = _SET.match(sql)
            if match and verb == "set":
                self.params[match.group(1)] = match.group(2).strip("'\"")
            return Result(verb.upper())
        if verb == "discard" or verb == "deallocate" or verb in ("listen", "unlisten"):
            if verb == "deallocate":
                name = sql.split()[-1].rstrip(";")
                self.statements.pop(_identifier(name), None)
            return Result({"discard": "DISCARD ALL", "deallocate": "DEALLOCATE"}.get(verb, verb.upper()))
        if verb == "show":
            name = "_".join(sql.split(None, 1)[1].strip().rstrip(";").strip().strip('"').split())
            name = {"transaction_isolation_level": "transaction_isolation"}.get(name.lower(), name)
            lookup = {k.lower(): v for k, v in self.params.items()}
            if name.lower() not in lookup:
                raise StatementError(f'unrecognized configuration parameter "{name}"', "42601")
            row = _text_row([lookup[name.lower()]])
            return Result("SHOW", [(name.lower(), 25)], [row])
        if verb == "declare":
            match = _DECLARE.match(sql)
            if not match:
                raise StatementError("cannot parse DECLARE: use DECLARE name CURSOR FOR query")
            result = await self._statement(match.group(2), params)
            self.cursors[_identifier(match.group(1))] = result
            return Result("DECLARE CURSOR")
        if verb in ("fetch", "move"):
            match = _FETCH.match(sql)
            if not match:
                raise StatementError("cannot parse FETCH: use FETCH [FORWARD] [n|ALL] FROM name")
            name = _identifier(match.group(4))
            if name not in self.cursors:
                raise StatementError(f'cursor "{name}" does not exist', "34000")
            cursor = self.cursors[name]
            amount = (match.group(3) or match.group(2) or "1").lower()
            count = len(cursor.rows) if amount == "all" else 1 if amount in ("forward", "next") else int(amount)
            rows = cursor.rows[cursor.sent:cursor.sent + count]
            cursor.sent += len(rows)
            if match.group(1).lower() == "move":
                return Result(f"MOVE {len(rows)}")
            return Result(f"FETCH {len(rows)}", cursor.columns, rows, sent=0)
        if verb == "close":
            name = sql.split(None, 1)[1].strip().rstrip(";").strip()
            if name.lower() == "all":
                self.cursors.clear()
            else:
                self.cursors.pop(_identifier(name), None)
            return Result("CLOSE CURSOR")
        raise StatementError(f"{verb.upper()} is not supported", "0A000")


class ScramError(Exception):
    """The client's SCRAM messages are malformed or its proof is wrong."""


class ScramExchange:
    """The server side of one SCRAM-SHA-256 exchange (RFC 5802 / 7677), against a stored verifier.

    `scramp` makes the verifiers (`shoplake.serve.security.scram_verifier`), but its server refuses the
    empty user name that libpq and pgjdbc send in `client-first` (PostgreSQL takes the user from the start-up
    message and ignores it), so the two messages are checked here: a few lines of HMAC.
    """

    def __init__(self, salt: bytes, stored_key: bytes, server_key: bytes, iterations: int):
        self.salt, self.stored_key, self.server_key, self.iterations = salt, stored_key, server_key, iterations
        self.nonce = self.first_bare = self.first_server = self.header = ""

    def server_first(self, client_first: str) -> bytes:
        header, sep, bare = client_first.partition("n=")
        if not sep or header not in ("n,,", "y,,"):  # channel binding (-PLUS) is not offered
            raise ScramError("unsupported GS2 header")
        attributes = dict(part.split("=", 1) for part in ("n=" + bare).split(",") if "=" in part)
        if not attributes.get("r"):
            raise ScramError("client nonce missing")
        self.header, self.first_bare = header, "n=" + bare
        self.nonce = attributes["r"] + base64.b64encode(secrets.token_bytes(18)).decode()
        self.first_server = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={self.iterations}"
        return self.first_server.encode()

    def server_final(self, client_final: str) -> bytes:
        without_proof, sep, proof = client_final.rpartition(",p=")
        attributes = dict(part.split("=", 1) for part in without_proof.split(",") if "=" in part)
        if not sep or attributes.get("r") != self.nonce or \
                attributes.get("c") != base64.b64encode(self.header.encode()).decode():
            raise ScramError("nonce or channel binding mismatch")
        auth_message = f"{self.first_bare},{self.first_server},{without_proof}".encode()
        signature = hmac.new(self.stored_key, auth_message, hashlib.sha256).digest()
        try:
            client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof, validate=True), signature, strict=True))
        except (ValueError, binascii.Error) as exc:
            raise ScramError("malformed proof") from exc
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.stored_key):
            raise ScramError("wrong proof")
        verifier = hmac.new(self.server_key, auth_message, hashlib.sha256).digest()
        return f"v={base64.b64encode(verifier).decode()}".encode()


def _split(sql: str) -> list[str]:
    """Statements of a simple query, split at semicolons outside quotes and comments."""
    parts, current, quote, index = [], [], None, 0
    while index < len(sql):
        char = sql[index]
        if quote:
            current.append(char)
            if char == quote:
                quote = None
        elif char in ("'", '"'):
            quote = char
            current.append(char)
        elif sql.startswith("--", index):
            end = sql.find("\n", index)
            end = len(sql) if end < 0 else end
            current.append(sql[index:end])
            index = end
            continue
        elif char == ";":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def _format(formats: list[int], index: int) -> int:
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else formats[index]


def _decode_param(oid: int, fmt: int, value: bytes | None) -> tuple[int, str | None]:
    """A bound parameter as (type OID, text): text format as sent, binary format for the common types."""
    if value is None:
        return oid, None
    raw = bytes(value)
    if fmt == 0:
        return oid, raw.decode("utf-8")
    binary = {16: lambda b: "true" if b[0] else "false", 21: lambda b: str(struct.unpack("!h", b)[0]),
              23: lambda b: str(struct.unpack("!i", b)[0]), 20: lambda b: str(struct.unpack("!q", b)[0]),
              700: lambda b: repr(struct.unpack("!f", b)[0]), 701: lambda b: repr(struct.unpack("!d", b)[0]),
              25: lambda b: b.decode("utf-8"), 1043: lambda b: b.decode("utf-8"), 0: lambda b: b.decode("utf-8"),
              1082: lambda b: (_EPOCH.date() + timedelta(days=struct.unpack("!i", b)[0])).isoformat(),
              1114: lambda b: (_EPOCH + timedelta(microseconds=struct.unpack("!q", b)[0])).isoformat(sep=" "),
              1184: lambda b: (_EPOCH + timedelta(microseconds=struct.unpack("!q", b)[0])).isoformat(sep=" ") + "+00"}
    if oid not in binary:
        raise StatementError(f"binary parameters of type {oid} are not supported: send them as text", "0A000")
    return oid, binary[oid](raw)


def _row_description(columns: list[tuple[str, int]]) -> RowDescription:
    return RowDescription(fields=[FieldDescription(name=name, type_oid=oid,
                                                   type_size=PG_TYPES[oid].length if oid in PG_TYPES else -1,
                                                   type_modifier=-1, format_code=0) for name, oid in columns])


def _text_row(values: list[str | None]) -> bytes:
    from pygwire.messages import DataRow

    return DataRow(columns=[None if v is None else v.encode() for v in values]).to_wire()


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context from a certificate and its key (PEM files)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context
