"""Build what the shipped targets need: libfuse's example daemons and a squashfs image.

Everything lands under ``<repo>/.build/`` and is rebuilt only when stale.
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
#: Bump when the generated tree changes, so images are rebuilt.
TREE_VERSION = 1


def bin_dir() -> Path:
    return BUILD_DIR / "bin"


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


def build_example(name: str, *, examples: Path = EXAMPLES_DIR, force: bool = False) -> Path:
    """Compile libfuse example ``name`` into ``.build/bin/``; skip when up to date."""
    if name not in EXAMPLES:
        raise ValueError(f"not a shipped example: {name}")
    source = example_source(name, examples)
    output = bin_dir() / name
    if not force and _fresh(output, source):
        return output
    flags = _fuse3_flags()
    if source.suffix == ".gz":
        source = _unpack(source, BUILD_DIR / "src")
    output.parent.mkdir(parents=True, exist_ok=True)
    # Compile beside the output and rename, so parallel builds never see half a file.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=output.parent)
    os.close(fd)
    cmd = ["gcc", "-O2", "-Wall", f"-I{examples}", str(source), *flags, "-o", tmp]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(tmp)
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise TargetNotInstalled(f"compiling {name} failed: {last}", hint=TOOLCHAIN_HINT)
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
    """Build every example and the image; name -> path."""
    built = {name: build_example(name, force=force) for name in EXAMPLES}
    built["squashfs-image"] = build_squashfs_image(force=force)
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
