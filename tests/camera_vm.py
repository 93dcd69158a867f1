"""A throw-away virtual machine with a real V4L2 camera driver, for testing camera indices and ``v4l2src`` pipelines.

This machine (and CI's) has no camera and its container cannot load kernel modules. So the tests boot a small VM
with QEMU (software emulation; KVM with ``RDEDGE_VM_ACCEL=kvm``) on Debian's stock kernel, load the
kernel's own ``vivid`` driver (the Virtual Video Test Driver: a real V4L2 capture device, ``/dev/video0``, with a
test-pattern "webcam" input and a USB-disconnect control) and run a command there. Nothing is built: the VM's root
file system is *this* machine's root, shared read-only over 9p under a RAM overlay, so the command runs with the
same interpreters, virtual environments, repository and files, at the same paths. Only ``out_dir`` is written
back. What it needs (Debian packages): ``qemu-system-x86``, ``busybox-static``, and ``apt-get download`` of
``linux-image-amd64`` (cached under ``RDEDGE_VM_CACHE``, default ``~/.cache/rdedge/vm``).

Run by hand::

    python -m tests.camera_vm -- python -c "import cv2; print(cv2.VideoCapture(0).read()[1].shape)"
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

KERNEL_PACKAGE = "linux-image-amd64"
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")  # to mount the shared root
CAMERA_MODULE = "vivid"
# One device, video-capture node only, single-planar formats (what OpenCV's V4L2 backend and v4l2src read).
VIVID_OPTIONS = "n_devs=1 node_types=0x1 multiplanar=1"
DEFAULT_CACHE = Path(os.environ.get("RDEDGE_VM_CACHE", Path.home() / ".cache" / "rdedge" / "vm"))


class VmUnavailable(RuntimeError):
    """The VM cannot be started here (a tool or the kernel package is missing); the message says what to install."""


@dataclass(frozen=True)
class Kernel:
    """An unpacked Debian kernel: its image and module tree."""

    release: str
    vmlinuz: Path
    modules: Path  # .../lib/modules/<release>

    def modules_with_dependencies(self, names: tuple[str, ...]) -> list[str]:
        """Module files (relative to ``modules``) for ``names``, each after everything it depends on."""
        deps: dict[str, list[str]] = {}
        for line in (self.modules / "modules.dep").read_text().splitlines():
            module, _, needs = line.partition(":")
            deps[module] = needs.split()
        by_name = {Path(m).name.removesuffix(".ko").replace("-", "_"): m for m in deps}
        ordered: list[str] = []

        def visit(module: str) -> None:
            if module in ordered:
                return
            for dependency in deps[module]:
                visit(dependency)
            ordered.append(module)

        for name in names:
            if name.replace("-", "_") not in by_name:
                raise VmUnavailable(f"kernel {self.release} has no module {name!r}")
            visit(by_name[name.replace("-", "_")])
        return ordered


def require_tools() -> None:
    """Raise :class:`VmUnavailable` naming the Debian packages to install when a tool is missing."""
    missing = [package for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("busybox", "busybox-static"),
                                             ("dpkg-deb", "dpkg"), ("apt-get", "apt"))
               if shutil.which(tool) is None]
    if missing:
        raise VmUnavailable("missing tools; install the Debian packages: apt-get install " + " ".join(missing))
    busybox = Path(shutil.which("busybox"))
    if b"ld-linux" in busybox.read_bytes()[:4096]:  # a program interpreter: dynamically linked
        raise VmUnavailable(f"{busybox} is not statically linked; apt-get install busybox-static")


def fetch_kernel(cache: Path = DEFAULT_CACHE) -> Kernel:
    """Download (once) and unpack Debian's stock kernel package; build its ``modules.dep``.

    Raises:
        VmUnavailable: apt cannot download the package.
    """
    for tree in sorted(cache.glob("linux-*/lib/modules/*")):
        if (tree / "modules.dep").is_file():
            boot = tree.parents[2] / "boot"
            return Kernel(tree.name, boot / f"vmlinuz-{tree.name}", tree)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        depends = subprocess.run(["apt-cache", "depends", KERNEL_PACKAGE], capture_output=True, text=True).stdout
        image = next((line.split(":", 1)[1].strip() for line in depends.splitlines()
                      if line.strip().startswith("Depends: linux-image-")), None)
        if image is None:
            raise VmUnavailable(f"apt knows no {KERNEL_PACKAGE} here (apt-get update?)")
        done = subprocess.run(["apt-get", "download", image], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if done.returncode or not debs:
            raise VmUnavailable(f"apt-get download {image} failed: {done.stderr.strip()[-300:]}")
        unpacked = Path(tmp) / "tree"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True)
        release = next((unpacked / "lib" / "modules").iterdir()).name
        subprocess.run(["busybox", "depmod", "-b", str(unpacked), release], check=True)
        final = cache / f"linux-{release}"
        shutil.rmtree(final, ignore_errors=True)
        unpacked.rename(final)  # complete trees only: a half-unpacked one never has this name
    return fetch_kernel(cache)


# ------------------------------------------------------------------------------------------------ initramfs


def write_cpio(path: Path, entries: list[tuple[str, int, bytes]]) -> None:
    """Write a ``newc`` cpio archive (what the kernel unpacks as an initramfs) of (name, mode, data) entries.

    For a device node, ``data`` is empty and ``mode`` carries the type; its numbers come from :data:`DEVICE_NODES`.
    """
    with path.open("wb") as out:
        for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
            encoded = name.encode() + b"\0"
            major, minor = DEVICE_NODES.get(name, (0, 0))
            fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(encoded), 0)
            header = b"070701" + b"".join(f"{v:08X}".encode() for v in fields)
            out.write(header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4))
            out.write(data + b"\0" * (-len(data) % 4))


DEVICE_NODES = {"dev/console": (5, 1)}  # the kernel gives init its stdin/stdout/stderr on /dev/console

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do insmod "/modules/$m" || echo "rdedge-vm: insmod $m failed"; done
out=$(sed -n 's/.*rdedge.out=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=1048576,cache=loose hostroot /lower
mount -t tmpfs -o size=75% tmpfs /rw; mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot
mkdir -p "/newroot$out"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 out "/newroot$out"
umount /proc /sys; mount --move /dev /newroot/dev
exec switch_root /newroot /bin/sh "$out/inside.sh"
"""

