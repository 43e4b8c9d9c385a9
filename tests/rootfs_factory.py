"""Build small image-like root filesystems on disk for manifest tests (no Docker)."""

from __future__ import annotations

import os
from pathlib import Path

GRAMINE = "usr/lib/x86_64-linux-gnu/gramine"
JAVA_HOME = "usr/lib/jvm/java-17-openjdk-amd64"


def _write(root: Path, rel: str, data: bytes | str, mode: int = 0o644) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


def make_spark_rootfs(root: Path, *, libpal: bytes = b"\x7fELF stand-in libpal") -> Path:
    """A merged-/usr Debian-like tree with a JDK, a Spark distribution and a Gramine install.

    It has the traps real images have: /lib -> usr/lib, /opt/spark -> spark-3.5.3 (a symlinked
    directory), the JDK's conf/ pointing to /etc (absolute link), a symlink that would escape the
    root if resolved on the host, a dangling link, a fifo and an unreadable-by-others file.
    """
    root.mkdir(parents=True, exist_ok=True)
    for rel in ("usr/lib", "usr/bin", "opt", "etc", "app", "tmp"):
        (root / rel).mkdir(parents=True, exist_ok=True)
    os.symlink("usr/lib", root / "lib")
    os.symlink("usr/bin", root / "bin")
    _write(root, f"{GRAMINE}/sgx/libpal.so", libpal)
    _write(root, f"{GRAMINE}/libsysdb.so", b"stand-in libsysdb")
    _write(root, f"{GRAMINE}/runtime/glibc/libc.so.6", b"patched glibc")
    _write(root, f"{GRAMINE}/runtime/glibc/ld-linux-x86-64.so.2", b"patched ld.so")
    _write(root, "usr/lib/x86_64-linux-gnu/libz.so.1.2.13", b"zlib" * 1000)
    os.symlink("libz.so.1.2.13", root / "usr/lib/x86_64-linux-gnu/libz.so.1")
    _write(root, f"{JAVA_HOME}/bin/java", b"java launcher", 0o755)
    _write(root, f"{JAVA_HOME}/lib/server/libjvm.so", os.urandom(300_000))
    _write(root, f"{JAVA_HOME}/lib/modules", os.urandom(1_000_000))
    os.symlink("/etc/java-17-openjdk", root / JAVA_HOME / "conf")
    _write(root, "etc/java-17-openjdk/security/java.security", "securerandom.source=...\n")
    os.symlink(f"/{JAVA_HOME}/bin/java", root / "usr/bin/java")
    _write(root, "usr/bin/bash", b"bash binary", 0o755)
    _write(root, "usr/bin/dash", b"dash binary", 0o755)
    os.symlink("dash", root / "usr/bin/sh")  # Debian's /bin/sh
    _write(root, "usr/bin/env", b"env binary", 0o755)
    _write(root, "usr/bin/python3.11", b"python binary", 0o755)
    os.symlink("python3.11", root / "usr/bin/python3")
    _write(root, "usr/lib/python3.11/os.py", "import abc\n")
    _write(root, "usr/lib/python3/dist-packages/site.pth", "\n")
    # The base images' virtualenvs (pyspark / pyflink live there): bin/python3 links the system
    # interpreter, pyvenv.cfg marks the venv.
    for venv in ("opt/pyspark", "opt/pyflink"):
        _write(root, f"{venv}/pyvenv.cfg", "home = /usr/bin\n")
        (root / venv / "bin").mkdir(parents=True)
        os.symlink("/usr/bin/python3.11", root / venv / "bin/python3")
        _write(root, f"{venv}/lib/python3.11/site-packages/module.py", "x = 1\n")
    spark = "opt/spark-3.5.3"
    _write(
        root,
        f"{spark}/bin/spark-submit",
        '#!/usr/bin/env bash\nexec "${SPARK_HOME}"/bin/spark-class "$@"\n',
        0o755,
    )
    _write(root, f"{spark}/bin/spark-class", "#!/usr/bin/env bash\n", 0o755)
    for index in range(12):
        _write(root, f"{spark}/jars/lib-{index:02d}.jar", os.urandom(20_000 + index))
    _write(root, f"{spark}/jars/.hidden-index", b"dotfiles are included")
    _write(root, f"{spark}/conf/spark-defaults.conf", "spark.ui.enabled false\n")
    os.symlink("../conf", root / spark / "jars/conf-link")  # symlinked dir: not descended
    os.symlink("/etc/shadow-on-host", root / spark / "jars/dangling")  # dangling inside root
    os.symlink("../../../../../../etc/os-release", root / spark / "jars/escape")  # clamps at root
    os.mkfifo(root / spark / "jars/a-fifo")
    os.symlink("spark-3.5.3", root / "opt/spark")
    _write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
    _write(root, "etc/os-release", "PRETTY_NAME=image\n")
    _write(root, "etc/ld.so.cache", b"cache")
    _write(root, "app/job.py", "print('job')\n")
    return root


def add_ppml_support(root: Path, plan) -> Path:
    """What `ppml-build build`'s support stage puts under /ppml (launch.py), without Docker:
    the real launcher, wrapper and hosts file, stand-in jars, and a Spark launcher output of
    the shape org.apache.spark.launcher.Main prints for the plan's arguments."""
    from ppml_build.plan import launch as L

    support = L.SUPPORT_SOURCES
    for rel in ("bin/ppml-launch.py", "bin/spark-submit", "etc/hosts"):
        _write(
            root,
            f"ppml/{rel}",
            (support / rel).read_bytes(),
            0o755 if rel.startswith("bin/") else 0o644,
        )
    for jar in plan.launch.support_jars:
        _write(root, jar.lstrip("/"), b"PK stand-in jar " + jar.encode())
    if not (root / "usr/bin/dash").exists():
        _write(root, "usr/bin/dash", b"dash binary", 0o755)
        os.symlink("dash", root / "usr/bin/sh")
    output = plan.launch.spark_launcher_output
    if output is not None:
        args = list(plan.launch.spark_launcher_args)
        command = [
            f"/{JAVA_HOME}/bin/java",
            "-cp",
            "/opt/spark/conf/:/opt/spark/jars/*",
            "-Xmx1g",
            L.SPARK_SUBMIT_CLASS,
        ] + args
        _write(root, output.lstrip("/"), b"\0\n" + "".join(a + "\0" for a in command).encode())
        if plan.launch.jvm_args_lines:
            _write(
                root,
                plan.launch.jvm_args_lines.lstrip("/"),
                "".join(arg + "\n" for arg in command).encode(),
            )
        _write(
            root,
            (output + L.LAUNCH_INPUT_SUFFIX).lstrip("/"),
            "".join(arg + "\0" for arg in args).encode(),
        )
    return root
