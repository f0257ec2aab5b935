"""Build what the shipped targets need: libfuse's example daemons and a squashfs image.

Everything lands under ``<repo>/.build/`` and is rebuilt only when stale. The examples are
built twice: ``bin/`` plain (-O2), ``asan/bin/`` with AddressSanitizer and UBSan.
``python -m targets.build`` builds it all and prints the paths.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from targets.errors import TargetNotInstalled

REPO = Path(__file__).resolve().parent.parent
BUILD_DIR = Path(os.environ.get("FUSECHECK_BUILD_DIR", REPO / ".build"))
EXAMPLES_DIR = Path("/usr/share/doc/libfuse3-dev/examples")
EXAMPLES = ("hello_ll", "passthrough_ll", "cuse")
TOOLCHAIN_HINT = "apt-get install gcc pkg-config libfuse3-dev"
PLAIN_FLAGS = ("-O2",)
SANITIZER_FLAGS = ("-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1")
#: Compiled into every sanitized binary, however it is spawned (exec:, mount, cuse); the
#: environment's ASAN_OPTIONS/UBSAN_OPTIONS still override single flags. A report goes to
#: stderr and the process dies of SIGABRT. Leak detection is off: libfuse's examples leak
#: at exit, and LSan needs ptrace, which containers often refuse.
SANITIZER_DEFAULTS = {
    "asan": "abort_on_error=1:detect_leaks=0:symbolize=1",
    "ubsan": "print_stacktrace=1:halt_on_error=1:abort_on_error=1",
}
#: Bump when the generated tree changes, so images are rebuilt.
TREE_VERSION = 1


def bin_dir(*, sanitize: bool = False) -> Path:
    return BUILD_DIR / ("asan/bin" if sanitize else "bin")


def sanitizer_options_source() -> Path:
    """A C file defining ``__asan_default_options``/``__ubsan_default_options``; rewritten
    only when SANITIZER_DEFAULTS change, so its mtime says when to rebuild."""
    path = BUILD_DIR / "asan" / "src" / "sanitizer_options.c"
    text = "".join(f'const char *__{kind}_default_options(void) {{ return "{value}"; }}\n'
                   for kind, value in SANITIZER_DEFAULTS.items())
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".options.", dir=path.parent)  # whole, for parallel builds
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return path


def example_source(name: str, examples: Path = EXAMPLES_DIR) -> Path:
    """The example's source, ``NAME.c`` or Debian's compressed ``NAME.c.gz``."""
    for candidate in (examples / f"{name}.c", examples / f"{name}.c.gz"):
        if candidate.exists():
            return candidate
    raise TargetNotInstalled(f"libfuse example {name}.c not found in {examples}", hint=TOOLCHAIN_HINT)


def _fuse3_flags() -> list[str]:
    for tool in ("gcc", "pkg-config"):
        if shutil.which(tool) is None:
            raise TargetNotInstalled(f"{tool} not found on PATH", hint=TOOLCHAIN_HINT)
    result = subprocess.run(
        ["pkg-config", "fuse3", "--cflags", "--libs"],
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise TargetNotInstalled(
            "pkg-config does not know fuse3 (libfuse3-dev missing?)",
            hint=TOOLCHAIN_HINT,
        )
    return result.stdout.split()


def _unpack(source: Path, dest: Path) -> Path:
    """Decompress ``source`` and the headers beside it into ``dest``; the .c."""
    dest.mkdir(parents=True, exist_ok=True)
    for packed in [source, *source.parent.glob("*.h.gz")]:
        target = dest / packed.name.removesuffix(".gz")
        with gzip.open(packed) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
    return dest / source.name.removesuffix(".gz")


def _fresh(output: Path, *inputs: Path) -> bool:
    if not output.exists():
        return False
    built = output.stat().st_mtime
    return all(built > path.stat().st_mtime for path in inputs)


def build_example(name: str, *, examples: Path = EXAMPLES_DIR, force: bool = False,
                  sanitize: bool = False) -> Path:
    """Compile libfuse example ``name`` into ``.build/bin/`` (``sanitize``: with ASan and
    UBSan into ``.build/asan/bin/``); skip when up to date."""
    if name not in EXAMPLES:
        raise ValueError(f"not a shipped example: {name}")
    source = example_source(name, examples)
    output = bin_dir(sanitize=sanitize) / name
    defaults = [sanitizer_options_source()] if sanitize else []
    if not force and _fresh(output, source, *defaults):
        return output
    flags = _fuse3_flags()
    if source.suffix == ".gz":
        source = _unpack(source, BUILD_DIR / "src")
    output.parent.mkdir(parents=True, exist_ok=True)
    # Compile beside the output and rename, so parallel builds never see half a file.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=output.parent)
    os.close(fd)
    optimise = SANITIZER_FLAGS if sanitize else PLAIN_FLAGS
    cmd = ["gcc", *optimise, "-Wall", f"-I{examples}", str(source), *map(str, defaults), *flags, "-o", tmp]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(tmp)
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        variant = " with sanitizers" if sanitize else ""
        hint = f"{TOOLCHAIN_HINT} libasan8 libubsan1" if sanitize else TOOLCHAIN_HINT
        raise TargetNotInstalled(f"compiling {name}{variant} failed: {last}", hint=hint)
    os.chmod(tmp, 0o755)
    os.replace(tmp, output)
    return output


def _write_tree(root: Path) -> None:
    """A small tree: files of a few sizes, nested dirs, symlinks, an empty file."""
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "empty_dir").mkdir()
    (root / "hello.txt").write_text("hello, fusecheck\n")
    (root / "empty").write_bytes(b"")
    (root / "dir" / "numbers.txt").write_text("".join(f"{i}\n" for i in range(1000)))
    (root / "dir" / "sub" / "binary.bin").write_bytes(bytes(range(256)) * 300)
    (root / "link_to_hello").symlink_to("hello.txt")
    (root / "dir" / "dangling").symlink_to("no/such/target")
    os.chmod(root / "dir" / "numbers.txt", 0o600)


def squashfs_tree() -> Path:
    """The generated tree (built once); squashfuse_ll's image holds exactly this."""
    tree = BUILD_DIR / "squashfs" / f"tree-v{TREE_VERSION}"
    if tree.is_dir():
        return tree
    tree.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tree.", dir=tree.parent))
    tmp.chmod(0o755)
    _write_tree(tmp)
    try:
        tmp.rename(tree)
    except OSError:  # a parallel build got there first
        shutil.rmtree(tmp)
    return tree


