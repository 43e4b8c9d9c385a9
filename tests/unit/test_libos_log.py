"""What Gramine 1.9's LibOS itself said under gramine-direct (log level trace), and how
`ppml-build trace` reports and suggests it.

The log lines are real: copied from gramine-direct runs of the bundled jobs on this project's
images (a few are the same lines with another path or thread, marked as such).
"""

from __future__ import annotations

import json

import pytest
import yaml

from ppml_build.cli import main
from ppml_build.gramine.direct import LibosRefusal, LibosReport, read_libos_log
from ppml_build.trace import run as trace_run
from ppml_build.trace.comparison import compare
from ppml_build.trace.manifest_view import ManifestView
from ppml_build.trace.report import libos_lines, merge_libos, report_document
from ppml_build.trace.run import libos_run_problem
from ppml_build.trace.suggest import NATIVE_ESTIMATE, combined_suggestion, suggest, suggest_libos


def log(text: str) -> str:
    return text.strip("\n") + "\n"


def split_like_gramine(prefix: str, message: str) -> str:
    """One syscall message as libos_parser.c's buf_write_all logs it: a line per full 256-byte
    print buffer, each behind the thread's prefix."""
    chunks = [message[i : i + 256] for i in range(0, len(message), 256)]
    return "\n".join(
        f"(libos_parser.c:1701:buf_write_all) {prefix} trace: {chunk}" for chunk in chunks
    )


# --- refused files ------------------------------------------------------------------------------

# spark-java-pi with jvm.cfg and libnet.so left out of sgx.trusted_files.
JVM_REFUSALS = log(r"""
(fs.c:405:is_open_allowed) [P1:T1:java] warning: Disallowing access to file 'jvm.cfg'; file is not allowed.
(libos_parser.c:1701:buf_write_all) [P1:T1:java] trace: ---- openat(AT_FDCWD, "/usr/lib/jvm/java-17-openjdk-amd64/lib/jvm.cfg", O_RDONLY, 0000) = -13
(libos_parser.c:1701:buf_write_all) [P1:T1:java] trace: ---- openat(AT_FDCWD, "/usr/lib/jvm/java-17-openjdk-amd64/lib/jvm.cfg-default", O_RDONLY, 0000) = 0x3
(fs.c:405:is_open_allowed) [P1:T2:java] warning: Disallowing access to file 'libnet.so'; file is not allowed.
(libos_parser.c:1701:buf_write_all) [P1:T2:java] trace: ---- openat(AT_FDCWD, "/usr/lib/jvm/java-17-openjdk-amd64/lib/libnet.so", O_RDONLY|0x80000, 0000) = -13
(libos_parser.c:1701:buf_write_all) [P1:T2:java] trace: ---- openat(AT_FDCWD, "/usr/lib/jvm/java-17-openjdk-amd64/bin/libnet.so", O_RDONLY|0x80000, 0000) = -2
(fs.c:405:is_open_allowed) [P1:T2:java] warning: Disallowing access to file 'libnet.so'; file is not allowed.
(libos_parser.c:1701:buf_write_all) [P1:T2:java] trace: ---- openat(AT_FDCWD, "/usr/lib/jvm/java-17-openjdk-amd64/bin/../lib/libnet.so", O_RDONLY|0x80000, 0000) = -13
""")


def test_a_refusal_takes_the_full_path_from_the_threads_next_call():
    report = read_libos_log(JVM_REFUSALS)
    # Gramine names only the dentry ('jvm.cfg'); the openat that failed names the path. The
    # JVM's ".../bin/../lib/libnet.so" is the same file, folded as the LibOS looks it up.
    assert report.refusals == [
        LibosRefusal("/usr/lib/jvm/java-17-openjdk-amd64/lib/jvm.cfg", 1, "openat"),
        LibosRefusal("/usr/lib/jvm/java-17-openjdk-amd64/lib/libnet.so", 1, "openat"),
    ]
    assert report.hash_mismatches == [] and report.processes == {1: "java"}


