"""Enable the brainscore-vision integration in every Python process of an environment (``brainscore integration``).

``enable_brainscore_integration()`` works in the process that calls it; brainscore-vision's own command
(``python -m brainscore_vision score --model_identifier ID --benchmark_identifier ID``) is another process, which
finds only models that have a plugin folder inside brainscore-vision's tree (our harmonized networks once
submitted, never the timm baselines: "No registrations found"). ``brainscore integration enable`` writes two files
into a site-packages folder: ``brainscore_itmaps_autoenable.py`` (this file's source: standard library only) and
``brainscore_itmaps_integration.pth``, whose one line imports it at interpreter start. It installs an import hook
that waits for ``brainscore_vision`` to be imported and then calls ``enable_brainscore_integration()``, so nothing
of brainscore-vision or this package is imported by processes that never use them. ``BRAINSCORE_ITMAPS_INTEGRATION=0``
turns it off for one process; ``brainscore integration disable`` removes both files.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys

TARGET = "brainscore_vision"
ENV = "BRAINSCORE_ITMAPS_INTEGRATION"
MODULE_NAME = "brainscore_itmaps_autoenable"
PTH_NAME = "brainscore_itmaps_integration.pth"


def _enable() -> None:
    try:
        from benchmarks_it_maps.submission.integration import enable_brainscore_integration
        enable_brainscore_integration()
    except Exception as error:  # noqa: BLE001 - never break brainscore_vision's import
        logging.getLogger(MODULE_NAME).warning("brainscore-itmaps integration not enabled: %s: %s",
                                               type(error).__name__, error)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds ``brainscore_vision`` through the other finders and runs :func:`_enable` once it has executed.

    ``find_spec`` may be asked without an import following (``python -m`` looks the package up first), so the hook
    stays until the module is actually executed."""

    _looking = False

    def find_spec(self, name, path=None, target=None):
        if name != TARGET or self._looking:
            return None
        self._looking = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._looking = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original, finder = spec.loader.exec_module, self

        def exec_module(module):
            if finder in sys.meta_path:
                sys.meta_path.remove(finder)
            original(module)
            _enable()

        spec.loader.exec_module = exec_module
        return spec


def install() -> bool:
    """Install the hook (unless ``BRAINSCORE_ITMAPS_INTEGRATION=0``); True if installed or already enabled."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "no", "false", "off"):
        return False
    if TARGET in sys.modules:  # imported already (e.g. by another .pth): enable now
        _enable()
        return True
    if not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())
    return True


# ------------------------------------------------------------------ writing the hook (called from this package only)
def hook_dir(user: bool = False, site_dir: str | os.PathLike | None = None):
    """Where ``brainscore integration enable`` writes: ``site_dir``, the user site (``user``) or the environment's
    site-packages (``sysconfig`` purelib, where pip installs)."""
    import site
    import sysconfig
    from pathlib import Path
    if site_dir is not None:
        return Path(site_dir)
    return Path(site.getusersitepackages() if user else sysconfig.get_paths()["purelib"])


def write_hook(directory) -> list:
    """Write the hook module and its ``.pth`` line into ``directory`` (atomically); returns both paths."""
    from pathlib import Path
    from benchmarks_it_maps.home import atomic_file
    directory = Path(directory)
    module, pth = directory / f"{MODULE_NAME}.py", directory / PTH_NAME
    with atomic_file(module) as tmp:
        tmp.write_text(Path(__file__).read_text())
    with atomic_file(pth) as tmp:
        tmp.write_text(f"import {MODULE_NAME}; {MODULE_NAME}.install()\n")
    return [module, pth]


def remove_hook(directory) -> list:
    """Remove the hook files from ``directory``; returns those that existed."""
    from pathlib import Path
    removed = []
    for path in (Path(directory) / PTH_NAME, Path(directory) / f"{MODULE_NAME}.py"):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
