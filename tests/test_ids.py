"""Tests for opik_otel.ids: minting and canonicalising Opik's UUIDv7 ids."""

import re
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opik_otel.ids import canonical_uuid_v7, format_uuid, generate_id, is_valid_uuid_v7, uuid_v7_int

CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
SAMPLE = "0192f5e0-7b3c-7d4e-8f5a-1b2c3d4e5f6a"
# SAMPLE without its leading zero: uuid.UUID lets int() skip a space in front of it, so
# " " + SHORT, "{ " + SHORT + "}" and "urn:uuid: " + SHORT all parse as SAMPLE in Python.
SHORT = SAMPLE.replace("-", "")[1:]


def assert_canonical_v7(value):
    assert isinstance(value, str)
    parsed = uuid.UUID(value)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == value
    assert CANONICAL.fullmatch(value)


# --- generate_id --------------------------------------------------------------------------


def test_generate_id_is_canonical_v7_and_unique():
    ids = [generate_id() for _ in range(2000)]
    for value in ids:
        assert_canonical_v7(value)
    assert len(set(ids)) == len(ids)


def test_generate_id_embeds_the_current_time():
    before = time.time_ns() // 1_000_000
    value = generate_id()
    after = time.time_ns() // 1_000_000
    assert before <= uuid.UUID(value).int >> 80 <= after


@pytest.mark.parametrize(
    "timestamp_ms", [0, 1, 1_700_000_000_123, 0xFFFF, 0x1_0000, 0xFFFF_FFFF_FFFF, 0x0123_4567_89AB]
)
def test_generate_id_embeds_a_given_timestamp(timestamp_ms):
    value = generate_id(timestamp_ms)
    assert_canonical_v7(value)
    assert uuid.UUID(value).int >> 80 == timestamp_ms


@given(st.integers(min_value=0, max_value=0xFFFF_FFFF_FFFF))
def test_generate_id_property(timestamp_ms):
    value = generate_id(timestamp_ms)
    assert_canonical_v7(value)
    assert uuid.UUID(value).int >> 80 == timestamp_ms


def test_generate_id_ids_sort_by_time():
    assert generate_id(1_000) < generate_id(1_001) < generate_id(2_000_000_000_000)


# IdGenerator formats a millisecond's timestamp groups once: interleaving timestamps
# (threads, or spans given explicit start times) must never reuse another one's groups.
@given(st.lists(st.one_of(st.none(), st.integers(0, 0xFFFF_FFFF_FFFF)), min_size=1, max_size=20))
def test_id_generator_embeds_each_given_timestamp(timestamps):
    from opik_otel.ids import IdGenerator

    generator = IdGenerator()
    for timestamp_ms in timestamps:
        before = time.time_ns() // 1_000_000
        value = generator.new_id(timestamp_ms)
        assert_canonical_v7(value)
        embedded = uuid.UUID(value).int >> 80
        if timestamp_ms is None:
            assert before <= embedded <= time.time_ns() // 1_000_000
        else:
            assert embedded == timestamp_ms


def test_id_generator_ids_are_unique_and_in_minting_order_within_a_millisecond():
    from opik_otel.ids import IdGenerator

    generator = IdGenerator()
    ids = [generator.new_id(1_700_000_000_000) for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    for value in ids:
        assert_canonical_v7(value)


def test_id_generators_draw_a_new_middle_for_each_millisecond():
    from opik_otel.ids import IdGenerator

    generator = IdGenerator()
    middles = {generator.new_id(timestamp_ms)[14:24] for timestamp_ms in range(200)}
    assert len(middles) > 190  # 26 random bits each: a few repeats at most


@given(st.integers(0, 0xFFFF_FFFF_FFFF), st.integers(0, (1 << 74) - 1))
def test_uuid_v7_int_and_format_uuid(timestamp_ms, random_bits):
    value = format_uuid(uuid_v7_int(timestamp_ms, random_bits))
    assert_canonical_v7(value)
    assert uuid.UUID(value).int >> 80 == timestamp_ms


# --- canonical_uuid_v7 --------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        SAMPLE,
        SAMPLE.upper(),
        SAMPLE.replace("-", ""),
        SAMPLE.upper().replace("-", ""),
        "{" + SAMPLE + "}",
        "{" + SAMPLE.upper() + "}",
        "urn:uuid:" + SAMPLE,
        "urn:uuid:" + SAMPLE.upper(),
    ],
)
def test_accepted_spellings_become_canonical(spelling):
    assert canonical_uuid_v7(spelling) == SAMPLE
    assert is_valid_uuid_v7(spelling)