def test_other_threads_lines_between_a_refusal_and_its_call_do_not_steal_it():
    text = log(r"""
(fs.c:405:is_open_allowed) [P1:T1:python3.11] warning: Disallowing access to file 'nsswitch.conf'; file is not allowed.
(libos_parser.c:1701:buf_write_all) [P1:T2:python3.11] trace: ---- openat(AT_FDCWD, "/etc/hosts", O_RDONLY|0x80000, 0000) = -13
(libos_parser.c:1701:buf_write_all) [P1:T1:python3.11] trace: ---- openat(AT_FDCWD, "/etc/nsswitch.conf", O_RDONLY|0x80000, 0000) = -13
""")  # the T2 line is a real one with its thread and result changed
    assert read_libos_log(text).refusals == [LibosRefusal("/etc/nsswitch.conf", 1, "openat")]


def test_a_refusal_without_a_syscall_line_keeps_the_dentry_name():
    # At log level warning Gramine prints no syscall (and no "(file:line:function)" part).
    text = (
        "[P1:T1:python3.11] warning: Disallowing access to file 'nsswitch.conf'; file is "
        "not allowed.\n"
    )
    assert read_libos_log(text).refusals == [LibosRefusal("nsswitch.conf", 1, "?")]


def test_a_refusal_whose_next_call_names_another_file_keeps_the_dentry_name():
    text = log(r"""
(fs.c:405:is_open_allowed) [P1:T1:java] warning: Disallowing access to file 'jvm.cfg'; file is not allowed.
(libos_parser.c:1701:buf_write_all) [P1:T1:java] trace: ---- openat(AT_FDCWD, "/usr/lib/jvm/java-17-openjdk-amd64/lib/jvm.cfg-default", O_RDONLY, 0000) = 0x3
""")
    assert read_libos_log(text).refusals == [LibosRefusal("jvm.cfg", 1, "openat")]


def test_creating_refusals_with_and_without_their_syscall_line():
    text = log(r"""
(fs.c:502:is_create_allowed) [P1:T1:python3.11] warning: Disallowing creating file '//usr/lib/python3.11/__pycache__/x.cpython-311.pyc.123'; file is not trusted or allowed.
(libos_parser.c:1701:buf_write_all) [P1:T1:python3.11] trace: ---- openat(AT_FDCWD, "/usr/lib/python3.11/__pycache__/x.cpython-311.pyc.123", O_WRONLY|O_CREAT|O_EXCL|0x80000, 0644) = -13
(fs.c:502:is_create_allowed) [P2:T33:java] warning: Disallowing creating file '//app/spark-warehouse/_SUCCESS'; file is not trusted or allowed.
""")
    assert read_libos_log(text).refusals == [
        LibosRefusal("/usr/lib/python3.11/__pycache__/x.cpython-311.pyc.123", 1, "openat"),
        LibosRefusal("/app/spark-warehouse/_SUCCESS", 2, "?"),
    ]  # "//" folded


def test_a_refused_write_to_a_trusted_file_is_a_refusal():
    # fs.c is_open_allowed logs this one as an error.
    text = log(r"""
(fs.c:398:is_open_allowed) [P1:T1:java] error: Disallowing write/append to a trusted file 'app.log'
(libos_parser.c:1701:buf_write_all) [P1:T1:java] trace: ---- openat(AT_FDCWD, "/app/app.log", O_WRONLY|O_CREAT|O_APPEND, 0644) = -13
""")
    assert read_libos_log(text).refusals == [LibosRefusal("/app/app.log", 1, "openat")]


