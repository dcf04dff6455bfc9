"""bench/profile_draft.py --ncu's bookkeeping, with a stand-in for Nsight Compute (CI has no GPU):
the kernels' launches and time per step from ncu's CSV, the chosen k only, and a result file
rewritten after each k, so a run cut short keeps what it finished."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"

# prints ncu's CSV for two profiled steps: per step, 3 launches of a norm (2 us each) and one
# product (10 us, 4 MB read), plus one more launch of the norm when the command asks for k=3;
# fails when asked for k=1 (a run cut short)
FAKE_NCU = """\
import sys
k = int(sys.argv[sys.argv.index("--kernels") + 1])
if k == 1:
    sys.exit(3)
print("==PROF== Connected")
print('"ID","Kernel Name","Metric Name","Metric Unit","Metric Value"')
launch = 0
for step in range(2):
    for _ in range(3 + (k == 3)):
        print(f'"{launch}","rms_norm_f32","gpu__time_duration.sum","us","2.0"')
        launch += 1
    print(f'"{launch}","mul_mat_vec_f","gpu__time_duration.sum","ns","10,000"')
    print(f'"{launch}","mul_mat_vec_f","dram__bytes_read.sum","Mbyte","4"')
    launch += 1
"""


def run_profile(tmp_path: Path, *ks: int) -> tuple[subprocess.CompletedProcess[str], Path]:
    fake = tmp_path / "ncu.py"
    fake.write_text(FAKE_NCU)
    launcher = tmp_path / "ncu"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake}" "$@"\n')
    launcher.chmod(0o755)
    out = tmp_path / "kernels.json"
    args = [f"--ncu-k={k}" for k in ks]
    cmd = [sys.executable, str(BENCH / "profile_draft.py"), "--ncu", str(launcher), *args, "--commit", "c0"]
    res = subprocess.run([*cmd, "--out", str(out)], cwd=BENCH, capture_output=True, text=True, check=False)
    return res, out


def test_ncu_k_picks_the_steps_and_compares_with_the_target_step(tmp_path: Path) -> None:
    res, out = run_profile(tmp_path, 0, 3)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    assert set(result) == {"commit", "shape", "regime", "k0", "k3"}
    k0, k3 = result["k0"], result["k3"]
    # NCU_STEPS = 4 divides: the stand-in profiled 2 steps' worth, so half a launch set a step
    assert k0["launches_per_step"] == (2 * 4) / 4
    assert k0["kernels"]["rms_norm_f32"]["launches"] == 6 / 4
    assert k0["kernels"]["mul_mat_vec_f"]["us"] == 20.0 / 4
    assert k0["dram_bytes_per_step"] == 8e6 / 4
    assert k3["launches_per_step"] == (2 * 5) / 4
    assert k3["extra_over_k0_us"]["rms_norm_f32"] == 4.0 / 4
    assert "extra_over_k0_us" not in k0


def test_a_run_cut_short_keeps_the_steps_it_finished(tmp_path: Path) -> None:
    res, out = run_profile(tmp_path, 0, 1, 3)
    assert res.returncode != 0
    result = json.loads(out.read_text())
    assert "k0" in result and "k1" not in result and "k3" not in result