@pytest.mark.parametrize(
    "value",
    [
        " " + SAMPLE,
        SAMPLE + " ",
        "\t" + SAMPLE + "\n",
        "{ " + SAMPLE + "}",
        "{" + SAMPLE + " }",
        "urn:uuid: " + SAMPLE,
        " " + SHORT,
        "\t" + SHORT,
        "{ " + SHORT + "}",
        "{\n" + SHORT + "}",
        "urn:uuid: " + SHORT,
        "urn:uuid:\u3000" + SHORT,
        SHORT,
        SAMPLE[:-1],
        SAMPLE + "0",
        SAMPLE.replace("-", "_"),
        "",
        "not-a-uuid",
        str(uuid.uuid1()),
        str(uuid.uuid3(uuid.NAMESPACE_DNS, "opik")),
        str(uuid.uuid4()),
        str(uuid.uuid5(uuid.NAMESPACE_DNS, "opik")),
        "0192f5e0-7b3c-8d4e-8f5a-1b2c3d4e5f6a",  # version 8
        "00000000-0000-0000-0000-000000000000",
        "0192f5e0-7b3c-7d4e-0f5a-1b2c3d4e5f6a",  # version nibble 7, NCS variant
        "0192f5e0-7b3c-7d4e-cf5a-1b2c3d4e5f6a",  # version nibble 7, Microsoft variant
    ],
)
def test_rejected_strings(value):
    assert canonical_uuid_v7(value) is None
    assert not is_valid_uuid_v7(value)


@pytest.mark.parametrize(
    "value",
    [None, 7, 7.0, True, b"0192f5e0-7b3c-7d4e-8f5a-1b2c3d4e5f6a", uuid.UUID(SAMPLE), [SAMPLE], (SAMPLE,), {SAMPLE: SAMPLE}],
)
def test_non_strings_are_rejected(value):
    assert canonical_uuid_v7(value) is None
    assert not is_valid_uuid_v7(value)


# --- properties ---------------------------------------------------------------------------

# Text close to UUIDs, so the accepting paths are exercised and not only the rejecting ones.
uuid_like_text = st.text(alphabet="0123456789abcdefABCDEF-{}urnid: 7_x+\t", min_size=30, max_size=46)


def v7_spellings():
    def spell(number, style):
        value = str(uuid.UUID(int=number))
        return {
            "canonical": value,
            "upper": value.upper(),
            "hex": value.replace("-", ""),
            "braces": "{" + value + "}",
            "urn": "urn:uuid:" + value,
        }[style]

    numbers = st.builds(uuid_v7_int, st.integers(0, 0xFFFF_FFFF_FFFF), st.integers(0, (1 << 74) - 1))
    return st.builds(spell, numbers, st.sampled_from(["canonical", "upper", "hex", "braces", "urn"]))


def test_python_itself_accepts_the_padded_short_forms():
    # Why the whitespace rule is needed on top of uuid.UUID (keeps the cases above honest).
    for value in (" " + SHORT, "{ " + SHORT + "}", "urn:uuid: " + SHORT):
        assert str(uuid.UUID(value)) == SAMPLE


def padded_short_forms():
    """v7 ids whose first digit is 0, written without it behind a whitespace character."""
    numbers = st.builds(uuid_v7_int, st.integers(0, (1 << 44) - 1), st.integers(0, (1 << 74) - 1))
    return st.builds(
        lambda number, space, wrap: wrap.format(space + f"{number:032x}"[1:]),
        numbers,
        st.sampled_from([" ", "\t", "\n", "\u00a0", "\u2003"]),
        st.sampled_from(["{}", "{{{}}}", "urn:uuid:{}", "{}", "{{{}}}"]),
    )


def python_says_v7(value):
    """The reference check of contract §6, plus its rule that whitespace fails."""
    if not isinstance(value, str) or value.split() != [value]:
        return False
    try:
        return uuid.UUID(value).version == 7
    except ValueError:
        return False


def check_canonical_result(value):
    result = canonical_uuid_v7(value)  # must not raise
    if result is not None:
        assert isinstance(result, str)
        assert uuid.UUID(result).version == 7
        assert str(uuid.UUID(result)) == result
    return result


