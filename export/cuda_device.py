"""What CUDA device is here, asked of the driver library directly (no torch or pycuda needed).

Follows the CUDA driver API: cuInit, cuDeviceGetCount, cuDeviceGet, cuDeviceGetName, cuDeviceGetAttribute
(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76) and cuDriverGetVersion.
"""

from __future__ import annotations

import ctypes
from dataclasses import asdict, dataclass

_CC_MAJOR = 75
_CC_MINOR = 76


@dataclass(frozen=True)
class CudaDevice:
    name: str
    compute_capability: str
    driver: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _driver() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    return lib if lib.cuInit(0) == 0 else None


def cuda_device(index: int = 0) -> CudaDevice | None:
    """The CUDA device `index`, or None where there is no driver or no such device."""
    lib = _driver()
    if lib is None:
        return None
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value <= index:
        return None
    device = ctypes.c_int(0)
    lib.cuDeviceGet(ctypes.byref(device), index)
    name = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(name, 256, device)
    major, minor, version = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device)
    lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device)
    lib.cuDriverGetVersion(ctypes.byref(version))
    return CudaDevice(
        name=name.value.decode(errors="replace"),
        compute_capability=f"{major.value}.{minor.value}",
        driver=f"{version.value // 1000}.{version.value % 1000 // 10}",
    )
