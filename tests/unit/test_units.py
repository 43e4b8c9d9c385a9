"""Size syntax (ppml_build.units): recipes', Spark's, Gramine's and Occlum's spellings."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppml_build.units import (
    JVM_SIZE_PATTERN,
    GiB,
    KiB,
    MiB,
    Size,
    format_gramine_size,
    format_jvm_size,
    format_occlum_size,
    human,
    is_power_of_two,
    next_power_of_two,
    parse_gramine_size,
    parse_occlum_size,
    parse_size,
    parse_spark_size,
    round_up,
)


@pytest.mark.parametrize(
    "text, value",
    [
        ("16G", 16 * GiB),
        ("512m", 512 * MiB),
        ("1728mb", 1728 * MiB),
        (" 1g ", GiB),
        ("4096", 4096),
        (4096, 4096),
        ("2t", 2 * 1024 * GiB),
        ("8k", 8 * KiB),
        ("0", 0),
    ],
)
def test_recipe_sizes_parse_as_the_jvm_and_flink_read_them(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize(
    "text, message",
    [
        (True, "got a boolean"),
        (-5, "cannot be negative"),
        (2**63, "past any size"),
        ("1.5g", "not a size: '1.5g'"),
        ("１g", "not a size"),
        ("1p", "not a size"),
        ("9" * 20 + "k", "20 digits is not a size"),
    ],
)
def test_what_the_jvm_cannot_read_is_refused_with_a_hint(text, message):
    with pytest.raises(ValueError, match=message):
        parse_size(text)


def test_spark_reads_a_bare_number_as_mib_and_a_unit_as_written():
    assert parse_spark_size("2048") == 2048 * MiB
    assert parse_spark_size(" 2048 ") == 2048 * MiB
    assert parse_spark_size(3) == 3 * MiB
    assert parse_spark_size("2g") == 2 * GiB
    assert parse_spark_size("2048b") == 2048
    with pytest.raises(ValueError, match="not a size"):
        parse_spark_size("lots")


@pytest.mark.parametrize(
    "text, value",
    [("16G", 16 * GiB), ("256M", 256 * MiB), ("1512K", 1512 * KiB), ("4096", 4096), ("0", 0)],
)
def test_gramine_sizes_parse_in_the_subset_both_its_readers_take(text, value):
    assert parse_gramine_size(text) == value


@pytest.mark.parametrize("text", ["16g", "016G", "1.5G", " 16G", "16GB", "0x10M", ""])
def test_gramine_sizes_outside_that_subset_are_refused_naming_the_field(text):
    with pytest.raises(ValueError, match=r'^sgx\.stack\.size = ".*" is not a size Gramine'):
        parse_gramine_size(text, field="sgx.stack.size")
    with pytest.raises(ValueError, match='must be a string like "16G"'):
        parse_gramine_size(16)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value, text",
    [(16 * GiB, "16G"), (1536 * MiB, "1536M"), (1512 * KiB, "1512K"), (4097, "4097"), (0, "0")],
)
def test_gramine_sizes_are_written_with_the_largest_exact_unit(value, text):
    assert format_gramine_size(value) == text


@given(st.integers(0, 2**50))
def test_gramine_and_occlum_spellings_read_back_to_the_same_bytes(value):
    assert parse_gramine_size(format_gramine_size(value)) == value
    assert parse_occlum_size(format_occlum_size(value)) == value
    assert parse_size(format_gramine_size(value)) == value  # a recipe may say it the same way


def test_occlum_sizes_refuse_what_occlum_cannot_write():
    with pytest.raises(ValueError, match="cannot write -1 as an Occlum size"):
        format_occlum_size(-1)
    with pytest.raises(ValueError, match="end in KB, MB, GB, TB or B"):
        parse_occlum_size("32M")


@pytest.mark.parametrize(
    "value, multiple, rounded",
    [
        (0, 8, 0),
        (1, 8, 8),
        (8, 8, 8),
        (9, 8, 16),
        (4097, 4096, 8192),
        (65 * MiB, 64 * MiB, 128 * MiB),
    ],
)
def test_round_up_to_a_whole_multiple(value, multiple, rounded):
    assert round_up(value, multiple) == rounded


@given(st.integers(0, 2**64), st.integers(1, 2**32))
def test_round_up_is_the_smallest_multiple_not_below(value, multiple):
    rounded = round_up(value, multiple)
    assert rounded % multiple == 0 and value <= rounded < value + multiple


@pytest.mark.parametrize("value, power", [(0, 1), (1, 1), (2, 2), (3, 4), (GiB + 1, 2 * GiB)])
def test_next_power_of_two(value, power):
    assert next_power_of_two(value) == power
    assert is_power_of_two(power) and not is_power_of_two(power * 3)


def test_is_power_of_two_refuses_zero_and_negatives():
    assert not is_power_of_two(0) and not is_power_of_two(-4)


def test_human_sizes_for_messages():
    assert [human(v) for v in (360 * KiB, 1536 * MiB, 2 * 1024 * GiB, 100)] == [
        "360K",
        "1.5G",
        "2T",
        "100B",
    ]


def test_a_size_shows_as_its_text():
    size = Size(2048 * MiB, "2048")
    assert str(size) == "2048" and f"{size}" == "2048" and size.bytes == 2048 * MiB


@pytest.mark.parametrize(
    "value, flag",
    [(256 * MiB, "256m"), (3 * GiB, "3072m"), (1536 * KiB, "1536k"), (1000, "1k"), (4097, "5k")],
)
def test_jvm_flag_sizes_are_whole_megabytes_or_kilobytes_rounded_up(value, flag):
    assert format_jvm_size(value) == flag
    assert parse_size(flag) >= value and re.fullmatch(JVM_SIZE_PATTERN, flag)


@pytest.mark.parametrize("text", ["2g", "512M", "1024", "8T", "136k"])
def test_the_jvm_size_pattern_takes_what_hotspot_takes(text):
    assert re.fullmatch(JVM_SIZE_PATTERN, text)


@pytest.mark.parametrize("text", ["2gb", "1.5g", "-1m", "g", "2 g"])
def test_the_jvm_size_pattern_refuses_what_hotspot_refuses(text):
    assert not re.fullmatch(JVM_SIZE_PATTERN, text)
