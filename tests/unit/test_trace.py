"""`ppml-build trace`'s pure core: strace parsing and the manifest comparison, Gramine's way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ppml_build.cli import main
from ppml_build.image.rootfs import DirRootFS
from ppml_build.trace import run as trace_run
from ppml_build.trace.comparison import compare, image_lookup
from ppml_build.trace.manifest_view import ManifestView
from ppml_build.trace.parse import FileAccess, parse_strace
from ppml_build.trace.report import hash_everything_size, report_document
from ppml_build.trace.suggest import suggest

# Real shapes of `strace -f -qq -y -s 4096 -e trace=%file,execve,execveat` lines (JVM, bash,
# Python), including an interleaved unfinished/resumed pair and a thread's execve.
LOG = r"""
9     execve("/opt/spark/bin/spark-submit", ["/opt/spark/bin/spark-submit", "--master"], 0x7ffd /* 11 vars */) = 0
9     execve("/opt/spark/bin/bash", ["bash"], 0x7ffc /* 11 vars */) = -1 ENOENT (No such file or directory)
9     execve("/usr/bin/bash", ["bash", "/opt/spark/bin/spark-submit"], 0x7ffc /* 11 vars */) = 0
9     openat(AT_FDCWD</app>, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3</etc/ld.so.cache>
9     newfstatat(3</etc/ld.so.cache>, "", {st_mode=S_IFREG|0644, st_size=7999, ...}, AT_EMPTY_PATH) = 0
9     openat(AT_FDCWD</app>, "/usr/lib/jvm/jdk/bin/../lib/libjli.so", O_RDONLY|O_CLOEXEC) = 3</usr/lib/jvm/jdk/lib/libjli.so>
9     openat(AT_FDCWD</app>, "/usr/lib/jvm/jdk/lib/jvm.cfg", O_RDONLY) = 3</etc/java/jvm.cfg>
9     openat(AT_FDCWD</app>, "job.py", O_RDONLY) = 3</app/job.py>
13    openat(AT_FDCWD</app>, "/opt/spark/jars/a.jar", O_RDONLY <unfinished ...>
14    openat(3</opt/spark/conf>, "spark-defaults.conf", O_RDONLY) = -1 ENOENT (No such file or directory)
14    openat(4</opt/spark/conf>, "log4j2.properties", O_RDONLY|O_CLOEXEC) = 5</opt/spark/conf/log4j2.properties>
13    <... openat resumed>) = 39</opt/spark/jars/a.jar>
13    openat(AT_FDCWD</app>, "/opt/spark/jars", O_RDONLY|O_NONBLOCK|O_CLOEXEC|O_DIRECTORY) = 40</opt/spark/jars>
13    openat(AT_FDCWD</app>, "/opt/spark/bin", O_RDONLY|O_PATH) = 41</opt/spark/bin>
13    openat(AT_FDCWD</app>, "/tmp/blockmgr-1/0c/shuffle_0.data", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 42</tmp/blockmgr-1/0c/shuffle_0.data>
13    openat(AT_FDCWD</app>, "/app/spark-warehouse/x", O_RDWR|O_CREAT, 0644) = 43</app/spark-warehouse/x>
13    creat("/opt/out.log", 0644) = 44</opt/out.log>
13    openat(AT_FDCWD</app>, "/proc/self/mountinfo", O_RDONLY) = 4</proc/13/mountinfo>
13    openat(AT_FDCWD</app>, "/dev/null", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3</dev/null>
13    openat(AT_FDCWD</app>, "/etc/hosts", O_RDONLY|O_CLOEXEC) = 4</etc/hosts>
13    openat(AT_FDCWD</app>, "/opt/we\x69rd\040name \"q\".txt", O_RDONLY) = 4</opt/weird name "q".txt>
[pid    20] openat(AT_FDCWD</app>, "/usr/bin/ps", O_RDONLY) = 3</usr/bin/ps>
20    --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=11, si_status=0} ---
21    execve("/usr/lib/jvm/jdk/lib/jspawnhelper", ["jspawnhelper", "15:17"], 0x7ff /* 18 vars */ <unfinished ...>
13    +++ exited with 0 +++
19    <... execve resumed>)             = 0
22    chdir("/data")                    = 0
22    execve("./tool", ["./tool"], 0x7ff /* 3 vars */) = 0
"""


def by_path(accesses):
    return {a.path: a for a in accesses}


def test_parse_joins_resumed_calls_and_normalises_paths_lexically():
    seen = by_path(parse_strace(LOG, cwd="/app"))
    # .. is folded lexically (as Gramine checks it), never through the symlink.
    assert "/usr/lib/jvm/jdk/lib/libjli.so" in seen
    jvm_cfg = seen["/usr/lib/jvm/jdk/lib/jvm.cfg"]
    assert jvm_cfg.kernel_path == "/etc/java/jvm.cfg" and jvm_cfg.ok
    assert seen["/app/job.py"].ok  # relative to the AT_FDCWD directory
    assert seen["/opt/spark/conf/log4j2.properties"].ok  # relative to a directory fd
    assert seen["/opt/spark/conf/spark-defaults.conf"].errno == "ENOENT"
    jar = seen["/opt/spark/jars/a.jar"]  # <unfinished ...> joined with its <... resumed>
    assert jar.ok and jar.pid == 13 and jar.kernel_path == "/opt/spark/jars/a.jar"
    assert seen["/opt/spark/jars"].directory
    assert seen["/opt/spark/bin"].path_only
    assert seen['/opt/weird name "q".txt'].ok  # \x.. and octal escapes, quotes
    assert seen["/usr/bin/ps"].pid == 20  # the "[pid N]" prefix form


def test_parse_execs_writes_and_a_threads_execve():
    accesses = parse_strace(LOG, cwd="/app")
    execs = [(a.path, a.ok) for a in accesses if a.is_exec]
    assert ("/opt/spark/bin/bash", False) in execs  # PATH probing: failed, reads nothing
    assert ("/usr/bin/bash", True) in execs
    # A thread (pid 21) execs; the kernel reports it done under the leader's pid (19).
    assert ("/usr/lib/jvm/jdk/lib/jspawnhelper", True) in execs
    assert ("/data/tool", True) in execs  # relative exec after chdir
    writes = {a.path for a in accesses if a.write}
    assert {
        "/tmp/blockmgr-1/0c/shuffle_0.data",
        "/app/spark-warehouse/x",
        "/opt/out.log",
        "/dev/null",
    } <= writes
    assert not by_path(accesses)["/etc/ld.so.cache"].write


MANIFEST = """
libos.entrypoint = "/opt/spark/bin/spark-submit"
[loader]
argv = ["/opt/spark/bin/spark-submit", "/app/job.py"]
[loader.entrypoint]
uri = "file:/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"
[loader.env]
LD_LIBRARY_PATH = "/lib:/usr/lib/x86_64-linux-gnu"
SECRET = { passthrough = true }
LANG = { value = "C.UTF-8" }
[fs]
start_dir = "/app"
mounts = [
  { path = "/lib", uri = "file:/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc" },
  { type = "tmpfs", path = "/tmp" },
  { type = "encrypted", path = "/data/enc", uri = "file:/data/enc", key_name = "default" },
]
[fs.root]
uri = "file:/"
[sgx]
allowed_files = ["file:/data/out", "dev:/dev/null"]
[[sgx.trusted_files]]
uri = "file:/usr/lib/jvm/jdk/lib/jvm.cfg"
sha256 = "00"
[[sgx.trusted_files]]
uri = "file:/usr/lib/jvm/jdk/lib/libjli.so"
sha256 = "00"
[[sgx.trusted_files]]
uri = "file:/etc/java/security.conf"
sha256 = "00"
[[sgx.trusted_files]]
uri = "file:/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc/libc.so.6"
sha256 = "00"
[[sgx.trusted_files]]
uri = "file:/app/never-read.txt"
sha256 = "00"
"""


def test_manifest_view_reads_trusted_allowed_mounts_and_env():
    view = ManifestView.from_text(MANIFEST, "test.manifest")
    assert "/usr/lib/jvm/jdk/lib/jvm.cfg" in view.trusted
    assert view.start_dir == "/app" and view.argv[1] == "/app/job.py"
    assert view.env == {"LD_LIBRARY_PATH": "/lib:/usr/lib/x86_64-linux-gnu", "LANG": "C.UTF-8"}
    # Gramine's allowed files: equal or below, on a path-component boundary.
    assert view.is_allowed("/data/out") and view.is_allowed("/data/out/part-0.parquet")
    assert not view.is_allowed("/data/outside")
    assert view.placement("/tmp/x") == ("tmpfs", "/tmp/x")
    assert view.placement("/data/enc/a") == ("encrypted", "/data/enc/a")
    assert view.placement("/lib/libc.so.6") == (
        "chroot",
        "/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc/libc.so.6",
    )
    assert view.placement("/library/x") == ("root", "/library/x")


def test_manifest_view_refuses_garbage_in_one_line():
    from ppml_build.errors import ManifestError

    with pytest.raises(ManifestError) as info:
        ManifestView.from_text("sgx = [", "image:/ppml/x.manifest.sgx")
    assert "image:/ppml/x.manifest.sgx" in str(info.value) and "\n" not in str(info.value)


def lookup_from(table: dict[str, tuple[str, int]]):
    return lambda path: table.get(path)


IMAGE = {
    "/usr/lib/jvm/jdk/lib/jvm.cfg": ("file", 10),
    "/usr/lib/jvm/jdk/lib/libjli.so": ("file", 2000),
    "/etc/java/security.conf": ("file", 30),
    "/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc/libc.so.6": ("file", 5000),
    "/app/never-read.txt": ("file", 7),
    "/app/job.py": ("file", 100),
    "/usr/bin/ps": ("file", 400),
    "/opt/spark/jars": ("dir", 0),
    "/data/out": ("dir", 0),
}


def access(path, **kw):
    return FileAccess(
        pid=1, syscall=kw.pop("syscall", "openat"), path=path, ok=kw.pop("ok", True), **kw
    )


def test_compare_finds_what_the_enclave_would_refuse():
    view = ManifestView.from_text(MANIFEST, "m")
    report = compare(
        [
            access("/usr/lib/jvm/jdk/lib/jvm.cfg"),  # trusted under the name the app used
            access("/usr/lib/jvm/jdk/lib/libjli.so"),
            access("/usr/lib/jvm/jdk/lib/libjli.so"),  # twice: counted once
            access("/etc/java/jvm-link.cfg"),  # hash of the target is trusted, this name is not
            access("/app/job.py"),  # in the image, not trusted
            access("/usr/bin/ps", syscall="execve"),
            access("/lib/libc.so.6"),  # the /lib mount: trusted under the runtime's path
            access("/data/out/sales.parquet/part-0"),  # allowed
            access("/data/out/new", write=True),  # allowed write
            access("/tmp/spark/x", write=True),  # tmpfs
            access("/data/enc/secret"),  # encrypted mount
            access("/opt/spark/jars"),  # a directory: always allowed
            access("/proc/self/status"),
            access("/dev/null", write=True),
            access("/etc/hosts"),
            access("/nope", ok=False, errno="ENOENT"),
            access("/app/spark-warehouse/x", write=True),
            access("/usr/lib/jvm/jdk/lib/jvm.cfg", write=True),  # writing a trusted file
        ],
        view,
        lookup_from(IMAGE),
    )
    assert [(f.path, f.in_image) for f in report.untrusted_reads] == [
        ("/app/job.py", True),
        ("/etc/java/jvm-link.cfg", False),
        ("/usr/bin/ps", True),
    ]
    assert [f.path for f in report.bad_writes] == [
        "/app/spark-warehouse/x",
        "/usr/lib/jvm/jdk/lib/jvm.cfg",
    ]
    assert report.trusted_read == 3 and report.allowed_read == 1
    assert [(f.path, f.size) for f in report.unused_trusted] == [
        ("/app/never-read.txt", 7),
        ("/etc/java/security.conf", 30),
    ]
    assert not report.clean


def test_a_clean_trace_is_clean_and_the_suggestion_says_so():
    view = ManifestView.from_text(MANIFEST, "m")
    report = compare(
        [access("/usr/lib/jvm/jdk/lib/jvm.cfg"), access("/tmp/x", write=True)],
        view,
        lookup_from(IMAGE),
    )
    assert report.clean and not report.untrusted_reads and not report.bad_writes
    assert "nothing to change" in suggest(report)


def test_suggest_gives_recipe_yaml():
    import yaml

    view = ManifestView.from_text(MANIFEST, "m")
    report = compare(
        [
            access("/app/job.py"),
            access("/usr/bin/ps", syscall="execve"),
            access("/srv/input.csv"),  # not in the image: cannot be hashed
            access("/app/spark-warehouse/x", write=True),
        ],
        view,
        lookup_from(IMAGE),
    )
    text = suggest(report, recipe_trusted=["/app/never-read.txt", "/opt/lib/"])
    data = yaml.safe_load(text)
    assert data["files"]["trusted"] == ["/app/job.py", "/usr/bin/ps"]
    assert data["files"]["allowed"] == ["/srv/input.csv", "/app/spark-warehouse/"]
    assert "#   - /app/never-read.txt" in text  # listed by the recipe, never opened


def test_image_lookup_follows_symlinks_inside_the_image(tmp_path):
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/a.so").write_bytes(b"x" * 10)
    os.symlink("usr/lib", root / "lib")
    os.symlink("/../../../etc/passwd", root / "escape")  # resolved inside the image only
    lookup = image_lookup(DirRootFS(root))
    assert lookup("/lib/a.so") == ("file", 10)
    assert lookup("/lib") == ("dir", lookup("/usr/lib")[1])
    assert lookup("/escape") is None and lookup("/missing") is None


def test_hash_everything_walks_like_gsc(tmp_path):
    root = tmp_path / "root"
    for rel, size in (
        ("usr/lib/a.so", 100),
        ("usr/bin/tool", 10),
        ("opt/app/app.jar", 1000),
        ("var/log/x.log", 5),
        ("etc/shadow", 3),
        ("etc/hostname", 1),
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * size)
    os.symlink("usr/lib", root / "lib")  # merged /usr: GSC lists /lib/a.so again
    os.symlink("/opt", root / "opt/app/loop")  # a loop back to an ancestor: not re-walked
    os.symlink("missing", root / "dangling")
    entries, size = hash_everything_size(DirRootFS(root))
    # /usr/lib/a.so, /lib/a.so, /usr/bin/tool, /opt/app/app.jar, /etc/hostname
    assert (entries, size) == (5, 100 + 100 + 10 + 1000 + 1)


def test_trace_command_prints_findings_and_exits_1(monkeypatch, capsys, tmp_path):
    view = ManifestView.from_text(MANIFEST, "m")
    report = compare(
        [access("/app/job.py"), access("/usr/lib/jvm/jdk/lib/jvm.cfg")], view, lookup_from(IMAGE)
    )
    document = report_document(
        report,
        recipe="demo",
        image="ppml/demo:latest",
        exit_code=0,
        shipped=(5, 7047),
        everything=(20, 90000),
        seconds=1.0,
    )
    result = trace_run.TraceResult(report, document, suggest(report), "RESULT 1\n", "", 0)
    calls = []
    monkeypatch.setattr(trace_run, "run_trace", lambda *a, **kw: calls.append((a, kw)) or result)
    code = main(["trace", str(tmp_path / "recipe.yaml"), "--suggest"])
    out = capsys.readouterr().out
    assert code == 1
    assert "untrusted reads (the enclave would refuse them): 1" in out
    assert "  /app/job.py [openat]" in out
    assert "hash every file (GSC's way):" in out and "- /app/job.py" in out
    assert calls[0][1]["image"] is None

    monkeypatch.setattr(
        trace_run,
        "run_trace",
        lambda *a, **kw: trace_run.TraceResult(
            compare([], view, lookup_from(IMAGE)),
            document | {"clean": True, "untrusted_reads": []},
            "",
            "",
            "",
            0,
        ),
    )
    assert main(["trace", str(tmp_path / "recipe.yaml"), "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["manifest_size"]["hash_everything"] == {
        "trusted_entries": 20,
        "bytes_hashed": 90000,
    }


def test_tracing_dockerfile_adds_strace_and_keeps_the_user():
    text = trace_run.tracing_dockerfile("sha256:" + "a" * 64, "spark")
    lines = text.splitlines()
    assert lines[0] == "FROM sha256:" + "a" * 64 and lines[1] == "USER root"
    assert "strace" in lines[2] and lines[-1] == "USER spark"
    assert trace_run.tracing_dockerfile("sha256:" + "a" * 64, None).splitlines()[-1] != "USER None"


def test_strace_arguments_cover_execs_and_full_paths():
    args = trace_run.STRACE_ARGS
    assert args[:2] == ["strace", "-f"] and "-y" in args
    assert args[args.index("-s") + 1] == "4096"
    assert "execve" in args[args.index("-e") + 1]
    assert Path(args[args.index("-o") + 1]).parent == Path(trace_run.TRACE_DIR)


# --- what trace found in the bundled recipes is covered by the kind templates ------------------

FLINK_RECIPE = """\
apiVersion: ppml-build/v1
kind: flink
name: pyflink-demo
base: {image: "127.0.0.1:5000/ppml/flink:1"}
app:
  files: [{src: job.py, dest: /app/job.py}]
  command: [/opt/pyflink/bin/python3, /app/job.py]
runtime: {python: /opt/pyflink/bin/python3}
"""


def flink_rootfs(root: Path, *, linked: bool) -> Path:
    from rootfs_factory import make_spark_rootfs

    make_spark_rootfs(root)
    for rel in (
        "opt/flink/bin/flink",
        "opt/flink/lib/flink-dist.jar",
        "opt/flink/table/__init__.py",
        "usr/bin/ps",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    site = root / "opt/pyflink/lib/python3.11/site-packages"
    if linked:  # what base_images/flink does: the package path is a link to FLINK_HOME
        os.symlink("/opt/flink", site / "pyflink")
    else:
        (site / "pyflink").mkdir()
        (site / "pyflink/__init__.py").write_text("")
    return root


def render(text: str, root: Path):
    from rootfs_factory import add_ppml_support

    from ppml_build.gramine.manifest import render_manifest
    from ppml_build.plan import make_plan
    from ppml_build.recipe import load_recipe_text

    recipe = load_recipe_text(text)
    add_ppml_support(root, make_plan(recipe))
    return render_manifest(recipe, make_plan(recipe), DirRootFS(root))


def test_pyflink_imported_through_the_link_is_trusted_via_a_mount(tmp_path):
    root = flink_rootfs(tmp_path / "root", linked=True)
    rendered = render(FLINK_RECIPE, root)
    link = "/opt/pyflink/lib/python3.11/site-packages/pyflink"
    assert {"path": link, "uri": "file:/opt/flink"} in rendered.manifest["fs"]["mounts"]
    # Flink's log files go to the enclave's scratch space, not $FLINK_HOME/log.
    assert rendered.manifest["loader"]["env"]["FLINK_LOG_DIR"] == "/tmp/flink-log"
    view = ManifestView.from_text(rendered.text, "m")
    report = compare(
        [
            access(f"{link}/table/__init__.py"),
            access("/tmp/flink-log/flink-root-python.log", write=True),
        ],
        view,
        image_lookup(DirRootFS(root)),
    )
    assert report.clean and report.trusted_read == 1


def test_no_mount_when_pyflink_is_a_real_directory(tmp_path):
    rendered = render(FLINK_RECIPE, flink_rootfs(tmp_path / "root", linked=False))
    assert [m for m in rendered.manifest["fs"]["mounts"] if "pyflink" in m["path"]] == []


def test_spark_template_trusts_what_spark_reads_but_no_program_it_would_start(tmp_path):
    from rootfs_factory import make_spark_rootfs

    root = make_spark_rootfs(tmp_path / "root")
    for rel in ("usr/bin/ps", "usr/bin/rm", "usr/lib/locale/C.utf8/LC_CTYPE", "etc/gai.conf"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    text = FLINK_RECIPE.replace("kind: flink", "kind: spark").replace(
        "[/opt/pyflink/bin/python3, /app/job.py]", "[spark-submit, /app/job.py]"
    )
    uris = {tf.uri for tf in render(text, root).trusted_files}
    assert {"file:/usr/lib/locale/C.utf8/LC_CTYPE", "file:/etc/gai.conf"} <= uris
    # A running JVM never starts ps, rm, setsid... in the enclave (launch.py): none is trusted.
    assert not uris & {"file:/usr/bin/ps", "file:/usr/bin/rm", "file:/usr/bin/setsid"}


def test_children_the_libos_would_never_fork_are_not_the_enclaves_to_trust():
    """With sys.disallow_subprocesses the LibOS fails every fork: what a child process read
    natively (rm, getconf, its libraries) is reported as a refused start, not as untrusted."""
    view = ManifestView(frozenset({"/usr/bin/java"}), (), (), (), no_subprocesses=True)
    accesses = [
        FileAccess(10, "execve", "/usr/bin/java", True),
        FileAccess(11, "openat", "/dev/null", True),  # the vfork child, before exec
        FileAccess(11, "execve", "/usr/lib/jvm/x/lib/jspawnhelper", True),
        FileAccess(11, "execve", "/usr/bin/rm", True),
        FileAccess(11, "openat", "/lib/x86_64-linux-gnu/libc.so.6", True),
        FileAccess(12, "openat", "/etc/secret", True),  # a JVM thread: still checked
    ]
    lookup = lambda path: ("file", 1)  # noqa: E731
    report = compare(accesses, view, lookup)
    assert [f.path for f in report.untrusted_reads] == ["/etc/secret"]
    assert report.refused_starts == ["/usr/bin/rm"]  # what the child ran, after jspawnhelper
    # Without the key the child is the enclave's to check, as before.
    open_view = ManifestView(frozenset({"/usr/bin/java"}), (), (), ())
    paths = [f.path for f in compare(accesses, open_view, lookup).untrusted_reads]
    assert "/usr/bin/rm" in paths and "/etc/secret" in paths
