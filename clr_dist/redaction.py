"""Secrets out of what a run records: its command line, its config and Hydra's copy of both.

A run records where it came from (``metrics.jsonl``, the W&B config, W&B's own metadata), and a
user may well have typed a credential there: ``hydra.job.env_set.HF_TOKEN=...`` for a job's
environment, ``https://user:password@host/...`` in a URL. Every string recorded goes through
``redact_text`` (a whole structure through ``redact_data``, a command line through
``redact_argv``); what is removed becomes ``REDACTED``, so the record shows where a value was.

What counts as a secret: the value of a key named like one (``api_key``, ``HF_TOKEN``,
``password``, ``auth``...), the password of a URL (and an HTTP URL's user, where tokens go:
``https://TOKEN@github.com``), the shapes of common API tokens (``sk-...``, ``ghp_...``,
``hf_...``), and the value of any environment variable named like a secret, wherever it
appears. Nothing here imports more than the standard library, so any command can use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

PLACEHOLDER = "REDACTED"

# A name is secret when one of its words (split at anything but letters and digits, and at
# camelCase humps) is one of these, or ends like the second list (apikey, accesstoken).
SECRET_WORDS = frozenset(
    {"key", "token", "secret", "password", "passwd", "pass", "credential", "credentials", "auth", "authorization"}
)
SECRET_SUFFIXES = ("key", "token", "secret", "password", "passwd")

# Environment values shorter than this are not searched for (a "1" would be redacted everywhere),
# nor paths that exist: SSH_AUTH_SOCK names a socket, KEY_DIR a folder every path below would lose.
MIN_ENV_SECRET = 8

_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^\s/?#'\"]+)@")
# key=value inside a longer text: an override list joined by commas, a URL's query string.
_PAIR = re.compile(r"(?P<key>(?<![\w.-])[A-Za-z_][\w.-]*)=(?P<value>[^\s,;&'\"]+)")
# One override or flag, the whole string: `+a.b.api_token=x y` (the value may hold anything).
_ASSIGNMENT = re.compile(r"(?P<key>[+~-]*[A-Za-z_][\w.-]*)=(?P<value>.*)", re.DOTALL)
_TOKEN_SHAPES = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{30,}|hf_[A-Za-z0-9]{30,}"
    r"|glpat-[A-Za-z0-9_-]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16})\b"
)


def is_secret_name(name: str) -> bool:
    """Whether a key or variable named ``name`` (its last dotted part counts) holds a secret."""
    last = name.rsplit(".", 1)[-1]
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", last).lower())
    return any(w in SECRET_WORDS or w.endswith(SECRET_SUFFIXES) for w in words if w)


def environment_secrets() -> list[str]:
    """Values of this process's environment variables named like secrets, longest first (so a
    value that contains another is replaced whole)."""
    values = {
        v
        for k, v in os.environ.items()
        if is_secret_name(k) and len(v) >= MIN_ENV_SECRET and not (os.path.isabs(v) and os.path.exists(v))
    }
    return sorted(values, key=len, reverse=True)


def _userinfo(match: re.Match) -> str:
    scheme, userinfo = match["scheme"], match["userinfo"]
    if ":" in userinfo:
        return f"{scheme}{userinfo.split(':', 1)[0]}:{PLACEHOLDER}@"
    if scheme.lower().startswith(("http", "ftp")):  # https://TOKEN@host; ssh://git@host keeps its user
        return f"{scheme}{PLACEHOLDER}@"
    return match[0]


def _pair(match: re.Match) -> str:
    return f"{match['key']}={PLACEHOLDER}" if is_secret_name(match["key"]) else match[0]


def redact_text(text: str, env_secrets: list[str] | None = None) -> str:
    """``text`` with every secret in it replaced by ``REDACTED``. ``env_secrets``: from
    ``environment_secrets()`` (read now when not given)."""
    for value in environment_secrets() if env_secrets is None else env_secrets:
        text = text.replace(value, PLACEHOLDER)
    whole = _ASSIGNMENT.fullmatch(text)
    if whole and is_secret_name(whole["key"].lstrip("+~-")):
        return f"{whole['key']}={PLACEHOLDER}"
    text = _URL_USERINFO.sub(_userinfo, text)
    text = _PAIR.sub(_pair, text)
    return _TOKEN_SHAPES.sub(PLACEHOLDER, text)


def redact_data(value: Any, env_secrets: list[str] | None = None, _secret: bool = False) -> Any:
    """A copy of ``value`` (dicts, lists and scalars, as JSON and YAML hold them) with secrets
    redacted: strings by ``redact_text``, and the values of keys named like secrets whole."""
    env_secrets = environment_secrets() if env_secrets is None else env_secrets
    if isinstance(value, dict):
        return {k: redact_data(v, env_secrets, _secret or is_secret_name(str(k))) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_data(v, env_secrets, _secret) for v in value)
    if _secret and isinstance(value, (str, int, float)) and not isinstance(value, bool) and value != "":
        return PLACEHOLDER  # a flag (true/false) or an empty value under such a key says nothing
    if isinstance(value, str):
        return redact_text(value, env_secrets)
    return value


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with secrets redacted, including the value after a flag named like one
    (``--token VALUE``)."""
    env_secrets = environment_secrets()
    redacted: list[str] = []
    for arg in argv:
        previous = redacted[-1] if redacted else ""
        flag = previous.startswith("-") and "=" not in previous and is_secret_name(previous.lstrip("-"))
        redacted.append(PLACEHOLDER if flag else redact_text(arg, env_secrets))
    return redacted


@contextlib.contextmanager
def argv_redacted() -> Iterator[None]:
    """``sys.argv`` redacted inside the block, for a library that records it (``wandb.init``
    stores ``sys.argv[1:]`` as the run's args); restored on leaving."""
    saved = sys.argv
    sys.argv = redact_argv(saved)
    try:
        yield
    finally:
        sys.argv = saved
