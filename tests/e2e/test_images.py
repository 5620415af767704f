"""What a service image ships: every module of the runtime library and the
services imports inside it, and none of the development tooling is there
(the CLI, the embedded stack, code generation, moto)."""

from __future__ import annotations

import subprocess

import pytest

from planzoom_devstack.stack import SERVICES
from tests.e2e.containers import VERSION

#: Runs inside the image: import every module under planzoom/ and services/
#: (an entry point, ``services.<name>.__main__``, would start the service: its
#: code is compiled and the names it imports are loaded instead), then check
#: that no tooling package is installed (click is not on the list: the
#: gateway's uvicorn depends on it).
IMPORT_ALL = """
import ast, importlib, importlib.util, pkgutil
import planzoom, services
names = [m.name for pkg in (planzoom, services)
         for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    if not name.endswith(".__main__"):
        importlib.import_module(name)
        continue
    tree = ast.parse(importlib.util.find_spec(name).loader.get_source(name))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                getattr(module, alias.name)
present = [p for p in ("planzoom_cli", "planzoom_devstack", "grpc_tools", "rich", "moto",
                       "waitress", "pytest", "playwright") if importlib.util.find_spec(p)]
print(len(names), " ".join(present) or "-")
"""


@pytest.mark.parametrize("service", (*SERVICES, "gateway"))
def test_service_image_imports_all_of_its_modules(images, service):
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--read-only", "--entrypoint", "python",
         f"planzoom-{service}:{VERSION}", "-c", IMPORT_ALL],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    count, present = result.stdout.split(maxsplit=1)
    assert int(count) >= 30, f"only {count} modules found in the image"
    assert present.strip() == "-", f"development tooling in the {service} image: {present}"


def test_gateway_image_serves_the_viewer_without_a_cdn(images):
    check = ("from services.gateway.viewer import OPENSEADRAGON, STATIC_DIR; "
             "print(OPENSEADRAGON.stat().st_size, (STATIC_DIR / 'viewer.js').exists())")
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--read-only", "--entrypoint", "python",
         f"planzoom-gateway:{VERSION}", "-c", check], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    size, viewer = result.stdout.split()
    assert int(size) > 100_000 and viewer == "True"
