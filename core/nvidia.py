"""What CUDA device is here, asked of the driver library directly (no torch or cuda-python needed, so the
base install can tell a GPU machine from a CPU one).

Follows the CUDA driver API reference: cuInit, cuDeviceGetCount, cuDeviceGet, cuDeviceGetName,
cuDeviceGetAttribute (CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76), cuDeviceTotalMem_v2
and cuDriverGetVersion; every call returns a CUresult, and anything but CUDA_SUCCESS (0) means "no usable
device". The driver library is libcuda.so.1 on Linux and nvcuda.dll on Windows (same C API, cdecl on x64).
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import asdict, dataclass

_CC_MAJOR = 75
_CC_MINOR = 76
_LIBRARY = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"


@dataclass(frozen=True)
class CudaDevice:
    name: str
    compute_capability: str
    # The newest CUDA version the installed driver supports (cuDriverGetVersion), e.g. "12.4".
    driver: str
    memory_mib: int

    @property
    def sm(self) -> str:
        """The compute capability as TensorRT names it, e.g. "SM89"."""
        return "SM" + self.compute_capability.replace(".", "")

    def as_dict(self) -> dict[str, str | int]:
        return asdict(self)


class _Failed(Exception):
    """A driver call returned an error code."""


def _call(result: int) -> None:
    if result != 0:
        raise _Failed(result)


def _driver() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(_LIBRARY)
    except OSError:
        return None
    return lib if lib.cuInit(0) == 0 else None


def cuda_device(index: int = 0) -> CudaDevice | None:
    """The CUDA device `index`, or None where there is no driver, no such device, or any driver call fails."""
    lib = _driver()
    if lib is None:
        return None
    count, device = ctypes.c_int(0), ctypes.c_int(0)
    major, minor, version = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    memory = ctypes.c_size_t(0)
    name = ctypes.create_string_buffer(256)
    try:
        _call(lib.cuDeviceGetCount(ctypes.byref(count)))
        if count.value <= index:
            return None
        _call(lib.cuDeviceGet(ctypes.byref(device), index))
        _call(lib.cuDeviceGetName(name, len(name), device))
        _call(lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device))
        _call(lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device))
        _call(lib.cuDeviceTotalMem_v2(ctypes.byref(memory), device))
        _call(lib.cuDriverGetVersion(ctypes.byref(version)))
    except _Failed:
        return None
    return CudaDevice(
        name=name.value.decode(errors="replace"),
        compute_capability=f"{major.value}.{minor.value}",
        driver=f"{version.value // 1000}.{version.value % 1000 // 10}",
        memory_mib=memory.value >> 20,
    )
