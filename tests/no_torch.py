"""Run the perfbench CLI as it would run where torch and transformers are not installed (a
Raspberry Pi with llama.cpp, a laptop that drives a remote server): importing either fails."""

from __future__ import annotations

import importlib.abc
import sys


class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ModuleNotFoundError(f"No module named {name!r} (absent for this test)", name=name)
        return None


if __name__ == "__main__":
    sys.meta_path.insert(0, _Absent())
    sys.argv = ["perfbench", *sys.argv[1:]]
    from perfbench.cli import main

    main()
