"""Who the click server obeys: the operator's page, at this server's address, with the run's token.

Clicks steer what a robot segments and tracks, so every request is checked here before the server
reads it (click.py): its Host (no DNS rebinding), its Origin (no other web page), its token.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class Access:
    """Which requests the click server obeys.

    - Host must name this server: a loopback server answers only to localhost, 127.0.0.1 or [::1] at its
      port; one on the network also to an IP address or this machine's own name. A DNS name that merely
      resolves here (DNS rebinding: a web page whose domain re-resolves to 127.0.0.1) is refused.
    - A POST must come from the page this server serves: its Origin (or, without one, its Referer) is
      this server's own address. Any other web page the operator has open sends its own origin.
    - The token (a new one each run, as notebook servers do) must come with every POST (Authorization:
      Bearer) and with the frame stream (?token=, which EventSource cannot send as a header).
    """

    def __init__(self, host: str, port: int, token: str | None):
        self.port = port
        self.token = token
        self.loopback = is_loopback(host)
        names = {host.lower(), *LOOPBACK_NAMES}
        if not self.loopback:
            names |= {socket.gethostname().lower(), f"{socket.gethostname().lower()}.local"}
        self._names = names

    def host_refusal(self, host_header: str | None) -> str | None:
        if not host_header:
            return "no Host header"
        split = urlsplit(f"//{host_header}")
        try:
            name, port = (split.hostname or "").lower(), split.port
        except ValueError:
            return f"Host {host_header!r} is malformed"
        bracketed = f"[{name}]" if ":" in name else name
        ip_literal = _is_ip(name)
        if port not in (self.port, None) or not (bracketed in self._names or name in self._names
                                                 or (ip_literal and not self.loopback)):
            return f"Host {host_header!r} is not this server (DNS rebinding?)"
        if self.loopback and ip_literal and not is_loopback(name):
            return f"Host {host_header!r} is not this loopback server"
        return None

    def origin_refusal(self, headers, required: bool) -> str | None:
        """The request's Origin (or Referer) is the page's own: http:// and the Host it was sent to."""
        own = f"http://{headers.get('Host', '')}"
        origin = headers.get("Origin")
        if origin is None and headers.get("Referer"):
            referer = urlsplit(headers["Referer"])
            origin = f"{referer.scheme}://{referer.netloc}"
        if origin is None:
            return "no Origin or Referer: not sent by the page" if required else None
        if origin != own:
            return f"origin {origin!r} is not this page's"
        return None

    def token_refusal(self, headers, query: dict) -> str | None:
        if self.token is None:
            return None
        given = headers.get("Authorization", "").removeprefix("Bearer ").strip() or (query.get("token") or [""])[0]
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return "no token or a wrong one" if given else "no token"
        return None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def resolve_token(raw: str | None, host: str) -> str | None:
    """TOKEN: unset or empty -> a new random token; `off` -> none (loopback HOST only); else that token."""
    raw = (raw or "").strip()
    if raw.lower() in ("off", "0", "false", "no"):
        if not is_loopback(host):
            raise ValueError(f"TOKEN={raw} with HOST={host}: anyone on the network could click. Keep the token "
                             "(the default), or keep HOST on 127.0.0.1 and reach it through an SSH tunnel.")
        return None
    return raw or secrets.token_urlsafe(18)
