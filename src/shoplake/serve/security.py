"""Bearer tokens of the SQL API: named, with a role, stored as SHA-256 hashes (never the secret).

The operator creates tokens with `shoplake serve-token add NAME --role analyst|engineer`, which prints
the secret once. The tokens file (`Settings.serve_tokens_file`, default `<lake>/_serve/tokens.toml`) holds
one `[tokens.<name>]` table per token with `role`, `sha256` and `scram`: the SCRAM-SHA-256 verifier the
PostgreSQL endpoint checks a password against (salt, iteration count, stored and server keys, in PostgreSQL's
own `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` form). Neither lets anyone log in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from scramp import ScramMechanism

from shoplake.catalog.spec import LAYERS
from shoplake.config import Settings
from shoplake.errors import ConfigError

# The layers each role may read. Engineers read every layer; analysts the published ones.
ROLE_LAYERS: dict[str, frozenset[str]] = {
    "analyst": frozenset({"gold", "ops"}),
    "engineer": frozenset(LAYERS),
}
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SCRAM_ITERATIONS = 4096  # PostgreSQL's default
_SCRAM = re.compile(r"^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$")


@dataclass(frozen=True)
class Token:
    """One configured token (its secret is known only by its hash)."""

    name: str
    role: str
    sha256: str
    scram: str | None = None  # None: made before the PostgreSQL endpoint; recreate it to use SCRAM

    @property
    def layers(self) -> frozenset[str]:
        return ROLE_LAYERS[self.role]

    def scram_auth_info(self) -> tuple[bytes, bytes, bytes, int] | None:
        """(salt, stored key, server key, iterations) for `scramp`, or None when the token has no verifier."""
        match = _SCRAM.match(self.scram or "")
        if match is None:
            return None
        iterations, salt, stored, server = match.groups()
        decode = base64.b64decode
        return decode(salt), decode(stored), decode(server), int(iterations)


def scram_verifier(secret: str) -> str:
    """The SCRAM-SHA-256 verifier of a secret, in PostgreSQL's form."""
    salt, stored, server, iterations = ScramMechanism("SCRAM-SHA-256").make_auth_info(
        secret, iteration_count=SCRAM_ITERATIONS)
    encode = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{encode(salt).decode()}${encode(stored).decode()}:{encode(server).decode()}"


def tokens_file(settings: Settings) -> Path:
    """Where the tokens live for these settings."""
    return settings.serve_tokens_file or Path(settings.lake) / "_serve" / "tokens.toml"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def load_tokens(path: Path) -> dict[str, Token]:
    """The tokens configured in `path` (none when the file does not exist)."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    found: dict[str, Token] = {}
    for name, entry in data.get("tokens", {}).items():
        role, digest, scram = entry.get("role"), str(entry.get("sha256", "")), entry.get("scram")
        if role not in ROLE_LAYERS or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError(f"{path}: token {name!r} needs role analyst or engineer and a 64-hex sha256")
        if scram is not None and not _SCRAM.match(str(scram)):
            raise ConfigError(f"{path}: token {name!r}: scram must be SCRAM-SHA-256$<iterations>:<salt>$<key>:<key>")
        found[name] = Token(name, role, digest, scram)
    return found


def add_token(path: Path, name: str, role: str) -> str:
    """Create (or replace) token `name` with `role`; return its secret, which is not stored."""
    if not _NAME.match(name):
        raise ConfigError(f"token name {name!r}: use 1-64 letters, digits, '_' or '-'")
    if role not in ROLE_LAYERS:
        raise ConfigError(f"unknown role {role!r}: expected analyst or engineer")
    tokens = load_tokens(path)
    secret = f"slk_{secrets.token_urlsafe(32)}"
    tokens[name] = Token(name, role, _digest(secret), scram_verifier(secret))
    _save(path, tokens)
    return secret


def remove_token(path: Path, name: str) -> None:
    """Delete token `name`."""
    tokens = load_tokens(path)
    if name not in tokens:
        raise ConfigError(f"no token named {name!r} in {path}")
    del tokens[name]
    _save(path, tokens)


def _save(path: Path, tokens: dict[str, Token]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# shoplake serve tokens: name, role and SHA-256 of the secret (the secret is not stored)", ""]
    for token in tokens.values():
        lines += [f"[tokens.{token.name}]", f'role = "{token.role}"', f'sha256 = "{token.sha256}"']
        lines += [f'scram = "{token.scram}"', ""] if token.scram else [""]
    temporary = path.with_suffix(".tmp")
    temporary.write_text("\n".join(lines))
    os.chmod(temporary, 0o600)
    temporary.replace(path)


def authenticate(tokens: dict[str, Token], secret: str) -> Token | None:
    """The token whose secret this is, or None. Compares every token in constant time."""
    digest = _digest(secret)
    match = None
    for token in tokens.values():
        if hmac.compare_digest(token.sha256, digest):
            match = token
    return match
