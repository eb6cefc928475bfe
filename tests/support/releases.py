"""Other releases of Sluice to run beside this one: the landed release from git, for the
rolling-upgrade test (the next release is `tests.support.next_release`)."""

from __future__ import annotations

import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

from tests.support.kafka import ROOT

#: The landed release: the commit of main that this release's work started from. Bump it when a
#: release lands, so that the upgrade test always runs the one before.
LANDED = "1755f41fc35c1a4192a633f9f4015f8b89b4dc88"


def unpack_landed(dest: Path) -> Path:
    """A folder for PYTHONPATH under which `sluice.stream` and `sluice.models` are LANDED's
    (its `stream/` and `models/` from `git archive`); raises LookupError when this clone does not
    have the commit."""
    try:
        tar = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", LANDED, "stream", "models"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (subprocess.CalledProcessError, OSError) as exc:
        raise LookupError(f"the landed release {LANDED[:7]} is not in this clone ({exc})") from exc
    src = dest / "src"
    src.mkdir(parents=True)
    with tarfile.open(fileobj=BytesIO(tar)) as t:
        t.extractall(src, filter="data")
    site = dest / "site"
    (site / "sluice").mkdir(parents=True)
    for pkg in ("stream", "models"):
        (site / "sluice" / pkg).symlink_to(src / pkg)
    return site