INSIDE = """set -u
exec > {out}/inside.log 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
mkdir -p /dev/shm /run /tmp && mount -t tmpfs tmpfs /dev/shm
busybox ifconfig lo 127.0.0.1 up
for m in {modules}; do
  busybox insmod "{tree}/$m" $( [ "${{m##*/}}" = vivid.ko ] && echo {vivid_options} ) \\
    || echo "rdedge-vm: insmod $m failed"
done
i=0; while [ ! -e /dev/video0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
cd {cwd}
env -i {env} {command} > {out}/output.log 2>&1
echo $? > {out}/rc
sync
busybox poweroff -f
"""


def build_initramfs(kernel: Kernel, path: Path) -> None:
    """An initramfs of static busybox, the modules to mount a 9p root, and the boot script above."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    modules = kernel.modules_with_dependencies(BOOT_MODULES)
    dirs = ("bin", "dev", "proc", "sys", "modules", *sorted({f"modules/{Path(m).parent}" for m in modules}))
    entries = [(d, stat.S_IFDIR | 0o755, b"") for d in _with_parents(dirs)]
    entries += [("dev/console", stat.S_IFCHR | 0o600, b""), ("bin/busybox", stat.S_IFREG | 0o755, busybox),
                ("init", stat.S_IFREG | 0o755, INIT.encode()),
                ("modules.list", stat.S_IFREG | 0o644, "\n".join(modules).encode())]
    entries += [(f"modules/{m}", stat.S_IFREG | 0o644, (kernel.modules / m).read_bytes()) for m in modules]
    write_cpio(path, entries)


def _with_parents(dirs: tuple[str, ...]) -> list[str]:
    every = {str(parent) for d in dirs for parent in [Path(d), *Path(d).parents] if str(parent) != "."}
    return sorted(every, key=lambda d: (d.count("/"), d))


# ------------------------------------------------------------------------------------------------ running


@dataclass(frozen=True)
class VmRun:
    """What a command run in the VM left: its exit status (None when it never finished), its output, the console."""

    returncode: int | None
    output: str
    console: str

    def explain(self) -> str:
        """Output and the end of the console, for an assertion message."""
        return f"exit status {self.returncode}\n--- output ---\n{self.output}\n--- console ---\n{self.console[-3000:]}"


TCG_CPU = "max,-avx,-avx2,-fma,-f16c,-avx-vnni"
"""The emulated CPU (``RDEDGE_VM_TCG_CPU`` overrides it): QEMU's, without the AVX family. QEMU 7.2 emulates AVX2 and
FMA instruction by instruction, and onnxruntime picks those kernels when the CPU has them: one 128 px detector call
took 12.5 s in the VM with ``max``, 1.2 s without AVX (2 vCPUs; SSE kernels, which TCG translates well). The checks
test the camera stack, not the CPU's vector extensions."""


