"""What a `pip install dora-sam2` gets: the wheel built from this tree, read back."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from support.dataflows import ROOT


def test_the_wheel_carries_the_licence_text(tmp_path):
    """Apache-2.0 (pyproject's `license`) requires its text to travel with every copy."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=600)
    [wheel] = tmp_path.glob("dora_sam2-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        licences = [name for name in archive.namelist() if "/licenses/" in name]
        assert [name.rsplit("/", 1)[1] for name in licences] == ["LICENSE"]
        text = archive.read(licences[0]).decode()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "static/click.html" in " ".join(zipfile.ZipFile(wheel).namelist())  # the page the click node serves


def test_the_changelog_starts_at_the_version_being_built():
    import re
    import tomllib

    import dora_sam2

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    first = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), flags=re.M).group(1)
    assert first == version == dora_sam2.__version__
