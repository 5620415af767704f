"""Engine calls as a test makes them, without a job: a PDF page's raster at
the geometry ingest would give it. Module-level, so a sandboxed worker can
run them."""

from __future__ import annotations

from planzoom.engines import Raster, pdf
from planzoom.v1 import events_pb2, jobs_pb2


def pdf_geometry(path: str, page: int, dpi: float, max_pixels: int
                 ) -> events_pb2.PageGeometry:
    """Page ``page`` of the PDF at ``dpi`` under a cap of ``max_pixels``."""
    return pdf.geometry(path, page, jobs_pb2.JobOptions(dpi=dpi, max_page_pixels=max_pixels))


def render_pdf_page(path: str, page: int, dpi: float, max_pixels: int, out_path: str,
                    band_bytes: int) -> Raster:
    """:func:`planzoom.engines.pdf.rasterize` of the page at
    :func:`pdf_geometry`."""
    return pdf.rasterize(path, pdf_geometry(path, page, dpi, max_pixels), out_path, band_bytes)


# -- a compromised parser --------------------------------------------------------

def _attempt(what) -> str:
    """"refused" if ``what()`` raised an OSError (the kernel said no), else
    what it got."""
    try:
        return f"got {what()!r}"[:200]
    except OSError as e:
        return f"refused ({e.strerror or e})"


def escape(parent_pid: int, secret_path: str, port: int, big_path: str,
           big_bytes: int) -> dict[str, str]:
    """What code an input has taken over inside a sandboxed worker tries
    next, each attempt's outcome ("refused (…)" or "got …"): read the
    service's environment and memory, a secret file, planzoom's checkout
    outside its package; reach the network; ptrace, signal or read the
    memory of its parent; leave its process group; write a file past its
    size limit; start a shell. And the credentials its own environment
    holds (none, "refused")."""
    import ctypes
    import os
    import socket
    import subprocess

    libc = ctypes.CDLL(None, use_errno=True)

    def checked(result: int, name: str) -> int:
        if result < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{name}: {os.strerror(errno)}")
        return result

    def read_vm() -> int:
        class IoVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

        buf = ctypes.create_string_buffer(64)
        local, remote = IoVec(ctypes.addressof(buf), 64), IoVec(0x400000, 64)
        return checked(libc.process_vm_readv(parent_pid, ctypes.byref(local), 1,
                                             ctypes.byref(remote), 1, 0), "process_vm_readv")

    def write_big() -> int:
        with open(big_path, "wb") as f:
            for _ in range(big_bytes // (1 << 20) + 2):
                f.write(bytes(1 << 20))
        return os.path.getsize(big_path)

    here = os.path.dirname(os.path.abspath(__file__))
    credentials = sorted(k for k in os.environ if any(
        word in k for word in ("AWS", "NATS", "SECRET", "TOKEN", "PASSWORD", "KEY")))
    return {
        "credentials in its own environment": "refused (none)" if not credentials
        else f"got {credentials}",
        "environ of the service": _attempt(
            lambda: open(f"/proc/{parent_pid}/environ", "rb").read()),
        "memory of the service": _attempt(
            lambda: open(f"/proc/{parent_pid}/mem", "rb").read(1)),
        "a secret file": _attempt(lambda: open(secret_path).read()),
        "the checkout": _attempt(
            lambda: open(os.path.join(os.path.dirname(here), "pyproject.toml")).read()),
        "the network": _attempt(lambda: socket.create_connection(("127.0.0.1", port), 2)),
        "ptrace the service": _attempt(
            lambda: checked(libc.ptrace(16, parent_pid, 0, 0), "ptrace")),  # PTRACE_ATTACH
        "read the service's memory": _attempt(read_vm),
        "signal the service": _attempt(lambda: os.kill(parent_pid, 0)),
        "leave its process group": _attempt(os.setsid),
        "a new namespace": _attempt(
            lambda: checked(libc.unshare(0x10000000), "unshare")),  # CLONE_NEWUSER
        "fill the disk": _attempt(write_big),
        "a shell": _attempt(lambda: subprocess.run(["/bin/sh", "-c", "id"],
                                                   capture_output=True).stdout),
    }


def outlive(pid_path: str) -> None:
    """Fork a child that writes its pid to ``pid_path`` and sleeps a minute,
    then sleep past any task's time limit."""
    import os
    import time

    if os.fork() == 0:
        with open(pid_path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
        os._exit(0)
    time.sleep(60)
