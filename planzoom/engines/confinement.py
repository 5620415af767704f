"""A sandboxed worker's confinement (Linux), applied by the worker to itself
before it touches untrusted input (:func:`restrict`): Landlock for files,
TCP and signals, seccomp for system calls, no capabilities, rlimits. What
it allows and why: planzoom/engines/sandbox.py and docs/threat-model.md.
"""

from __future__ import annotations

import os
import sys

#: Files a worker may hold open at once.
WORKER_FILES = 1024
#: Processes and threads a worker may start (beyond what its uid runs).
WORKER_PROCESSES = 256

#: Landlock's filesystem rights (linux/landlock.h), by the ABI that has them.
_FS_RIGHTS = {1: 0x1FFF, 2: 0x3FFF, 3: 0x7FFF, 5: 0xFFFF}
_EXECUTE, _READ_FILE, _READ_DIR = 0x1, 0x4, 0x8
_READ = _READ_FILE | _READ_DIR
#: The rights a rule on a file (not a directory) may hold.
_FILE_ONLY = 0x1 | 0x2 | 0x4 | 0x4000 | 0x8000
#: Paths every worker reads: the system's libraries and data, and what the
#: libraries ask the kernel of (processors, memory). Nothing under /etc but
#: what the libraries read, no home directory, no other process in /proc.
_SYSTEM_READ = ("/usr", "/lib", "/lib64", "/bin", "/etc/fonts", "/etc/ld.so.cache",
                "/etc/localtime", "/etc/alternatives", "/var/cache/fontconfig",
                "/dev/zero", "/dev/urandom", "/proc/meminfo", "/proc/cpuinfo",
                "/proc/stat", "/sys/devices/system/cpu", "/sys/fs/cgroup")
_SYSCALLS = {"landlock_create_ruleset": 444, "landlock_add_rule": 445,
             "landlock_restrict_self": 446}
#: System calls a parser never needs and an exploit would: reading or
#: changing other processes, leaving its namespaces or process group,
#: loading kernel code, keyrings.
DENIED_SYSCALLS = ("ptrace", "process_vm_readv", "process_vm_writev", "unshare", "setns",
                   "mount", "umount2", "pivot_root", "chroot", "keyctl", "add_key",
                   "request_key", "bpf", "perf_event_open", "userfaultfd", "kexec_load",
                   "init_module", "finit_module", "delete_module", "setsid", "setpgid",
                   "io_uring_setup", "personality")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 without Landlock."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    version = libc.syscall(_SYSCALLS["landlock_create_ruleset"], None, ctypes.c_size_t(0),
                           ctypes.c_uint32(1))  # LANDLOCK_CREATE_RULESET_VERSION
    return max(0, version)


def _landlock(read: list[str], write: list[str], listed: list[str] = (),
              run: list[str] = ()) -> int:
    """Confine this process's filesystem access to reading ``read``, reading
    and writing ``write`` (each a path and what is beneath it), listing the
    directories ``listed`` and executing the files ``run``, with
    no TCP (ABI 4) and no signals or abstract sockets beyond itself (ABI 6).
    Returns the ABI used, 0 where the kernel has no Landlock."""
    import ctypes

    abi = landlock_abi()
    if abi < 1:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    fs = _FS_RIGHTS[max(v for v in _FS_RIGHTS if v <= abi)]

    class Ruleset(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64),
                    ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    attr = Ruleset(fs, 0x3 if abi >= 4 else 0, 0x3 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = libc.syscall(_SYSCALLS["landlock_create_ruleset"], ctypes.byref(attr),
                           ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        for rights, paths in ((_READ, read), (fs & ~_EXECUTE, write), (_READ_DIR, listed),
                              (_EXECUTE | _READ_FILE, run)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue  # not on this system
                try:
                    allowed = rights if os.path.isdir(path) else rights & _FILE_ONLY
                    rule = PathBeneath(allowed & fs, fd)
                    if libc.syscall(_SYSCALLS["landlock_add_rule"], ruleset, 1,
                                    ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
                        raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
                finally:
                    os.close(fd)
        if libc.prctl(38, 1, 0, 0, 0) < 0:  # PR_SET_NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
        if libc.syscall(_SYSCALLS["landlock_restrict_self"], ruleset, ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def _drop_capabilities() -> None:
    """Empty this process's capability sets (a worker of a service run as
    root keeps root's uid, not its powers)."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):  # the bounding set: nothing regained through exec
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP; EINVAL past the last one
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) < 0:
        raise OSError(ctypes.get_errno(), "capset")


def _executables() -> list[str]:
    """The only programs a worker may start: Python (itself), Tesseract
    (OCR) and the ELF interpreter that loads them."""
    import glob
    import shutil

    found = [sys.executable, shutil.which("tesseract") or ""]
    found += glob.glob("/lib*/ld-linux*.so*") + glob.glob("/usr/lib/*/ld-linux*.so*")
    return sorted({os.path.realpath(p) for p in found if p})


def _own_processes() -> int:
    """Processes (threads included, as RLIMIT_NPROC counts them) of this uid."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                pass
    return count


def restrict(memory_bytes: int, confine: dict) -> None:
    """Limit this process before it touches untrusted input: what it may read
    and write (Landlock), what it may ask of the kernel (seccomp), its
    capabilities (none), and its resources (rlimits). ``confine``:
    ``scratch`` (the one directory it may write), ``readable`` (more
    directories it may read), ``file_bytes`` (the largest file it may
    write)."""
    import resource

    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (WORKER_FILES, WORKER_FILES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (confine["file_bytes"], confine["file_bytes"]))
    if os.getuid() != 0:  # (the kernel does not count root's processes)
        most = _own_processes() + WORKER_PROCESSES
        resource.setrlimit(resource.RLIMIT_NPROC, (most, most))
    import planzoom

    # Python's own files, planzoom's package (the directories on the import
    # path only listed: a checkout's other files, an issuer's key among
    # them, stay out of reach) and the libraries' data.
    read = [*_SYSTEM_READ, sys.base_prefix, sys.prefix, *planzoom.__path__,
            *confine["readable"], f"/proc/{os.getpid()}"]
    listed = [p for p in sys.path if p and os.path.isdir(p)]
    import socket

    import pyseccomp as seccomp  # (finds and loads libseccomp: before Landlock)

    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    rules.add_rule(seccomp.ERRNO(1), "socket", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
    for name in DENIED_SYSCALLS:
        rules.add_rule(seccomp.ERRNO(1), name)
    if os.geteuid() == 0:
        _drop_capabilities()
    if not _landlock(read, [confine["scratch"], os.devnull], listed, _executables()):
        print("sandbox: this kernel has no Landlock (Linux 5.13+, or a container's seccomp "
              "profile refused it): a worker's file access is not confined", file=sys.stderr,
              flush=True)
    rules.load()