def build_squashfs_image(*, force: bool = False) -> Path:
    """``mksquashfs`` the generated tree into ``.build/squashfs/``, when stale."""
    tree = squashfs_tree()
    image = tree.with_suffix(".sqfs")
    if not force and _fresh(image, tree):
        return image
    if shutil.which("mksquashfs") is None:
        raise TargetNotInstalled("mksquashfs not found on PATH", hint="apt-get install squashfs-tools")
    fd, tmp = tempfile.mkstemp(prefix=".image.", dir=image.parent)
    os.close(fd)
    cmd = [
        "mksquashfs",
        str(tree),
        tmp,
        "-noappend",
        "-quiet",
        "-no-progress",
        "-all-root",
    ]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(tmp)
        raise TargetNotInstalled(
            f"mksquashfs failed: {result.stderr.strip()}",
            hint="apt-get install squashfs-tools",
        )
    os.chmod(tmp, 0o644)
    os.replace(tmp, image)
    return image


def build_all(*, force: bool = False) -> dict[str, Path]:
    """Build every example, plain and sanitized (``NAME-asan``), and the image; name -> path."""
    built = {name: build_example(name, force=force) for name in EXAMPLES}
    built["squashfs-image"] = build_squashfs_image(force=force)
    # Last: a compiler without libasan fails here, after the plain targets are built.
    built |= {f"{name}-asan": build_example(name, force=force, sanitize=True) for name in EXAMPLES}
    return built


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        built = build_all(force="--force" in args)
    except TargetNotInstalled as exc:
        print(exc.describe(), file=sys.stderr)
        return 1
    for name, path in built.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