def test_a_refusal_in_a_call_that_blocks_takes_the_path_from_its_first_line():
    # execve may block: "---- execve(ARGS) ..." before (here split in three lines, as a message
    # longer than 256 bytes is), "return from execve(...)" after. The three lines are real.
    text = log(r"""
(libos_parser.c:1701:buf_write_all) [P2:T2:python3.11] trace: ---- execve("/opt/spark/./bin/spark-submit", [/opt/spark/./bin/spark-submit,--conf,spark.app.name=pyspark-sql-agg,--master,local[2],--driver-memory,1g,--conf,spark.ui.enabled=false,--driver-class-path,/ppml/lib/ppml-enclave-hadoop.jar,--conf,spark.hadoop.f
(libos_parser.c:1701:buf_write_all) [P2:T2:python3.11] trace: s.file.impl=org.ppmlbuild.enclave.hadoop.NioLocalFileSystem,pyspark-shell,], [LD_LIBRARY_PATH=/lib:/usr/lib/x86_64-linux-gnu:/usr/lib/jvm/java-17-openjdk-amd64/lib/server:/usr/lib/jvm/java-17-openjdk-amd64/lib,PATH=/usr/lib/jvm/java-17-openjdk-amd64/bin:/o
(libos_parser.c:1701:buf_write_all) [P2:T2:python3.11] trace: pt/spark/bin:/usr/local/bin:/usr/bin:/bin,]) ...
(fs.c:405:is_open_allowed) [P2:T2:python3.11] warning: Disallowing access to file 'spark-submit'; file is not allowed.
(libos_parser.c:1701:buf_write_all) [P2:T2:python3.11] trace: ---- return from execve(...) = -13
""")
    assert read_libos_log(text).refusals == [
        LibosRefusal("/opt/spark/bin/spark-submit", 2, "execve")
    ]


def test_a_long_path_split_over_log_lines_is_joined():
    path = "/tmp/spark-ab464fbf-7c85-4152-8fe8-6410a03fdad8/" + "x" * 240 + "/part-0.parquet"
    prefix = "[P1:T2:java]"
    text = "\n".join(
        [
            "(fs.c:405:is_open_allowed) [P1:T2:java] warning: Disallowing access to file "
            "'part-0.parquet'; file is not allowed.",
            split_like_gramine(
                prefix, f'---- openat(AT_FDCWD, "{path}", O_RDONLY|0x80000, 0000) = -13'
            ),
            # a real line: the LibOS's own worker threads name no program
            "(libos_ipc_worker.c:372:ipc_worker_wrapper) [P1:libos] debug: IPC worker started",
        ]
    )
    assert len(text.splitlines()) == 4  # the openat took two lines
    report = read_libos_log(text)
    assert report.refusals == [LibosRefusal(path, 1, "openat")]
    assert report.processes == {1: "java"}


def written_in_two_parts(long_line: str, other_line: str, *between: str) -> str:
    """A log line longer than libos_log's 256-byte buffer, written in two parts with another
    thread's line landing in between (the shape seen ~20 times in a 60 MB pyspark trace)."""
    return "\n".join([long_line[:256] + other_line, *between, long_line[256:]])


def test_lines_of_two_threads_mixed_in_one_are_put_back_together():
    path = "/opt/spark/jars/" + "y" * 200 + ".jar"
    openat = (
        f"(libos_parser.c:1701:buf_write_all) [P2:T54:java] trace: ---- openat(AT_FDCWD, "
        f'"{path}", O_RDONLY|0x80000, 0000) = -13'
    )
    text = "\n".join(
        [
            f"(fs.c:405:is_open_allowed) [P2:T54:java] warning: Disallowing access to file "
            f"'{'y' * 200}.jar'; file is not allowed.",
            written_in_two_parts(
                openat,
                "(fs.c:405:is_open_allowed) [P2:T36:java] warning: Disallowing access to file "
                "'nsswitch.conf'; file is not allowed.",
                # real lines of a third thread, between the two parts
                "(libos_parser.c:1671:warn_unsupported_syscall) [P2:T36:java] warning: Unsupported "
                "system call getrusage",
                "(libos_parser.c:1701:buf_write_all) [P2:T46:java] trace: ---- gettid() = 0x2e",
            ),
            "(libos_parser.c:1701:buf_write_all) [P2:T36:java] trace: ---- openat(AT_FDCWD, "
            '"/etc/nsswitch.conf", O_RDONLY|0x80000, 0000) = -13',
        ]
    )
    assert read_libos_log(text).refusals == [
        LibosRefusal(path, 2, "openat"),
        LibosRefusal("/etc/nsswitch.conf", 2, "openat"),
    ]


def test_the_same_file_refused_twice_is_listed_once():
    report = read_libos_log(JVM_REFUSALS + JVM_REFUSALS)
    assert len(report.refusals) == 2


