"""Hot reload's two decisions: which files count, and which services a change touches; and
that the watcher really sees a save on disk (watchfiles, not a polling loop of ours)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from watchfiles import Change

from tools import services
from tools.local.reload import ReloadMap, SourceFilter, Watcher

SERVICES = ("user_api", "product_api", "gateway_api")
ROOT = services.ROOT


def _map(root: Path = ROOT) -> ReloadMap:
    return ReloadMap(root, SERVICES, ("lib/svckit",))


def test_a_service_file_touches_only_that_service() -> None:
    targets = _map().targets([ROOT / "product_api" / "chalicelib" / "products.py"])

    assert targets == {"product_api": "product_api/chalicelib/products.py"}


def test_the_shared_library_touches_every_service() -> None:
    targets = _map().targets([ROOT / "lib" / "svckit" / "svckit" / "web.py"])

    assert set(targets) == set(SERVICES)


def test_files_outside_the_services_touch_nothing() -> None:
    outside = [ROOT / "README.md", ROOT / "tools" / "bench_local.py", "/etc/hosts"]

    assert _map().targets(outside) == {}


def test_only_sources_outside_generated_folders_count() -> None:
    accept = SourceFilter(ROOT)

    assert accept(Change.modified, str(ROOT / "user_api" / "app.py"))
    assert accept(Change.added, str(ROOT / "user_api" / ".chalice" / "config.json"))
    assert not accept(Change.modified, str(ROOT / "user_api" / "vendor" / "svckit" / "web.py"))
    assert not accept(Change.modified, str(ROOT / "user_api" / "__pycache__" / "app.cpython.pyc"))
    assert not accept(Change.modified, str(ROOT / "user_api" / "notes.txt"))
    assert not accept(
        Change.modified, str(ROOT / "user_api" / ".chalice" / "deployments" / "a.json")
    )


def test_a_checkout_under_a_folder_named_build_still_reloads(tmp_path: Path) -> None:
    root = tmp_path / "build" / "shop"
    accept = SourceFilter(root)

    assert accept(Change.modified, str(root / "product_api" / "app.py"))
    assert not accept(Change.modified, str(root / "product_api" / "build" / "app.py"))
    assert not accept(Change.modified, str(tmp_path / "elsewhere.py"))


def test_the_watcher_reports_a_save(tmp_path: Path) -> None:
    (tmp_path / "product_api").mkdir()
    (tmp_path / "user_api").mkdir()
    source = tmp_path / "product_api" / "app.py"
    source.write_text("x = 1\n")
    seen: list[dict[str, str]] = []
    changed = threading.Event()

    def on_change(targets: dict[str, str]) -> None:
        seen.append(targets)
        changed.set()

    watcher = Watcher(_map(tmp_path), on_change).start()
    try:
        assert watcher.wait_ready()
        os.utime(source)
        assert changed.wait(5.0)
    finally:
        watcher.stop()

    assert seen[0] == {"product_api": "product_api/app.py"}
