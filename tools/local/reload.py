"""Hot reload: a saved file restarts the services it touches, on the same ports.

``watchfiles`` (the Rust ``notify`` watcher uvicorn uses) reports changes as the kernel sees them
and groups a burst (an editor's save, a ``git checkout``) into one batch, so a reload follows a
save within a few tens of milliseconds of quiet. Which services a change touches:

* a file under ``<service>/`` restarts that service (its ``.chalice/config.json`` included);
* a file under ``lib/svckit/`` restarts every service, because each one imports it.

Only Python and JSON sources count: ``vendor/`` copies, caches, ``.chalice/deployments`` and the
database files under ``.local/`` never trigger a restart (``.local/`` is not even watched).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from watchfiles import Change, DefaultFilter, watch

SOURCE_SUFFIXES = (".py", ".json")
_IGNORED_PARTS = frozenset({"vendor", "deployments", "deployed", "build", "node_modules"})


class SourceFilter(DefaultFilter):
    """``DefaultFilter`` (no ``__pycache__``, ``.git``, editor swap files) narrowed to sources
    below ``root``. Generated folders are judged by the path inside the project only, so a
    checkout that itself lives under a folder named ``build`` still reloads."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root.resolve()

    def __call__(self, change: Change, path: str) -> bool:
        candidate = Path(path)
        try:
            inside = candidate.resolve().relative_to(self.root).parts
        except ValueError:
            return False
        return (
            candidate.suffix in SOURCE_SUFFIXES
            and not _IGNORED_PARTS.intersection(inside)
            and super().__call__(change, path)
        )


class ReloadMap:
    """Which programs a changed path belongs to."""

    def __init__(self, root: Path, services: Sequence[str], shared: Sequence[str]) -> None:
        self.root = root
        self.services = tuple(services)
        self.shared = tuple(shared)

    def roots(self) -> list[Path]:
        """The folders worth watching (existing ones only)."""
        folders = [self.root / name for name in (*self.services, *self.shared)]
        return [folder for folder in folders if folder.is_dir()]

    def targets(self, paths: Iterable[str | Path]) -> dict[str, str]:
        """``{service: first changed path that touches it}`` for a batch of changed paths."""
        hit: dict[str, str] = {}
        for raw in paths:
            try:
                relative = Path(raw).resolve().relative_to(self.root)
            except ValueError:
                continue
            if any(relative.is_relative_to(shared) for shared in self.shared):
                touched = self.services
            elif relative.parts and relative.parts[0] in self.services:
                touched = (relative.parts[0],)
            else:
                continue
            for service in touched:
                hit.setdefault(service, str(relative))
        return hit


class Watcher:
    """A daemon thread that watches ``ReloadMap.roots()`` and hands each batch's targets to
    ``on_change(targets)``; ``stop()`` ends it within a moment."""

    def __init__(self, reload_map: ReloadMap, on_change: Callable[[dict[str, str]], None]) -> None:
        self.map = reload_map
        self.on_change = on_change
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reload-watcher", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        roots = self.map.roots()
        if not roots:
            return
        # yield_on_timeout lets the first (empty) batch mark the watcher as armed, so callers
        # (and tests) know a save from now on will be seen.
        for changes in watch(
            *roots,
            watch_filter=SourceFilter(self.map.root),
            stop_event=self._stop,
            rust_timeout=500,
            yield_on_timeout=True,
            debounce=400,
            step=50,
            raise_interrupt=False,
        ):
            self._ready.set()
            if not changes:
                continue
            targets = self.map.targets(path for _, path in changes)
            if targets:
                self.on_change(targets)

    def wait_ready(self, timeout: float = 5.0) -> bool:
        return self._ready.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