def test_hash_mismatches_are_listed_once_and_are_no_refusal():
    # spark-java-pi with one byte appended to libjava.so in a later layer.
    text = log(r"""
(trusted.c:190:load_trusted_file) [P1:T1:java] warning: Hash of trusted file '/usr/lib/jvm/java-17-openjdk-amd64/lib/libjava.so' does not match with the reference hash in manifest
(libos_parser.c:1701:buf_write_all) [P1:T1:java] trace: ---- access("/usr/lib/jvm/java-17-openjdk-amd64/lib/libjava.so", F_OK) = -1
(libos_parser.c:1701:buf_write_all) [P1:T1:java] trace: ---- access("/usr/lib/jvm/java-17-openjdk-amd64/jre/lib/libjava.so", F_OK) = -2
(trusted.c:190:load_trusted_file) [P1:T1:java] warning: Hash of trusted file '/usr/lib/jvm/java-17-openjdk-amd64/lib/libjava.so' does not match with the reference hash in manifest
(libos_parser.c:1701:buf_write_all) [P1:T1:java] trace: ---- newfstatat(AT_FDCWD, "/usr/lib/jvm/java-17-openjdk-amd64/lib/libjava.so", 0x3f7d3f267150, 0) = -1
""")
    report = read_libos_log(text)
    assert report.hash_mismatches == ["/usr/lib/jvm/java-17-openjdk-amd64/lib/libjava.so"]
    assert report.refusals == []


# --- the process census ------------------------------------------------------------------------

# pyspark-sql-agg: Python forks (P2), the child execs spark-submit (a shell script, so "sh"),
# which execs java; the JVM then starts threads. Real lines, a few left out between them.
PYSPARK_START = log(r"""
(libos_parser.c:1701:buf_write_all) [P1:T1:python3.11] trace: ---- clone(CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|[SIGCHLD], 0, 0, 0x3008480b1410, 0) ...
(libos_parser.c:1701:buf_write_all) [P2:T2:python3.11] trace: ---- set_robust_list(0x3008480b1420, 0x18) = 0x0
(libos_parser.c:1701:buf_write_all) [P1:T1:python3.11] trace: ---- return from clone(...) = 0x2
(libos_parser.c:1701:buf_write_all) [P1:T1:python3.11] trace: ---- close(6) = 0x0
(libos_parser.c:1701:buf_write_all) [P2:T2:python3.11] trace: ---- execve("/opt/spark/./bin/spark-submit", [/opt/spark/./bin/spark-submit,--conf,spark.app.name=pyspark-sql-agg,--master,local[2],--driver-memory,1g,--conf,spark.ui.enabled=false,--driver-class-path,/ppml/lib/ppml-enclave-hadoop.jar,--conf,spark.hadoop.f
(libos_parser.c:1701:buf_write_all) [P2:T2:python3.11] trace: s.file.impl=org.ppmlbuild.enclave.hadoop.NioLocalFileSystem,pyspark-shell,], [LD_LIBRARY_PATH=/lib:/usr/lib/x86_64-linux-gnu:/usr/lib/jvm/java-17-openjdk-amd64/lib/server:/usr/lib/jvm/java-17-openjdk-amd64/lib,PATH=/usr/lib/jvm/java-17-openjdk-amd64/bin:/o
(libos_parser.c:1701:buf_write_all) [P2:T2:python3.11] trace: pt/spark/bin:/usr/local/bin:/usr/bin:/bin,]) ...
(libos_rtld.c:853:load_elf_object) [P2:T2:sh] debug: loading "file://bin/sh"
(libos_parser.c:1701:buf_write_all) [P2:T2:sh] trace: ---- brk(0) = 0x4a0d45b2d000
(libos_parser.c:1701:buf_write_all) [P2:T2:java] trace: ---- brk(0) = 0x4a0d45b6a000
(libos_parser.c:1701:buf_write_all) [P2:T2:java] trace: ---- clone(CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM|CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID, 0x4a0d42745f70, 0x4a0d42746990, 0x4a0d42746990, 0x4a0d427466c0) ...
(libos_init.c:583:create_pipe) [P2:T2:java] debug: Creating pipe: pipe.srv:718601936375031256/9765aeb05bdd6169ae832fb15ddb42070c714ca9b8c2243dea868f8a3570088e
(libos_parser.c:1701:buf_write_all) [P2:T2:java] trace: ---- return from clone(...) = 0x21
(libos_parser.c:1701:buf_write_all) [P2:T33:java] trace: ---- set_robust_list(0x4a0d427469a0, 0x18) = 0x0
(libos_parser.c:1701:buf_write_all) [P2:T33:java] trace: ---- futex(0x4a0d3c061768, FUTEX_PRIVATE|FUTEX_WAKE, 1, 0, 0x4a0d3c061740, 1007032160) ...
(libos_parser.c:1701:buf_write_all) [P2:T35:java] trace: ---- futex(0x4a0d3c061768, FUTEX_PRIVATE|FUTEX_CLOCK_REALTIME|FUTEX_WAIT_BITSET, 0, 0, 0, -1) ...
(libos_futex.c:755:_libos_syscall_futex) [P2:T35:java] warning: Ignoring FUTEX_CLOCK_REALTIME flag
(libos_parser.c:1701:buf_write_all) [P2:T33:java] trace: ---- return from futex(...) = 0x1
(libos_parser.c:1701:buf_write_all) [P2:T35:java] trace: ---- return from futex(...) = 0x0
(libos_async.c:126:libos_async_worker) [P2:libos] debug: Async worker thread started
""")


