"""Class 1 of the hostile-input issue: names are data, never markup or terminal control."""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfbench.textsafe import csv_cell, markup, plain
from tests.conftest import run_cli, tiny_spec

HOSTILE = ["[/]", "[bold red]x[/bold red]", "a\x1b]0;pwned\x07b", "c\x1b[2Jd", "e\u202eevil", "$x^2$"]


@pytest.mark.parametrize("name", HOSTILE)
def test_spec_names_outside_the_allowed_set_are_refused(write_spec, tmp_path, name):
    store = tmp_path / "s.sqlite"
    r = run_cli("run", str(write_spec(tiny_spec(name=name))), "--store", str(store))
    assert r.returncode == 2, r.stderr
    assert "name:" in r.stderr and "letters, digits" in r.stderr
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr and "Traceback" not in r.stderr
    assert not store.exists()


def test_error_messages_quote_user_values_as_text(write_spec, tmp_path):
    r = run_cli("run", str(write_spec(tiny_spec(backend={"name": "[/]\x1b[2J"}))), "--store",
                str(tmp_path / "s.sqlite"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "[/]" in r.stderr and "\\x1b[2J" in r.stderr and "\x1b" not in r.stderr


def _plant(store, name: str) -> str:
    """A run whose name an older release (or another tool) stored without checking it."""
    with sqlite3.connect(store) as c:
        run_id = c.execute("SELECT run_id FROM runs").fetchone()[0]
        c.execute("UPDATE runs SET name=?, reason=? WHERE run_id=?", (name, name, run_id))
        c.execute("UPDATE points SET error=? WHERE run_id=?", (name, run_id))
    return run_id


def test_stored_hostile_names_print_as_text_everywhere(write_spec, tmp_path):
    store = tmp_path / "s.sqlite"
    assert run_cli("run", str(write_spec(tiny_spec(batch_sizes=[1]))), "--store", str(store)).returncode == 0
    name = "[/]\x1b]0;pwned\x07\x1b[2J=cmd|' /C calc'!A0"
    run_id = _plant(store, name)
    for args in (("results", "list"), ("results", "show", run_id)):
        r = run_cli(*args, "--store", str(store))
        assert r.returncode == 0, r.stderr
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout
        assert "[/]" in r.stdout and "\\x1b" in r.stdout
    r = run_cli("results", "show", run_id, "--store", str(store), "--format", "json")
    assert json.loads(r.stdout)["name"] == name  # JSON keeps the exact text, escaped by JSON itself
    r = run_cli("results", "show", run_id, "--store", str(store), "--format", "csv")
    assert r.returncode == 0 and "\x1b" not in r.stdout and ",'[/]" not in r.stdout


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_plain_never_lets_a_control_character_through(text):
    out = plain(text)
    assert not any(ord(ch) < 32 and ch not in "\t\n" or 0x7F <= ord(ch) <= 0x9F for ch in out)
    from rich.console import Console

    Console(file=open("/dev/null", "w")).print(markup(text))  # never a MarkupError


def test_csv_cells_never_start_a_formula():
    assert csv_cell("=1+1") == "'=1+1" and csv_cell("-3.5") == "-3.5" and csv_cell(7) == 7
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)" and csv_cell("ok") == "ok"


def test_pickle_weights_are_refused_unless_the_spec_opts_in(tmp_path):
    """Class 8: pickle files can run code when loaded; perfbench loads safetensors, and pickles
    only when the spec says allow_pickle_weights: true."""
    from perfbench.errors import SpecError
    from perfbench.models.build import load_kwargs
    from perfbench.spec import parse_spec
    from tests.conftest import config_only_checkpoint

    ckpt = config_only_checkpoint(tmp_path / "ckpt")
    (ckpt / "pytorch_model.bin").write_bytes(b"not really a pickle")
    for spec in (tiny_spec(weights=str(ckpt)), tiny_spec(model={"path": str(ckpt)}, weights=None)):
        with pytest.raises(SpecError, match="pickle weights .* can run code"):
            parse_spec(spec)
        assert parse_spec({**spec, "allow_pickle_weights": True}).model_ref.allow_pickle
    (ckpt / "model.safetensors").write_bytes(b"")
    assert parse_spec(tiny_spec(weights=str(ckpt))).weights  # safetensors present: loaded from those
    assert load_kwargs(False) == {"local_files_only": True, "use_safetensors": True}
    assert load_kwargs(True)["use_safetensors"] is False
