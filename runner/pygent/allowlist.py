"""The grammar of an egress allowlist entry, shared by the policy and the settings.

Why its own module: settings (PYGENT_ALLOW_HOSTS) and the sandbox policy both
validate entries, and settings sit below the sandbox layer; stdlib only.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")


def parse_allow_entry(entry: str) -> str:
    """One allowlist entry, normalised: 'host', '*.suffix', either with ':port', or 'addr/prefix'.

    Why raw IPs are refused: the list is about names (the proxy resolves them and
    checks where they point); an address range is accepted only as the explicit
    opt-in for names that resolve into private space.
    Raises ValueError with what to write instead.
    """
    text = entry.strip().lower().rstrip(".")
    if "/" in text:
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"allowed range {entry!r} is not ADDR/PREFIX, e.g. 10.0.0.0/8") from None
    host, port = text, ""
    if text.startswith("[") and "]" in text:  # [v6] or [v6]:port
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
        port = port or "none"  # 'host:' is a typo, not 'any port'
    if port:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"allowed host {entry.strip()!r}: port {port!r} is not 1-65535")
        port = f":{int(port)}"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise ValueError(
            f"allowed host {entry.strip()!r} is an IP address: name the host instead "
            "(raw addresses are always refused; ADDR/PREFIX lets allowed names resolve into a private range)"
        )
    if host in ("*", "") or not _HOST.fullmatch(host):
        raise ValueError(f"allowed host {entry.strip()!r} is not a host name, '*.suffix' or HOST:PORT (use network=True for everything)")
    return host + port
