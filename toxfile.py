"""tox plugin of this project (tox loads ``toxfile.py`` next to tox.ini by itself).

Plain ``tox`` must test every interpreter installed on the machine, without
the user exporting anything, and say at the end which envs it could not run.

Discovery: pyenv's shims only run the *active* versions (``python3.9:
command not found`` otherwise), and virtualenv resolves a shim the same way,
so an installed but inactive 3.9 is invisible on PATH.  This plugin hands
virtualenv the real binaries under ``$PYENV_ROOT/versions`` (default
``~/.pyenv``) first, as if the user had passed ``tox --discover ...``.  The
system's interpreters (``/usr/bin/python3.X``, ``pypy3``) are found on PATH as
before.  Only versions ctipc supports (CPython and PyPy >= 3.9) are offered.

Missing interpreters: locally an env whose interpreter is not installed is
skipped (``skip_missing_interpreters = true`` in tox.ini), and the summary
printed after tox's own report names it and says why.  Under ``CI=true`` no
env may be skipped: a missing interpreter fails its env, and so the run.
``TOX_SKIP_ENV`` (tox's own setting) still leaves envs out deliberately.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
from pathlib import Path
from typing import Any

from tox.config.loader.memory import MemoryLoader
from tox.plugin import impl
from tox.tox_env.errors import Fail, Skip
from tox.tox_env.python.api import Python
from tox.tox_env.runner import RunToxEnv

#: a pyenv version directory of an interpreter ctipc supports: "3.9.18", "3.13.0t",
#: "pypy3.10-7.3.17"
_VERSION_DIR = re.compile(r"^(?:pypy)?3\.(\d+)")
_MIN_MINOR = 9

#: env name -> (how it ran, interpreter or reason), filled as envs are torn down
_RESULTS: dict[str, tuple[str, str]] = {}
_COMMANDS_RAN: set[str] = set()


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pyenv_interpreters(root: Path) -> list[str]:
    """The real binaries of the supported pyenv versions under ``root``, oldest first."""
    found: list[tuple[int, str]] = []
    try:
        names = sorted(os.listdir(root / "versions"))
    except OSError:
        return []
    for name in names:
        match = _VERSION_DIR.match(name)
        if match is None or int(match.group(1)) < _MIN_MINOR:
            continue
        bin_dir = root / "versions" / name / "bin"
        for exe in ("pypy3", f"python3.{match.group(1)}", "python3"):
            if os.access(bin_dir / exe, os.X_OK):
                found.append((int(match.group(1)), str(bin_dir / exe)))
                break
    return [exe for _, exe in sorted(found, key=lambda item: item[0])]


@impl
def tox_add_core_config(core_conf: Any, state: Any) -> None:
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    options = state.conf.options
    given = list(getattr(options, "discover", None) or [])
    # the user's own --discover paths keep their precedence
    options.discover = given + [exe for exe in pyenv_interpreters(root) if exe not in given]


@impl
def tox_add_env_config(env_conf: Any, state: Any) -> None:
    if on_ci():
        # A loader in front of tox.ini's: every env must find its interpreter.  An explicit
        # --skip-missing-interpreters on the command line still wins (tox applies it last).
        env_conf.loaders.insert(0, MemoryLoader(skip_missing_interpreters=False))


@impl
def tox_before_run_commands(tox_env: Any) -> None:
    _COMMANDS_RAN.add(tox_env.conf.name)


@impl
def tox_env_teardown(tox_env: Any) -> None:
    name = tox_env.conf.name
    if not (isinstance(tox_env, RunToxEnv) and isinstance(tox_env, Python)) or name in _RESULTS:
        return  # a packaging env, or an env that is not Python's
    try:
        info = tox_env.base_python
    except Skip as exc:
        _RESULTS[name] = ("skipped", str(exc))
        return
    except Fail as exc:
        _RESULTS[name] = ("FAILED", str(exc))
        return
    version = ".".join(str(part) for part in info.version_info[:3])
    where = f"{info.implementation} {version}, {info.extra.get('executable', '?')}"
    _RESULTS[name] = ("ran" if name in _COMMANDS_RAN else "set up", where)


def _summary() -> None:
    if not _RESULTS:
        return  # nothing was run (tox -l, tox config, a provisioning host)
    width = max(len(name) for name in _RESULTS)
    lines = ["interpreters (toxfile.py):"]
    lines += [f"  {name:<{width}}  {how}: {what}" for name, (how, what) in _RESULTS.items()]
    missing = [name for name, (how, _) in _RESULTS.items() if how in ("skipped", "FAILED")]
    if not missing:
        lines.append(f"  every env found its interpreter ({len(_RESULTS)} of {len(_RESULTS)})")
    elif on_ci():
        lines.append(f"  CI=true: no interpreter for {', '.join(missing)}: the run fails")
    else:
        lines.append(
            f"  NOT TESTED: {', '.join(missing)} (no interpreter found for it; under CI=true "
            "this fails the run)"
        )
    print("\n".join(lines), flush=True)
    sys.stdout.flush()


# tox has no hook after its final report; atexit runs right after it.
atexit.register(_summary)
