"""Package hygiene: cheap import, __all__ everywhere, a CLI whose every verb has --help."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import flare_eval
from flare_eval.cli.main import VERBS, build_parser, main


def test_import_is_cheap():
    code = (
        "import sys, flare_eval, flare_eval.metrics, flare_eval.scoring, flare_eval.cli.main;"
        "heavy = [m for m in ('torch', 'docker', 'matplotlib', 'dask', 'distributed') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_module_declares_all():
    missing = []
    for info in pkgutil.walk_packages(flare_eval.__path__, "flare_eval."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        if not hasattr(module, "__all__"):
            missing.append(info.name)
        for name in getattr(module, "__all__", []):
            assert hasattr(module, name), f"{info.name}.__all__ names {name}, which is not there"
    assert missing == []


def test_cli_help_imports_nothing_heavy():
    # `flare-eval --help` and every `VERB -h` build the whole parser; they must not pay for the
    # numeric stack (numpy alone is ~0.1 s, scipy.ndimage ~0.5 s of a 0.3 s budget).  A fresh
    # interpreter, since this test process has long imported all of them.
    code = (
        "import contextlib, io, sys\n"
        "from flare_eval.cli.main import VERBS, main\n"
        "for argv in [['--help']] + [[verb, '-h'] for verb in VERBS]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "heavy = ('numpy', 'scipy', 'pandas', 'matplotlib', 'torch', 'docker', 'dask', 'distributed')\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    assert "usage: flare-eval " + verb in capsys.readouterr().out


def test_version_and_console_script():
    out = subprocess.run(["flare-eval", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"flare-eval {flare_eval.__version__}"
    assert build_parser().prog == "flare-eval"
