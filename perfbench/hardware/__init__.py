"""Hardware profiles (datasheet ceilings with sources) and detection of the machine we run on.

Torch-free at import time. `from perfbench.hardware import load_profile` for the profile API;
detection lives in `perfbench.hardware.detect` (imports torch lazily, only inside `fingerprint()`).
"""

from perfbench.hardware.profile import (
    DTYPES,
    HardwareProfile,
    UnknownDtypeError,
    list_profiles,
    load_profile,
    parse_profile,
    profile_names,
    profiles_dir,
)

__all__ = [
    "DTYPES",
    "HardwareProfile",
    "UnknownDtypeError",
    "list_profiles",
    "load_profile",
    "parse_profile",
    "profile_names",
    "profiles_dir",
]
