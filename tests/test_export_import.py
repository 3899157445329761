"""Export -> import -> compare: lossless, idempotent, and a bad file is refused whole."""

from __future__ import annotations

import json
import sqlite3

from perfbench.store import ResultsStore
from tests.conftest import run_cli
from tests.gate_helpers import add_run


def _fill(path):
    with ResultsStore(path) as st:
        ids = [add_run(st, seed=i, level=1e-3 * (1 + 0.2 * (i == 3)),
                       subject={"role": "candidate", "branch": "main" if i < 3 else "pr", "commit": f"c{i}",
                                "ci_run_id": "42"}) for i in range(4)]
    return ids


def _count(path):
    with sqlite3.connect(path) as c:
        return c.execute("SELECT COUNT(*) FROM runs").fetchone()[0], c.execute("SELECT COUNT(*) FROM points").fetchone()[0]


def test_round_trip_is_lossless_and_statistics_identical(tmp_path):
    src, dst, out = tmp_path / "ci.sqlite", tmp_path / "central.sqlite", tmp_path / "runs.json"
    ids = _fill(src)
    r = run_cli("results", "export", *ids, "--out", str(out), "--store", str(src))
    assert r.returncode == 0, r.stderr
    r = run_cli("results", "import", str(out), "--store", str(dst))
    assert r.returncode == 0 and "imported 4 run(s)" in r.stdout, r.stderr
    with ResultsStore(src) as a, ResultsStore(dst) as b:
        for rid in ids:
            assert a.export_run(rid) == b.export_run(rid)
            assert a.get_run(rid) == b.get_run(rid)
            assert b.get_run(rid)["subject"]["ci_run_id"] == "42"
    cmp = [run_cli("compare", "branch:main", "branch:pr", "--store", str(s), "--format", "json",
                   "-m", "latency_median_s", "-m", "tokens_per_s").stdout for s in (src, dst)]
    assert json.loads(cmp[0])["comparisons"] == json.loads(cmp[1])["comparisons"]


def test_import_twice_adds_nothing(tmp_path):
    src, dst, out = tmp_path / "ci.sqlite", tmp_path / "central.sqlite", tmp_path / "runs.json"
    ids = _fill(src)
    run_cli("results", "export", "branch:main", "--out", str(out), "--store", str(src))
    assert run_cli("results", "import", str(out), "--store", str(dst)).returncode == 0
    before = _count(dst)
    r = run_cli("results", "import", str(out), "--store", str(dst))
    assert r.returncode == 0 and "3 already present" in r.stdout
    assert _count(dst) == before == (3, 6)
    assert ids


def test_malformed_or_foreign_files_are_refused_whole(tmp_path):
    src, dst, out = tmp_path / "ci.sqlite", tmp_path / "central.sqlite", tmp_path / "runs.json"
    _fill(src)
    run_cli("results", "export", "branch:main", "branch:pr", "--out", str(out), "--store", str(src))
    doc = json.loads(out.read_text())
    cases = {
        "foreign": ({"hello": 1}, "format"),
        "not json": ("{nope", "not UTF-8 JSON"),
        "bad status": (_mut(doc, lambda d: d["runs"][2]["run"].update(status="great")), "runs[2].run.status"),
        "bad samples": (_mut(doc, lambda d: d["runs"][3]["points"][1].update(samples_json=["x"])),
                        "runs[3].points[1].samples_json"),
        "bad field type": (_mut(doc, lambda d: d["runs"][1]["points"][0].update(batch_size="one")),
                           "runs[1].points[0].batch_size"),
        "unknown column": (_mut(doc, lambda d: d["runs"][3]["run"].update(color="red")), "unknown field"),
        "unknown point column": (_mut(doc, lambda d: d["runs"][0]["points"][0].update(colour_of_sky=1.0)),
                                 "runs[0].points[0]: unknown field"),
        "newer version": (_mut(doc, lambda d: d.update(version=99)), "version"),
    }
    for name, (content, needle) in cases.items():
        bad = tmp_path / f"{name.replace(' ', '_')}.json"
        bad.write_text(content if isinstance(content, str) else json.dumps(content))
        r = run_cli("results", "import", str(bad), "--store", str(dst))
        assert r.returncode == 2 and needle in r.stderr, (name, r.stderr)
        assert str(bad) in r.stderr
        assert not dst.exists(), name  # refused before the store is even created


def test_same_run_id_with_other_content_is_refused(tmp_path):
    src, dst, out = tmp_path / "ci.sqlite", tmp_path / "central.sqlite", tmp_path / "runs.json"
    ids = _fill(src)
    run_cli("results", "export", ids[0], "--out", str(out), "--store", str(src))
    run_cli("results", "import", str(out), "--store", str(dst))
    doc = json.loads(out.read_text())
    doc["runs"][0]["points"][0]["samples_json"][0] *= 2
    out.write_text(json.dumps(doc))
    r = run_cli("results", "import", str(out), "--store", str(dst))
    assert r.returncode == 2 and "different content" in r.stderr


def _mut(doc, fn):
    d = json.loads(json.dumps(doc))
    fn(d)
    return d


def test_serving_requests_travel_with_their_points(tmp_path):
    """Per-request rows of serving load points (table `requests`) are exported and re-linked."""
    src, dst = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    with ResultsStore(src) as st:
        rid = add_run(st, batches=(1,))
        st.add_point(rid, {"batch_size": 2, "seq_len": 16, "new_tokens": 0, "status": "ok", "samples_s": [0.1]},
                     requests=[{"idx": i, "role": "measured", "status": "ok", "done_s": 0.5 + i} for i in range(3)])
        doc = {"format": "perfbench-results", "version": 1, "runs": [st.export_run(rid)]}
    assert len(doc["runs"][0]["requests"]) == 3 and {q["point"] for q in doc["runs"][0]["requests"]} == {1}
    out = tmp_path / "x.json"
    out.write_text(json.dumps(doc))
    assert run_cli("results", "import", str(out), "--store", str(dst)).returncode == 0
    with ResultsStore(src) as a, ResultsStore(dst) as b:
        assert a.export_run(rid) == b.export_run(rid)
        assert [q["done_s"] for q in b.get_requests(rid)] == [0.5, 1.5, 2.5]
