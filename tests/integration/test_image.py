"""The image starts: its contents built the way `deploy/Dockerfile` builds them, no Docker engine.

Exactly the files the Dockerfile's COPY lines name go into an empty folder; a wheel is built
from it and installed into a fresh virtual environment (dependencies from the package index,
nothing from this checkout), and from there `crisiswatch --help`, every command's `--help`
and `crisiswatch db migrate` against the real PostgreSQL must work. The wheel of the whole
checkout must hold the same top-level packages: `benchmarks/` and `tests/` never ship.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import venv
import zipfile
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from consumers.cli.main import cli
from tests.conftest import REPO

pytestmark = pytest.mark.integration

DOCKERFILE = REPO / "deploy" / "Dockerfile"
#: What the wheel may hold at its top level: the three packages the image runs.
TOP_LEVEL = {"streams", "consumers", "dashboards"}
#: Installed in the image's venv but not a command of the wheel: the developer tool.
DEVELOPER_COMMANDS = {"bench"}


def copy_sources(dockerfile: Path) -> list[str]:
    """The sources of the final stage's COPY lines from the build context (not `--from`)."""
    sources: list[str] = []
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and words[0].upper() == "FROM":
            sources = []  # only the final stage's files make the image
            continue
        if not words or words[0].upper() != "COPY":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        sources.extend(args[:-1])
    return sources


def build_wheel(source: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
         str(source)],
        check=True,
        timeout=600,
    )  # fmt: skip
    (wheel,) = out.glob("crisiswatch-*.whl")
    return wheel


def top_level(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {
            name.split("/", 1)[0]
            for name in archive.namelist()
            if "/" in name and not name.split("/", 1)[0].endswith((".dist-info", ".data"))
        }


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's `crisiswatch` executable, in a venv holding only the image's wheel."""
    root = tmp_path_factory.mktemp("image")
    context = root / "context"
    context.mkdir()
    sources = copy_sources(DOCKERFILE)
    assert {"streams", "consumers", "dashboards", "pyproject.toml"} <= set(sources), sources
    for source in sources:
        origin = REPO / source
        if origin.is_dir():
            # .dockerignore keeps these out of the build context.
            shutil.copytree(
                origin,
                context / source,
                ignore=shutil.ignore_patterns("__pycache__", "node_modules"),
            )
        else:
            shutil.copy2(origin, context / source)
    wheel = build_wheel(context, root / "dist")
    environment = root / "venv"
    venv.create(environment, with_pip=True, symlinks=True)
    python = environment / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(wheel)],
        check=True,
        timeout=900,
    )  # fmt: skip
    return environment / "bin" / "crisiswatch"


def test_the_image_wheel_holds_exactly_the_runtime_packages(tmp_path: Path, image: Path) -> None:
    built = next((image.parents[2] / "dist").glob("*.whl"))
    assert top_level(built) == TOP_LEVEL


def test_the_checkout_wheel_holds_the_same_packages(tmp_path: Path) -> None:
    source = tmp_path / "checkout"
    shutil.copytree(
        REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info")
    )
    assert top_level(build_wheel(source, tmp_path / "dist")) == TOP_LEVEL


def commands() -> list[list[str]]:
    """Every command path of the CLI: `[]`, `[demo]`, `[db]`, `[db, migrate]`, ..."""
    paths: list[list[str]] = [[]]
    for name, command in sorted(cli.commands.items()):
        if name in DEVELOPER_COMMANDS:
            continue
        paths.append([name])
        for sub in sorted(getattr(command, "commands", {})):
            paths.append([name, sub])
    return paths


@pytest.mark.parametrize("path", commands(), ids=lambda p: " ".join(p) or "crisiswatch")
def test_every_command_answers_help_from_the_image(image: Path, path: list[str]) -> None:
    result = subprocess.run(
        [str(image), *path, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert "Traceback" not in result.stderr


def test_the_image_has_no_developer_commands(image: Path) -> None:
    result = subprocess.run(
        [str(image), "--help"], capture_output=True, text=True, timeout=120, check=True
    )
    listed = set(re.findall(r"^  (\w+)  ", result.stdout, flags=re.MULTILINE))
    assert listed == set(cli.commands) - DEVELOPER_COMMANDS


def test_the_image_migrates_a_real_database(image: Path, new_database: Callable[[], str]) -> None:
    url = new_database()
    result = subprocess.run(
        [str(image), "db", "migrate", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with psycopg.connect(url) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
    assert {"events", "clocks", "consumer_positions", "schema_migrations"} <= tables
