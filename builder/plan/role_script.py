"""A cluster role's script (plan/roles.py says what each role runs): POSIX sh that refuses any
argument, checks every cluster parameter the host supplies against its rule, stopping the
role with one line and exit 2 on a malformed value, then execs the role's fixed command.

Only shell builtins (``case``, ``[``, ``read``, ``exec``): no process is started, which
Gramine 1.9 under a running JVM and Occlum (no fork) both need. A value is never echoed: a
secret is one of them. Pure: text out.
"""

from __future__ import annotations

import shlex

from ..recipe import Recipe
from ..record import IN_IMAGE_DIR
from .executor_pod import EXECUTOR_POD_TEMPLATE, executor_pod_template_text
from .launch import SPARK_SUBMIT_CLASS
from .model import Plan
from .roles import (
    DRIVER_ENDPOINT,
    ENTRY_SCRIPT,
    ROLE_ENTRY_WORDS,
    ROLE_SHELL,
    RULES,
    ClusterParameter,
    RoleLaunch,
    enclave_name,
    role_launch,
)

EXIT_BAD_PARAMETER = 2


def _check(parameter: ClusterParameter, max_cores: int) -> list[str]:
    """sh lines that stop the role unless ``$v`` (the parameter's value) follows its rule."""
    name, rule = parameter.name, parameter.rule
    bad = f'bad {name} "{RULES[rule]}"'
    number = [
        f'    case $v in ""|*[!0-9]*) {bad} ;; esac',
        f"    [ ${{#v}} -le 8 ] || {bad}",
    ]
    host_port = [  # $rest is HOST:PORT
        "    host=${rest%:*}; port=${rest##*:}",
        f'    case $host in ""|*[!A-Za-z0-9.-]*|-*) {bad} ;; esac',
        f"    [ ${{#host}} -le 253 ] || {bad}",
        f'    case $port in ""|*[!0-9]*) {bad} ;; esac',
        f'    [ ${{#port}} -le 5 ] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || {bad}',
    ]
    if rule == "driver-url":
        prefix = f"spark://{DRIVER_ENDPOINT}@"
        return [
            f'    case $v in "{prefix}"*:*) rest=${{v#"{prefix}"}} ;; *) {bad} ;; esac',
            *host_port,
        ]
    if rule == "master":
        return [
            "    case $v in",
            "        spark://*:*) rest=${v#spark://} ;;",
            "        k8s://https://*:*) rest=${v#k8s://https://} ;;",
            f"        *) {bad} ;;",
            "    esac",
            *host_port,
        ]
    if rule == "id":
        return number + [f'    [ "$v" -ge 1 ] || {bad}']
    if rule == "cores":
        return number + [f'    [ "$v" -ge 1 ] && [ "$v" -le {max_cores} ] || {bad}']
    if rule == "count":
        return number
    if rule == "app-id":
        return [
            f'    case $v in ""|*[!A-Za-z0-9._-]*) {bad} ;; esac',
            f"    [ ${{#v}} -le 128 ] || {bad}",
        ]
    if rule == "host":
        return [
            f'    case $v in ""|*[!A-Za-z0-9.-]*|-*) {bad} ;; esac',
            f"    [ ${{#v}} -le 253 ] || {bad}",
        ]
    if rule == "pod-name":
        return [
            f'    case $v in ""|*[!a-z0-9.-]*|-*) {bad} ;; esac',
            f"    [ ${{#v}} -le 253 ] || {bad}",
        ]
    if rule == "namespace":
        return [
            f'    case $v in ""|*[!a-z0-9-]*|-*|*-) {bad} ;; esac',
            f"    [ ${{#v}} -le 63 ] || {bad}",
        ]
    if rule == "image":
        return [
            f'    case $v in ""|*[!A-Za-z0-9./:@_-]*|[!A-Za-z0-9]*) {bad} ;; esac',
            f"    [ ${{#v}} -le 512 ] || {bad}",
        ]
    if rule == "secret":
        return [
            f'    case $v in ""|*[!A-Za-z0-9+/=._-]*) {bad} ;; esac',
            f"    [ ${{#v}} -le 4096 ] || {bad}",
        ]
    raise ValueError(f"no rule {rule!r}")


