"""The front door: what ``llmpulse`` exports, where it comes from, and what it costs.

Modelled on httpx's tests/unit/test_exported_members.py: ``__all__`` is the whole
public surface of the package, every name in it resolves, and nothing public
is left out.
"""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import llmpulse

ROOT = Path(__file__).resolve().parents[2]


def _load_everything() -> None:
    for name in llmpulse.__all__:
        getattr(llmpulse, name)


def test_all_is_sorted_and_unique() -> None:
    assert len(set(llmpulse.__all__)) == len(llmpulse.__all__)
    assert llmpulse.__all__ == sorted(
        llmpulse.__all__, key=lambda n: (not n.isupper(), n[:1].islower(), n)
    )


def test_every_public_name_is_exported() -> None:
    _load_everything()
    public = {
        name
        for name, value in vars(llmpulse).items()
        # Submodules become attributes of the package as they are imported.
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public | {"__version__"} == set(llmpulse.__all__)
    assert set(dir(llmpulse)) >= set(llmpulse.__all__)


def test_every_name_comes_from_where_it_claims() -> None:
    exports: dict[str, str] = llmpulse._EXPORTS
    assert set(exports) == set(llmpulse.__all__) - {"__version__"}
    for name, module_name in exports.items():
        value = getattr(llmpulse, name)
        module = importlib.import_module(module_name)
        assert getattr(module, name) is value, name
        if inspect.isclass(value) or inspect.isfunction(value):
            # Defined there, not merely re-exported by it.
            assert value.__module__ == module_name, (name, value.__module__)
        declared = getattr(module, "__all__", None)
        if declared is not None:
            assert name in declared, (name, module_name)


def test_unknown_names_raise_attribute_error() -> None:
    try:
        llmpulse.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("llmpulse.NoSuchThing resolved")


def test_errors_form_one_tree() -> None:
    errors = [getattr(llmpulse, n) for n in llmpulse.__all__ if n.endswith("Error")]
    assert errors and all(issubclass(e, llmpulse.LlmpulseError) for e in errors)
    from llmpulse.alerts.rules import RuleError
    from llmpulse.alerts.sinks import SinkError

    assert SinkError is llmpulse.SinkError and issubclass(RuleError, llmpulse.LlmpulseError)


def test_client_side_does_not_load_worker_code() -> None:
    # A fresh interpreter: this one has loaded everything already.
    code = (
        "import sys\n"
        "from llmpulse import *\n"
        "import llmpulse\n"
        "[getattr(llmpulse, n) for n in llmpulse.__all__]\n"
        "heavy = ('faust', 'chdb', 'clickhouse_connect', 'numpy', 'aiokafka', 'mode',"
        " 'prometheus_client', 'llmpulse.worker', 'llmpulse.processors', 'llmpulse.store')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_import_llmpulse_loads_nothing_of_its_own() -> None:
    code = "import sys, llmpulse\nprint(sorted(m for m in sys.modules if m.startswith('llmpulse')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['llmpulse']"


def test_readme_and_docs_import_client_names_from_the_front_door() -> None:
    """Every ``from llmpulse import ...`` in the README and docs resolves, and no
    example reaches into the client modules themselves."""
    imported: set[str] = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        assert "llmpulse.ingest.emitter" not in text and "llmpulse.ingest.timing" not in text
        assert "from llmpulse.client" not in text, path
        for match in re.finditer(r"^\s*from llmpulse import (?:\(([^)]*)\)|(.+))$", text, re.M):
            names = (match.group(1) or match.group(2)).replace("\n", " ").split(",")
            imported |= {n.strip() for n in names if n.strip()}
    assert {"kafka_emitter", "track_llm_call"} <= imported
    assert imported <= set(llmpulse.__all__), imported - set(llmpulse.__all__)
