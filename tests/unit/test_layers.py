"""The layers of docs/architecture.md, held against every module's imports:
an import only ever points down."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: What the modules under each folder may not import (by module prefix).
NEVER = {
    "planzoom": ("planzoom.engines", "services", "planzoom_cli", "planzoom_devstack", "bench"),
    "planzoom/engines": ("planzoom.messaging", "planzoom.storage", "planzoom.jobstore",
                         "planzoom.backend", "planzoom.server", "planzoom.boundary",
                         "planzoom.admission", "services", "planzoom_cli", "planzoom_devstack",
                         "bench"),
    "services": ("planzoom_cli", "planzoom_devstack", "bench"),
    "cli": ("services", "planzoom_devstack", "bench"),
    "devstack": ("services", "bench"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return names


def _modules(folder: str) -> list[Path]:
    paths = sorted((ROOT / folder).rglob("*.py"))
    deeper = [f for f in NEVER if f.startswith(folder + "/")]
    return [p for p in paths if "/v1/" not in str(p) and "node_modules" not in str(p)
            and not any(str(p).startswith(str(ROOT / d) + "/") for d in deeper)]


def test_imports_only_point_down():
    broken = []
    for folder, never in NEVER.items():
        for path in _modules(folder):
            for name in _imports(path):
                if any(name == bad or name.startswith(bad + ".") for bad in never):
                    broken.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not broken, "\n".join(broken)


def test_no_service_imports_another():
    services = [p.name for p in (ROOT / "services").iterdir()
                if p.is_dir() and (p / "__init__.py").exists()]
    assert len(services) >= 6
    broken = []
    for service in services:
        for path in sorted((ROOT / "services" / service).rglob("*.py")):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "services" and len(parts) > 1 and parts[1] != service:
                    broken.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not broken, "\n".join(broken)
