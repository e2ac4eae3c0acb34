"""Environment-only helper (never imported by waste_edge): load ../shared/env/torchvision_cpu_shim.py lazily.

A `.pth` line runs at every interpreter start; importing the shim there would import torch in every
process, including the torch-free runtime. This hook defers it to the first `import torchvision`.
"""

import importlib.abc
import sys


class _TorchvisionShimHook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            import torchvision_cpu_shim  # noqa: F401  (defines the two op schemas torchvision needs)
        return None


sys.meta_path.insert(0, _TorchvisionShimHook())
