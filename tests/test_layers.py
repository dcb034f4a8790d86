"""What each module may import: the layering of docs/architecture.md as a contract, checked over
the import graph of the source (no module is imported to check it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("backend", "gateway", "bench")

# The pure core: wire formats, framing, records, budgets, the gateway's values, phone formats
# and map labels. No I/O: no event loop, sockets, processes, HTTP or files.
PURE = (
    "backend.protocol",
    "backend.framing",
    "backend.store",
    "backend.history.points",
    "backend.history.columns",
    "backend.ratelimit",
    "gateway.errors",
    "gateway.numbers",
    "gateway.rules",
    "gateway.labels",
    "gateway.phones",
    "gateway.history",
)
IO_MODULES = ("asyncio", "socket", "subprocess", "aiohttp", "uvloop", "ssl", "selectors")
# What the gateway may use of the herd's package: it talks to the herd over TCP only, so it
# needs the wire format, the config and the rate limiter, never a server's insides; and the
# files helpers (private files, a cache built once per machine) that its place labels share.
GATEWAY_MAY_USE = ("backend.protocol", "backend.config", "backend.ratelimit", "backend.files")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, as absolute names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
                # "from . import api": each name may be a module of that package.
                found.update(f"{target}.{alias.name}" for alias in node.names)
            else:
                target = node.module or ""
            found.add(target)
    return found


GRAPH = {
    module_name(path): imports(path)
    for package in PACKAGES
    for path in sorted((ROOT / package).rglob("*.py"))
}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_graph_was_read() -> None:
    assert "backend.server" in GRAPH and "gateway.phones.owntracks" in GRAPH
    assert "backend.protocol" in GRAPH["backend.server"]


@pytest.mark.parametrize("module", [m for m in GRAPH if within(m, PURE)])
def test_the_pure_core_does_no_io(module: str) -> None:
    io = sorted(i for i in GRAPH[module] if within(i, IO_MODULES))
    assert not io, f"{module} imports {io}"
    # ... and it depends on nothing above it.
    above = sorted(i for i in GRAPH[module] if within(i, PACKAGES) and not within(i, PURE))
    assert not above, f"{module} imports {above}"


@pytest.mark.parametrize("module", [m for m in GRAPH if within(m, ("backend",))])
def test_the_herd_does_not_depend_on_the_gateway(module: str) -> None:
    # The one exception is the command line, which starts whatever the operator asks for.
    # It also imports gateway.settings, so that every command applies the rules for [gateway].
    allowed = ("gateway.app", "gateway.settings", "bench.cli") if module == "backend.cli" else ()
    wrong = sorted(
        i for i in GRAPH[module] if within(i, ("gateway", "bench")) and not within(i, allowed)
    )
    assert not wrong, f"{module} imports {wrong}"


def test_the_line_transport_knows_nothing_of_what_the_lines_mean() -> None:
    # One transport under client sessions and peer links: framing is all it may use.
    wrong = sorted(
        i
        for i in GRAPH["backend.transport"]
        if within(i, PACKAGES) and not within(i, ("backend.framing",))
    )
    assert not wrong, f"backend.transport imports {wrong}"


@pytest.mark.parametrize("module", [m for m in GRAPH if within(m, ("gateway",))])
def test_the_gateway_uses_only_the_herds_wire_config_and_budgets(module: str) -> None:
    wrong = sorted(
        i for i in GRAPH[module] if within(i, ("backend",)) and not within(i, GATEWAY_MAY_USE)
    )
    assert not wrong, f"{module} imports {wrong}"
