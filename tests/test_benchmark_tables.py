"""The benchmarks' shared table loop: rows of every job, the markdown rewritten after each (partial results)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.latency import collect_rows

from .conftest import REPO


def test_collect_rows_rewrites_the_table_after_each_job_and_keeps_it_on_a_failure(tmp_path: Path, capsys):
    out = tmp_path / "table.md"
    seen: list[str] = []

    def render(rows):
        return "\n".join(str(r["n"]) for r in rows) + "\n"

    def job(n):
        def run():
            if out.exists():
                seen.append(out.read_text())
            if n == 3:
                raise RuntimeError("interrupted")
            return [{"n": n}, {"n": n * 10}]
        return run

    assert collect_rows([job(1), job(2)], render, out) == [{"n": 1}, {"n": 10}, {"n": 2}, {"n": 20}]
    assert seen == ["1\n10\n"] and out.read_text() == "1\n10\n2\n20\n"
    printed = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in printed[:4]] == [{"n": 1}, {"n": 10}, {"n": 2}, {"n": 20}]
    with pytest.raises(RuntimeError):
        collect_rows([job(1), job(3)], render, out)
    assert out.read_text() == "1\n10\n"  # the rows finished before the failure are kept


@pytest.mark.parametrize("module", ["accuracy", "nonsquare", "methods"])
def test_benchmark_commands_have_help(module: str):
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--help"], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0 and "--out" in result.stdout