def test_pythons_fork_and_the_jvms_threads_are_no_jvm_forks():
    report = read_libos_log(PYSPARK_START)
    assert report.processes == {1: "python3.11", 2: "java"}  # P2 renamed by each execve
    assert (report.jvm_fork_attempts, report.jvm_forks_started) == (0, 0)
    assert report.refusals == []


def test_a_process_keeps_the_name_of_the_program_it_runs_last():
    lines = PYSPARK_START.splitlines()
    upto_sh = "\n".join(line for line in lines if "java]" not in line and "P2:libos" not in line)
    assert read_libos_log(upto_sh).processes == {1: "python3.11", 2: "sh"}


def test_a_jvm_clone_without_clone_vm_is_a_fork_attempt_that_started():
    # Python's real fork line, issued by a JVM thread instead.
    text = log(r"""
(libos_parser.c:1701:buf_write_all) [P1:T2:java] trace: ---- clone(CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|[SIGCHLD], 0, 0, 0x3008480b1410, 0) ...
(libos_parser.c:1701:buf_write_all) [P1:T14:java] trace: ---- clock_gettime(1, 0x3008485e7800) = 0x0
(libos_parser.c:1701:buf_write_all) [P1:T2:java] trace: ---- return from clone(...) = 0x2
""")
    report = read_libos_log(text)
    assert (report.jvm_fork_attempts, report.jvm_forks_started) == (1, 1)


# spark-java-pi: Spark's JVM runs programs through posix_spawn (clone with CLONE_VFORK, which
# Gramine makes a fork) and sys.disallow_subprocesses refuses them with EAGAIN (-11).
PI_SPAWN = log(r"""
(libos_parser.c:1671:warn_unsupported_syscall) [P1:T2:java] warning: Unsupported system call clone3
(libos_parser.c:1701:buf_write_all) [P1:T2:java] trace: ---- clone(CLONE_VM|CLONE_VFORK|[SIGCHLD], 0x2cb9d8044ff0, 0, 0, 0) ...
(libos_clone.c:281:libos_syscall_clone) [P1:T2:java] warning: vfork was called by the application, implemented as an alias to fork in Gramine
(libos_clone.c:327:libos_syscall_clone) [P1:T2:java] warning: The app tried to create a subprocess, but this is disabled (sys.disallow_subprocesses = true)
(libos_parser.c:1701:buf_write_all) [P1:T2:java] trace: ---- return from clone(...) = -11
(libos_parser.c:1701:buf_write_all) [P1:T2:java] trace: ---- munmap(0x2cb9d803c000, 0x9000) ...
(libos_parser.c:1701:buf_write_all) [P1:T2:java] trace: ---- return from munmap(...) = 0x0
(libos_parser.c:1701:buf_write_all) [P1:T75:java] trace: ---- clone(CLONE_VM|CLONE_VFORK|[SIGCHLD], 0x2cb9bc014ff0, 0, 0, 0) ...
(libos_clone.c:281:libos_syscall_clone) [P1:T75:java] warning: vfork was called by the application, implemented as an alias to fork in Gramine
(libos_parser.c:1701:buf_write_all) [P1:T75:java] trace: ---- return from clone(...) = -11
""")


