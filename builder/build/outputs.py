"""A build's files on the host: the backend's files, the policies and the record, all or none."""

from __future__ import annotations

import json
from pathlib import Path

from ppml_build.atomic import write_all_or_none
from ppml_build.policy import render
from ppml_build.record import RECORD_FILE


def write_build_outputs(output_dir: Path, files: dict[str, str | bytes], record: dict,
                        policies: tuple[str, ...] | list[str], source: str) -> list[Path]:
    """A backend's ``files``, the policies and the record, all or none; the record is renamed
    last, so a record in OUTPUT_DIR means the files beside it are from its build. Returns the
    policy files' paths."""
    outputs: dict[Path, str | bytes] = {output_dir / name: data for name, data in files.items()}
    policy_paths: list[Path] = []
    for fmt in dict.fromkeys(policies):  # --policy maa --policy maa: once
        for name, text in render(record, fmt, source=source).files.items():
            outputs[output_dir / name] = text
            policy_paths.append(output_dir / name)
    outputs[output_dir / RECORD_FILE] = json.dumps(record, indent=2) + "\n"
    write_all_or_none(outputs, option="--output-dir")
    return policy_paths