@settings(max_examples=300)
@given(st.one_of(st.text(), uuid_like_text, v7_spellings(), padded_short_forms()))
def test_canonical_uuid_v7_on_arbitrary_text(value):
    result = check_canonical_result(value)
    assert (result is not None) == python_says_v7(value)
    if result is not None:
        assert uuid.UUID(result) == uuid.UUID(value)


@given(padded_short_forms())
def test_whitespace_padded_short_forms_are_rejected(value):
    assert canonical_uuid_v7(value) is None


@given(v7_spellings())
def test_every_v7_spelling_is_accepted(value):
    assert canonical_uuid_v7(value) == str(uuid.UUID(value))


@settings(max_examples=300)
@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True),
        st.binary(),
        st.text(),
        st.lists(st.text(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
        st.builds(uuid.UUID, st.uuids().map(str)),
        v7_spellings().map(lambda s: s.encode()),
        v7_spellings().map(lambda s: [s]),
    )
)
def test_canonical_uuid_v7_on_arbitrary_objects(value):
    result = check_canonical_result(value)
    if not isinstance(value, str):
        assert result is None


# --- minted ids never follow random.seed() (issue 9) --------------------------------------

# Mints ids the ways the package does: OpikSpanProcessor for local roots (trace and span
# ids) and for linked spans, attach_to_parent, generate_id; after random.seed(7) and, with
# "fork", in a forked child too. Prints one id per line (the child's after a "--" line).
MINTER = r"""
import os, random, sys
from opentelemetry.sdk.trace import TracerProvider
from opik_otel import OpikSpanProcessor, attach_to_parent, generate_id

provider = TracerProvider()
provider.add_span_processor(OpikSpanProcessor(mint_root_ids=True))
tracer = provider.get_tracer("ids")
count = int(sys.argv[1])

def mint():
    random.seed(7)
    out = []
    for _ in range(count):
        with tracer.start_as_current_span("root") as root:
            with tracer.start_as_current_span("child") as child:
                pass
        out += [root.attributes["opik.trace_id"], root.attributes["opik.span_id"], child.attributes["opik.span_id"]]
        server = tracer.start_span("server")
        attach_to_parent(server, {"opik_trace_id": root.attributes["opik.trace_id"]})
        out += [server.attributes["opik.span_id"], generate_id()]
    return out

if sys.argv[2] == "fork":
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        with os.fdopen(write, "w") as pipe:
            pipe.write("\n".join(mint()))
        os._exit(0)
    os.close(write)
    mine = mint()
    with os.fdopen(read) as pipe:
        theirs = pipe.read()
    os.waitpid(pid, 0)
    print("\n".join(mine) + "\n--\n" + theirs)
else:
    print("\n".join(mint()))
"""


def random_bits(opik_id):
    """The 74 random bits of a UUIDv7 (the timestamp left out: it may legitimately repeat)."""
    value = uuid.UUID(opik_id).int
    return ((value >> 64) & 0xFFF) << 62 | value & ((1 << 62) - 1)


def minted(mode, count=400):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", MINTER, str(count), mode], capture_output=True, text=True, timeout=120, check=True
    )
    return result.stdout.split("\n--\n") if mode == "fork" else [result.stdout]


def test_processes_seeding_random_alike_mint_no_common_random_bits():
    first, second = (set(map(random_bits, minted("plain")[0].split())) for _ in range(2))
    assert len(first) == len(second) == 400 * 5
    assert not first & second


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_mints_no_random_bits_of_its_parent():
    parent, child = (set(map(random_bits, part.split())) for part in minted("fork"))
    assert len(parent) == len(child) == 400 * 5
    assert not parent & child


def test_random_seed_in_this_process_changes_nothing():
    import random

    from opik_otel.ids import IdGenerator

    generator = IdGenerator()
    random.seed(1)
    first = [generator.new_id(0), generate_id(0)]
    random.seed(1)
    second = [generator.new_id(0), generate_id(0)]
    assert not set(first) & set(second)


@given(seed=st.one_of(st.integers(), st.text(max_size=8), st.binary(max_size=8)))
def test_no_seed_of_random_makes_minting_repeat(seed):
    import random

    from opik_otel.ids import IdGenerator

    generator = IdGenerator()
    random.seed(seed)
    first = {generator.new_id(0), generate_id(0)}
    random.seed(seed)
    assert not first & {generator.new_id(0), generate_id(0)}