def test_eagain_from_disallowed_subprocesses_is_attempted_but_not_started():
    report = read_libos_log(PI_SPAWN)
    assert (report.jvm_fork_attempts, report.jvm_forks_started) == (2, 0)
    assert report.processes == {1: "java"} and report.refusals == []


def test_a_return_without_its_first_line_counts_no_fork():
    # The log began mid-call: a thread's clone or a fork, nobody can tell.
    text = (
        "(libos_parser.c:1701:buf_write_all) [P1:T2:java] trace: ---- return from "
        "clone(...) = 0x3\n"
    )
    assert read_libos_log(text).jvm_fork_attempts == 0


# --- trace: the document, the text report, the suggestions ----------------------------------

MANIFEST = """
[loader]
argv = ["/usr/lib/jvm/java-17-openjdk-amd64/bin/java", "-cp", "/app/app.jar", "Main"]
[fs]
start_dir = "/app"
mounts = [{ type = "tmpfs", path = "/tmp" }]
[sgx]
allowed_files = ["file:/data/out/"]
[[sgx.trusted_files]]
uri = "file:/usr/lib/jvm/java-17-openjdk-amd64/lib/libjava.so"
sha256 = "00"
[[sgx.trusted_files]]
uri = "file:/app/app.log"
sha256 = "00"
"""

IMAGE = {
    "/usr/lib/jvm/java-17-openjdk-amd64/lib/jvm.cfg": ("file", 10),
    "/usr/lib/jvm/java-17-openjdk-amd64/lib/libnet.so": ("file", 100),
    "/usr/lib/jvm/java-17-openjdk-amd64/lib/libjava.so": ("file", 200),
    "/usr/lib/python3.11/__pycache__": ("dir", 0),
    "/app/app.log": ("file", 5),
    "/app/job.log": ("file", 5),
    "/ppml/demo.manifest.sgx": ("file", 900),
    "/usr/bin/gramine-direct": ("file", 2394),
}


def lookup(path):
    return IMAGE.get(path)


def view():
    return ManifestView.from_text(MANIFEST, "m")


def native_document(clean: bool = True) -> dict:
    return {"schema": "ppml-build/trace/v1", "clean": clean, "app_exit_code": 0}


REFUSING = LibosReport(
    refusals=[
        LibosRefusal("/usr/lib/jvm/java-17-openjdk-amd64/lib/jvm.cfg", 1, "openat"),
        LibosRefusal("/usr/lib/python3.11/__pycache__/x.cpython-311.pyc.123", 2, "openat"),
        LibosRefusal("/app/job.log", 2, "openat"),
        LibosRefusal("/app/app.log", 2, "openat"),
        LibosRefusal("nsswitch.conf", 1, "?"),
    ],
    hash_mismatches=["/usr/lib/jvm/java-17-openjdk-amd64/lib/libjava.so"],
    processes={2: "java", 1: "python3.11"},
    jvm_fork_attempts=3,
    jvm_forks_started=1,
)
QUIET = LibosReport([], [], {1: "java"}, 10, 0)


def test_merge_puts_the_libos_part_in_the_document_and_it_survives_json():
    document = merge_libos(native_document(), REFUSING, exit_code=1, seconds=25.04)
    part = document["libos"]
    assert part["refused"][0] == {
        "path": "/usr/lib/jvm/java-17-openjdk-amd64/lib/jvm.cfg",
        "process": 1,
        "program": "python3.11",
        "call": "openat",
    }
    assert part["hash_mismatches"] == ["/usr/lib/jvm/java-17-openjdk-amd64/lib/libjava.so"]
    assert part["processes"] == {"1": "python3.11", "2": "java"}
    assert (part["jvm_fork_attempts"], part["jvm_forks_started"]) == (3, 1)
    assert (part["exit_code"], part["seconds"]) == (1, 25.0)
    assert json.loads(json.dumps(document)) == document
    assert document["clean"] is False and document["schema"] == "ppml-build/trace/v1"