def role_script(launch: RoleLaunch) -> str:
    """The POSIX sh role script: refuse arguments, check every parameter, exec the command.
    Recipe values are shlex-quoted; a ``$NAME`` word becomes ``"$NAME"`` (one argument)."""
    names = {parameter.name for parameter in launch.parameters}
    lines = [
        f"#!{ROLE_SHELL}",
        f"# Written by ppml-build: the {launch.role} role's fixed command. The host supplies",
        "# only the cluster parameters checked below; shell builtins only (no process started).",
        "LC_ALL=C",
        f'bad() {{ echo "ppml-build {launch.role}: $1 must be $2" >&2; exit {EXIT_BAD_PARAMETER}; }}',
        f'[ "$#" -eq 0 ] || {{ echo "ppml-build {launch.role}: takes no arguments; the host '
        f'supplies only {", ".join(sorted(names))}" >&2; exit {EXIT_BAD_PARAMETER}; }}',
    ]
    for parameter in launch.parameters:
        name = parameter.name
        lines += [
            f'if [ -z "${{{name}+set}}" ]; then',
            f'    echo "ppml-build {launch.role}: {name} is not set" >&2; exit {EXIT_BAD_PARAMETER}',
            "fi",
            f"v=${name}",
            *_check(parameter, launch.max_cores),
        ]
    lines.append("unset v rest host port")
    if launch.argv_prefix_lines:
        lines += [
            "set --",
            "while IFS= read -r arg; do",
            '    set -- "$@" "$arg"',
            f'    [ "$arg" = {SPARK_SUBMIT_CLASS} ] && break',
            f"done < {shlex.quote(launch.argv_prefix_lines)}",
            "unset arg",
        ]
    for variable, words in launch.env_words:
        lines.append(f"export {variable}={_shell_word_list(words, names)}")
    argv = [_shell_word(arg, names) for arg in launch.argv]
    if launch.argv_prefix_lines:
        argv.insert(0, '"$@"')
    lines.append("exec " + " \\\n    ".join(argv))
    return "\n".join(lines) + "\n"


def _parameter_in(arg: str, names: set[str]) -> tuple[str, str] | None:
    """``(head, NAME)`` for "$NAME" or "key=$NAME" (a checked value at the end of a word)."""
    head, sep, name = arg.rpartition("$")
    return (head, name) if sep and name in names else None


def _shell_word(arg: str, names: set[str]) -> str:
    """One sh word: recipe text shlex-quoted, a parameter as "$NAME" (one argument)."""
    split = _parameter_in(arg, names)
    if split is None:
        return shlex.quote(arg)
    head, name = split
    return (shlex.quote(head) if head else "") + f'"${name}"'


def _shell_word_list(words: tuple[str, ...], names: set[str]) -> str:
    """One sh word whose value is ``shlex.join(words)`` with the parameters filled in. The
    rules keep a checked value to characters shlex leaves unquoted (no space, quote or
    backslash), so each stays one word when the program splits the list again."""
    pieces: list[str] = []  # the value: literal text and "$NAME"s
    literal = ""
    for index, arg in enumerate(words):
        literal += " " if index else ""
        split = _parameter_in(arg, names)
        if split is None:
            literal += shlex.quote(arg)
            continue
        head, name = split
        literal += shlex.quote(head) if head else ""
        pieces += [shlex.quote(literal) if literal else "", f'"${name}"']
        literal = ""
    if literal:
        pieces.append(shlex.quote(literal))
    return "".join(pieces)


def role_scripts(recipe: Recipe, plans: dict[str, Plan]) -> dict[str, str]:
    """Every role's script by its in-image path, the container entry that picks one and, with
    a driver and executors, the executors' Kubernetes pod template the driver reads: files of
    the image's support stage (trusted, under /ppml/roles)."""
    scripts = {}
    for plan in plans.values():
        launch = role_launch(recipe, plan, plans)
        if launch is not None:
            scripts[launch.script] = role_script(launch)
    if plans:
        scripts[ENTRY_SCRIPT] = entry_script(recipe, list(plans))
    if "driver" in plans and "executor" in plans:
        scripts[EXECUTOR_POD_TEMPLATE] = executor_pod_template_text(recipe, plans["executor"])
    return scripts


ENCLAVE_LOADERS = ("gramine-sgx", "gramine-direct")


def entry_script(recipe: Recipe, roles: list[str]) -> str:
    """The cluster image's container entry (outside the enclaves): the first argument names the
    role, as Spark and the Flink operator give it on Kubernetes; the enclave of that role starts
    with its fixed command, so no other argument reaches it. PPML_GRAMINE_LOADER picks the
    loader: gramine-sgx, or gramine-direct where there is no SGX (tests)."""
    lines = [
        "#!/bin/sh",
        "# Written by ppml-build: starts the enclave of the role named by the first argument",
        "# (Spark: driver, executor; the Flink operator: standalone-job, taskmanager). The other",
        "# arguments never reach it: each role's command is fixed in its signed manifest.",
        "loader=${PPML_GRAMINE_LOADER:-gramine-sgx}",
        "case $loader in",
        f"    {'|'.join(ENCLAVE_LOADERS)}) ;;",
        f'    *) echo "ppml-build: PPML_GRAMINE_LOADER must be {" or ".join(ENCLAVE_LOADERS)}" >&2; '
        f"exit {EXIT_BAD_PARAMETER} ;;",
        "esac",
        "case ${1-} in",
    ]
    for role in roles:
        words = "|".join(ROLE_ENTRY_WORDS[role])
        path = f"{IN_IMAGE_DIR}/{enclave_name(recipe, role)}"
        lines.append(f'    {words}) exec "$loader" {shlex.quote(path)} ;;')
    choices = ", ".join(word for role in roles for word in ROLE_ENTRY_WORDS[role][:1])
    lines += [
        f'    *) echo "ppml-build: the first argument names the role: {choices}" >&2; '
        f"exit {EXIT_BAD_PARAMETER} ;;",
        "esac",
    ]
    return "\n".join(lines) + "\n"