def use_kvm() -> bool:
    """Whether to ask QEMU for KVM (``RDEDGE_VM_ACCEL=kvm``); by default it emulates the CPU (TCG).

    Emulation is the default because it works everywhere: on this workplace's machines (themselves VMs)
    ``/dev/kvm`` opens, but the nested guest's kernel stalls right after decompression. Emulation is several times
    slower than KVM, which the tests allow for (the VM boots in ~5 s; the models they run are small).
    """
    return os.environ.get("RDEDGE_VM_ACCEL", "tcg") == "kvm"


def run_in_vm(command: list[str], out_dir: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None,
              memory_mb: int = 6144, cpus: int | None = None, timeout_s: float = 900,
              cache: Path = DEFAULT_CACHE) -> VmRun:
    """Boot the VM, load ``vivid`` (``/dev/video0``), run ``command`` there and power off.

    Args:
        command: The program and its arguments, run with ``cwd`` as working directory.
        out_dir: A directory shared read-write with the VM (everything else is read-only there); receives
            ``output.log`` (the command's stdout and stderr), ``rc`` and ``console.log``.
        cwd: Working directory in the VM (default: the current one; the VM sees this machine's paths).
        env: Environment of the command (default: this process's PATH, HOME, VIRTUAL_ENV, CI and RDEDGE_*).
        memory_mb: VM memory; the overlay that receives writes outside ``out_dir`` lives in it.
        cpus: Virtual CPUs (default: this machine's count).
        timeout_s: The VM is killed after this long.
        cache: Where the kernel package is kept.

    Raises:
        VmUnavailable: QEMU, busybox or the kernel package cannot be had.
    """
    require_tools()
    kernel = fetch_kernel(cache)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    initramfs = out_dir / "initramfs.cpio"
    build_initramfs(kernel, initramfs)
    if env is None:
        env = {k: v for k, v in os.environ.items()
               if k in ("PATH", "HOME", "VIRTUAL_ENV", "CI", "LANG") or k.startswith("RDEDGE_")}
    env = {"PYTHONDONTWRITEBYTECODE": "1", **env}
    camera = kernel.modules_with_dependencies((CAMERA_MODULE,))
    (out_dir / "inside.sh").write_text(INSIDE.format(
        modules=" ".join(camera), tree=shlex.quote(str(kernel.modules)), vivid_options=VIVID_OPTIONS,
        cwd=shlex.quote(str(cwd or Path.cwd())), out=shlex.quote(str(out_dir)),
        env=" ".join(shlex.quote(f"{k}={v}") for k, v in env.items()), command=shlex.join(command)))
    for stale in ("rc", "output.log"):
        (out_dir / stale).unlink(missing_ok=True)
    qemu = ["qemu-system-x86_64", "-nodefaults", "-no-reboot", "-nographic", "-m", str(memory_mb),
            "-smp", str(cpus or os.cpu_count() or 1), "-kernel", str(kernel.vmlinuz), "-initrd", str(initramfs),
            "-append", f"console=ttyS0 earlyprintk=serial panic=-1 rdedge.out={out_dir}",
            "-serial", f"file:{out_dir / 'console.log'}", "-monitor", "none",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={out_dir},mount_tag=out,security_model=none"]
    if use_kvm():
        qemu += ["-enable-kvm", "-cpu", os.environ.get("RDEDGE_VM_CPU", "host,-arch-capabilities")]
    else:
        qemu += ["-cpu", os.environ.get("RDEDGE_VM_TCG_CPU", TCG_CPU)]
    try:
        done = subprocess.run(qemu, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
        qemu_messages = done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        qemu_messages = f"(killed after {timeout_s:.0f} s)"
    rc_file, output = out_dir / "rc", out_dir / "output.log"
    return VmRun(int(rc_file.read_text()) if rc_file.is_file() else None,
                 output.read_text(errors="replace") if output.is_file() else "",
                 qemu_messages + "".join(f.read_text(errors="replace") for f in (out_dir / "console.log",
                                         out_dir / "inside.log") if f.is_file()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Everything after -- is the command to run in the VM.")
    parser.add_argument("--out", type=Path, default=None, help="directory shared with the VM (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before the VM is killed")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (python -m tests.camera_vm -- COMMAND ...)")
    out = args.out or Path(tempfile.mkdtemp(prefix="rdedge-vm-"))
    run = run_in_vm(command, out, timeout_s=args.timeout)
    print(run.output, end="")
    if run.returncode is None:
        print(run.console[-3000:], file=sys.stderr)
        return 1
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
