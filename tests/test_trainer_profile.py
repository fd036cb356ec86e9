"""trainer.run.callbacks.Profile under a real Lightning trainer on CPU: the requested steps are
profiled and the summary (wall, GPU-busy, host, syncs) and operator tables are written.

The trainer runs in a fresh interpreter: NeMo, imported by other tests in the same
session, changes Lightning's data-fetcher selection for the whole process.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from childproc import default_sigint

pytest.importorskip("lightning.pytorch", reason="needs the train extra")

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import sys
    sys.path.insert(0, "tests")
    from lightning_tiny import Tiny, fit
    from trainer.run.callbacks import Profile

    fit(Tiny(), [Profile(2, 5, sys.argv[1])])
''')


def test_profile_writes_the_requested_steps(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, preexec_fn=default_sigint)
    assert result.returncode == 0, result.stderr[-3000:]
    files = list(tmp_path.glob("profile_steps*.txt"))
    assert [f.name for f in files] == ["profile_steps2-5.txt"]
    text = files[0].read_text()
    header = text.splitlines()[0]
    assert re.match(r"steps 2\.\.4: wall [0-9.]+ s/step, GPU kernels 0\.0000 s/step \(0% busy\), host [0-9.]+ s/step, "
                    r"0 host-device syncs/step waiting 0\.0 ms/step$", header), header
    assert "aten::addmm" in text or "aten::linear" in text  # the operator table of the profiled steps
    # the timeline beside it (Perfetto opens it) and the idle-gap summary read from it: no GPU, no gaps
    assert (tmp_path / "profile_steps2-5.json.gz").stat().st_size > 0
    assert "GPU idle (gaps >= 10 us, all streams): 0.0 ms/step in 0 gaps" in text