@pytest.mark.parametrize(
    "libos, exit_code, native_clean, clean",
    [
        (QUIET, 0, True, True),
        (QUIET, 1, True, False),  # the job failed under the LibOS
        (QUIET, 0, False, False),  # the native estimate found something
        (LibosReport([LibosRefusal("/etc/x", 1, "openat")], [], {}, 0, 0), 0, True, False),
        (LibosReport([], ["/usr/lib/x.so"], {}, 0, 0), 0, True, False),
    ],
)
def test_clean_needs_no_refusal_no_mismatch_and_exit_0_under_the_libos(
    libos, exit_code, native_clean, clean
):
    document = merge_libos(native_document(native_clean), libos, exit_code=exit_code, seconds=1.0)
    assert document["clean"] is clean


def test_merge_without_a_libos_run_keeps_the_native_verdict():
    assert merge_libos(native_document(), None) == native_document() | {"libos": None}


def test_the_text_report_shows_refusals_mismatches_and_the_census():
    part = merge_libos(native_document(), REFUSING, exit_code=1, seconds=25.0)["libos"]
    lines = libos_lines(part, ["Error: could not find libjava.so"])
    assert lines[0].endswith("job exited 1 in 25.0 s")
    assert "    Error: could not find libjava.so" in lines
    assert "refused by the LibOS (real refusals): 5" in lines
    assert "  /usr/lib/jvm/java-17-openjdk-amd64/lib/jvm.cfg [openat, P1 python3.11]" in lines
    assert "  nsswitch.conf [?, P1 python3.11]" in lines
    assert "trusted files whose hash does not match the manifest: 1" in lines
    assert "LibOS processes: 2 (P1 python3.11, P2 java)" in lines
    assert (
        "new processes a running JVM asked for: 3, started: 1 (2 refused, e.g. by "
        "sys.disallow_subprocesses)"
    ) in lines


def test_the_text_report_of_a_quiet_run_and_of_no_run():
    lines = libos_lines(merge_libos(native_document(), QUIET, exit_code=0, seconds=2.0)["libos"])
    assert "refused by the LibOS (real refusals): 0" in lines
    assert not any("its last lines" in line for line in lines)
    assert "LibOS processes: 1 (P1 java)" in lines
    assert libos_lines(None)[0].startswith("under the LibOS: not run (--no-libos)")


def test_suggest_libos_trusts_image_files_and_allows_what_is_written():
    text = suggest_libos(REFUSING, view(), lookup, written={"/app/job.log"})
    data = yaml.safe_load(text)
    assert text.startswith("# ppml-build trace --suggest: what the LibOS refused")
    assert data["files"]["trusted"] == ["/usr/lib/jvm/java-17-openjdk-amd64/lib/jvm.cfg"]
    # not in the image (created at run time); written by the native run; a trusted file the
    # LibOS refused to open for writing: their directories.
    assert data["files"]["allowed"] == ["/app/", "/usr/lib/python3.11/__pycache__/"]
    assert "files.scratch" in text
    assert "#   - nsswitch.conf" in text  # no directory to look it up in
    assert "#   - /usr/lib/jvm/java-17-openjdk-amd64/lib/libjava.so" in text  # rebuild


def test_suggest_libos_with_nothing_refused_says_so():
    text = suggest_libos(QUIET, view(), lookup)
    assert "nothing to change" in text and yaml.safe_load(text) is None


def test_the_suggestion_is_the_libos_first_then_the_native_estimate():
    native = suggest(compare([], view(), lookup), title=NATIVE_ESTIMATE)
    libos = suggest_libos(REFUSING, view(), lookup)
    documents = list(yaml.safe_load_all(combined_suggestion(libos, native)))
    assert len(documents) == 2 and "trusted" in documents[0]["files"]
    assert "native estimate" in combined_suggestion(libos, native).split("---\n")[1]
    assert combined_suggestion(None, native) == native


