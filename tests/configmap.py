"""A mounted ConfigMap on a real filesystem, updated step by step the way the kubelet does it.

The kubelet's atomic writer (pkg/volume/util/atomic_writer.go) keeps the files of a
ConfigMap volume in a timestamped folder (`..2026_05_01_12_00_00.123456789`), points the
`..data` symlink at it, and exposes each key as `KEY -> ..data/KEY`. An update writes a new
timestamped folder, makes `..data_tmp -> <new folder>`, renames `..data_tmp` over `..data`
(the one atomic step), then deletes the old folder. `update()` yields after each step so a
test can check what a reader sees in between.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ConfigMapVolume"]


class ConfigMapVolume:
    def __init__(self, root: Path, files: dict[str, str], mode: int = 0o644) -> None:
        self.root = root
        self.mode = mode  # the volume's defaultMode
        root.mkdir(parents=True, exist_ok=True)
        ts = self._new_ts_dir()
        for name, text in files.items():
            (ts / name).write_text(text)
            (ts / name).chmod(mode)
        os.symlink(ts.name, root / "..data")
        for name in files:
            os.symlink(f"..data/{name}", root / name)

    def path(self, key: str) -> Path:
        return self.root / key

    def _new_ts_dir(self) -> Path:
        stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.")
        return Path(tempfile.mkdtemp(prefix=stamp, dir=self.root))

    def current_dir(self) -> Path:
        return self.root / os.readlink(self.root / "..data")

    def update(self, files: dict[str, str], split: int | None = None) -> Iterator[str]:
        """The kubelet's update, one step per yield (the step just done is yielded). With
        `split`, each file is written in two parts, so one step leaves it half-written."""
        old = self.current_dir()
        ts = self._new_ts_dir()
        yield "timestamped folder created"
        for name, text in files.items():
            with open(ts / name, "w") as f:
                if split is not None:
                    f.write(text[:split])
                    f.flush()
                    yield f"{name} half-written in the new folder"
                    f.write(text[split:])
                else:
                    f.write(text)
            (ts / name).chmod(self.mode)
        yield "new folder complete"
        os.symlink(ts.name, self.root / "..data_tmp")
        yield "..data_tmp created"
        os.rename(self.root / "..data_tmp", self.root / "..data")
        yield "..data swapped"
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)
        for stale in set(os.listdir(old)) - set(files):
            (self.root / stale).unlink(missing_ok=True)
        shutil.rmtree(old)
        yield "old folder removed"
