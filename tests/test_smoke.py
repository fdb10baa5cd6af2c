import subprocess
import sys


def test_list_presets_runs():
    out = subprocess.run([sys.executable, "-m", "generator", "--list-presets"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "4k-16bit" in out.stdout
