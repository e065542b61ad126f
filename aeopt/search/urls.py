"""Storage URLs as they may be shown: the password masked in the URL (`redact`) and scrubbed from
whatever a driver says about it (`scrub`).

Parsed by hand, not by a URL library: users paste passwords holding an unencoded '@', ':' or '/',
and drivers read such URLs differently (SQLAlchemy ends the password at the first '@' and takes the
rest for the host name, which its error then names: "failed to resolve host 'REST@db'").
"""

from __future__ import annotations

import re
from urllib.parse import unquote

# A host list as libpq and SQLAlchemy take it: names, IPv4, [IPv6], ports, percent-encoded unix socket
# folders, and ',' between the hosts of a multi-host URL (h1:5432,h2:5432).
_HOST = re.compile(r"^[A-Za-z0-9._\-\[\]:%,]*$")
_QUERY_SECRET = re.compile(r"((?:password|passwd|pwd|token|secret)=)([^&#]*)", re.IGNORECASE)


def _credentials(rest: str) -> tuple[int, bool] | None:
    """Where the credentials of `rest` (the URL after '://') end: the index of the last '@' followed
    by a host (True), else of the last '@' at all (False: nothing after it reads as a host, so all
    before it may be secret); None when there is no '@'."""
    ats = [i for i, c in enumerate(rest) if c == "@"]
    for at in reversed(ats):
        host = re.split(r"[/?#]", rest[at + 1:], maxsplit=1)[0]
        if _HOST.match(host):
            return at, True
    return (ats[-1], False) if ats else None


def redact(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs, errors and exports.

    A password holding an unencoded '@', ':' or '/' is masked whole: the credentials run from '://' to
    the LAST '@' that is followed by a host; when no '@' is, everything up to the last '@' is masked,
    user name included. A password in the query string (`?password=...`) is masked too."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    rest = _QUERY_SECRET.sub(r"\1***", rest)
    if rest.startswith("/"):  # no authority (sqlite:///path, journal:////abs): an '@' there is a path
        return f"{scheme}://{rest}"
    found = _credentials(rest)
    if found is None:
        return f"{scheme}://{rest}"
    at, host_follows = found
    if not host_follows:
        return f"{scheme}://***@{rest[at + 1:]}"
    userinfo = rest[:at]
    if ":" not in userinfo:
        return f"{scheme}://{rest}"  # a user name alone is not a secret
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{rest[at + 1:]}"


def secrets_of(url: str) -> set[str]:
    """Every form in which a driver's message may repeat the URL's password: whole, URL-decoded, and
    each '@'-separated piece of either (the part a driver took for the host name)."""
    if "://" not in url:
        return set()
    rest = url.split("://", 1)[1]
    whole = [m.group(2) for m in _QUERY_SECRET.finditer(rest)]
    found = None if rest.startswith("/") else _credentials(rest)
    if found is not None:
        userinfo = rest[:found[0]]
        if ":" in userinfo:
            whole.append(userinfo.split(":", 1)[1])
        elif not found[1]:
            whole.append(userinfo)  # no host after the last '@': the user name may hold the password
    forms = {form for w in whole for form in (w, unquote(w))}
    return {piece for form in forms for piece in (form, *form.split("@")) if piece}


def scrub(text: str, url: str) -> str:
    """`text` (a driver's error about `url`) with the URL shown redacted and any form of its password
    replaced by ***. Longest forms first, in one pass: a piece never masks part of a longer form. A
    form of under 4 characters is masked only where it stands alone (not inside a longer word):
    "pa" of "pa@ss" would otherwise turn "password authentication failed" into "***ssword ..."."""
    text = text.replace(url, redact(url))
    forms = sorted(secrets_of(url), key=len, reverse=True)
    if not forms:
        return text
    patterns = [re.escape(f) if len(f) >= 4 else rf"(?<![A-Za-z0-9]){re.escape(f)}(?![A-Za-z0-9])"
                for f in forms]
    return re.sub("|".join(patterns), "***", text)


def unencoded_at(url: str) -> bool:
    """Whether the password holds a raw '@', which drivers read as the end of the password."""
    if "://" not in url:
        return False
    rest = url.split("://", 1)[1]
    found = None if rest.startswith("/") else _credentials(rest)
    return found is not None and "@" in rest[:found[0]]


def comma_hosts(url: str) -> bool:
    """Whether the URL lists several hosts with ',' (libpq's h1:5432,h2:5432), which SQLAlchemy reads
    as one host with the port "5432,h2:5432"; it takes several hosts as `?host=h1:5432&host=h2:5432`."""
    if "://" not in url:
        return False
    rest = url.split("://", 1)[1]
    if rest.startswith("/"):
        return False
    found = _credentials(rest)
    hosts = rest[found[0] + 1:] if found is not None and found[1] else rest
    return "," in re.split(r"[/?#]", hosts, maxsplit=1)[0]