def test_libos_run_problem_wants_the_signed_manifest_and_gramine_direct():
    assert libos_run_problem(lookup, "demo", "/usr/local/bin:/usr/bin") is None
    assert libos_run_problem(lookup, "demo", "") is None  # Docker's default PATH
    assert "no gramine-direct on its PATH" in libos_run_problem(lookup, "demo", "/opt/bin")
    assert "/ppml/other.manifest.sgx" in libos_run_problem(lookup, "other", "/usr/bin")


# --- the command ---------------------------------------------------------------------------------


def result_with(document: dict) -> trace_run.TraceResult:
    report = compare([], view(), lookup)
    return trace_run.TraceResult(
        report, document, "# suggestion\n", "", "", 0, ["Error: could not find libjava.so"]
    )


def native_report_document() -> dict:
    report = compare([], view(), lookup)
    return report_document(
        report,
        recipe="demo",
        image="ppml/demo:latest",
        exit_code=0,
        shipped=(2, 205),
        everything=(8, 3614),
        seconds=1.0,
    )


def test_trace_prints_the_libos_section_and_exits_1_on_a_refusal(monkeypatch, capsys, tmp_path):
    document = merge_libos(native_report_document(), REFUSING, exit_code=1, seconds=25.0)
    calls = []
    monkeypatch.setattr(
        trace_run, "run_trace", lambda *a, **kw: calls.append(kw) or result_with(document)
    )
    code = main(["trace", str(tmp_path / "recipe.yaml")])
    out = capsys.readouterr().out
    assert code == 1 and calls[0]["libos"] is True
    assert "refused by the LibOS (real refusals): 5" in out
    assert "  the job failed under the LibOS; its last lines:" in out
    assert out.index("refused by the LibOS") < out.index("manifest size")

    assert main(["trace", str(tmp_path / "recipe.yaml"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["libos"]["processes"] == {
        "1": "python3.11",
        "2": "java",
    }


def test_trace_no_libos_skips_the_run_and_says_so(monkeypatch, capsys, tmp_path):
    calls = []
    document = merge_libos(native_report_document(), None)
    monkeypatch.setattr(
        trace_run, "run_trace", lambda *a, **kw: calls.append(kw) or result_with(document)
    )
    assert main(["trace", str(tmp_path / "recipe.yaml"), "--no-libos"]) == 0
    assert calls[0]["libos"] is False
    assert "under the LibOS: not run (--no-libos)" in capsys.readouterr().out


class FakeImages:
    def __init__(self, image):
        self.image = image

    def get(self, name):
        return self.image


class FakeImage:
    id = "sha256:" + "c" * 64
    attrs = {"Config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]}}


class FakeClient:
    images = FakeImages(FakeImage())


def test_an_image_without_gramine_direct_is_one_line_naming_no_libos(monkeypatch, capsys, tmp_path):
    from ppml_build.image import base_index as image_index
    from ppml_build.image import engine
    from ppml_build.image.rootfs import DirRootFS
    from ppml_build.pipeline import stages as pipeline
    from ppml_build.recipe import load_recipe_text

    root = tmp_path / "root"
    (root / "ppml").mkdir(parents=True)
    (root / "ppml/demo.manifest.sgx").write_text(MANIFEST)
    recipe = load_recipe_text("""\
apiVersion: ppml-build/v1
kind: spark
name: demo
base: {image: "127.0.0.1:5000/ppml/spark:1"}
app:
  command: [java, -cp, /app/app.jar, Main]
""")
    monkeypatch.setattr(pipeline, "validate_recipe", lambda path: recipe)
    monkeypatch.setattr(engine, "connect", lambda: FakeClient())
    monkeypatch.setattr(
        image_index, "cached_image_rootfs", lambda *a, **kw: (DirRootFS(root), True)
    )
    monkeypatch.setattr(trace_run, "tracing_image", lambda *a, **kw: pytest.fail("traced anyway"))
    code = main(["trace", str(tmp_path / "recipe.yaml")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "no gramine-direct on its PATH" in err and "--no-libos" in err
