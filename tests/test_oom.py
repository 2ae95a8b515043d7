"""Out of memory in the middle of an image: the tiler halves its pass and the image still comes out, on
OpenVINO (the default CPU backend) for real, under an address-space limit in a child process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT

CHILD = textwrap.dedent(
    """
    import resource, sys, warnings
    import numpy as np
    from runtime import Upscaler

    warnings.simplefilter("always")
    with Upscaler(backend="openvino", tile=2048, engines_dir=sys.argv[1]) as up:
        image = (np.random.default_rng(0).random((1024, 1024, 3)) * 255).astype(np.uint8)
        vms = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        # 1.5 GiB more than now: the whole 1024x1024 pass needs about 4 GB (3.3 KB per LR pixel measured,
        # BENCHMARKS.md "Memory of one pass"), a 512x512 pass about 0.9 GB.
        resource.setrlimit(resource.RLIMIT_AS, (vms + (1536 << 20),) * 2)
        out = up(image)
    print(out.shape)
    """
)


def test_openvino_recovers_from_out_of_memory_by_halving_the_pass(exported) -> None:
    result = subprocess.run([sys.executable, "-c", CHILD, str(exported[0])], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(4096, 4096, 3)"
    assert "out of memory at tile 2048; retrying with tile 1024" in result.stderr
