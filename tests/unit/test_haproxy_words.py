"""The Runtime API grammar (haproxy/words.py): words, allow-lists, command lines."""

from __future__ import annotations

import hashlib
import re

import pytest

from scimgate.haproxy import EntryValidator, UnsafeRuntimeArgument
from scimgate.haproxy.words import (
    DEFAULT_VALIDATOR,
    MAX_WORD,
    Word,
    check_raw_command,
    command,
    hex_key_width,
    safe_word,
    version_word,
)
from scimgate.policy.compiler import IDENTITY_KEY_RE, MAP_VALUE_RE, OVERLAY_TOMBSTONE
from scimgate.sync.apply import ENTRY_VALIDATOR

KEY = hashlib.sha256(b"alice").hexdigest().upper()
CLI_SPECIAL = [" ", "\t", ";", "\\", "<", "#", "\r", "\n", "\0", '"', "'", "é", "\uff21"]


@pytest.mark.parametrize("bad", ["", "a" * (MAX_WORD + 1), *[f"a{c}b" for c in CLI_SPECIAL]])
def test_safe_word_refuses_whatever_the_cli_tokenizer_treats_specially(bad: str) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        safe_word(bad, "word")


def test_safe_word_accepts_the_safe_set_and_refuses_non_str() -> None:
    assert safe_word("/etc/haproxy/maps/a-b_c.map", "w") == "/etc/haproxy/maps/a-b_c.map"
    assert safe_word("x" * MAX_WORD, "w")
    for not_str in (None, b"abc", 3, ["a"]):
        with pytest.raises(UnsafeRuntimeArgument):
            safe_word(not_str, "w")


def test_hex_key_width_recognises_fixed_width_uppercase_hex_only() -> None:
    assert hex_key_width(IDENTITY_KEY_RE) == 64
    assert hex_key_width(re.compile(r"[0-9A-F]{8}")) == 8
    assert hex_key_width(re.compile(r"[0-9A-F]{8}", re.IGNORECASE)) is None
    assert hex_key_width(re.compile(r"[0-9a-f]{64}")) is None
    assert hex_key_width(re.compile(r"[0-9A-F]+")) is None
    assert hex_key_width(re.compile(r"[0-9A-F]{0}")) is None


def test_the_adapter_default_knows_no_policy() -> None:
    """Any CLI-safe word is a key or a value by default; the caller narrows the lists."""
    assert DEFAULT_VALIDATOR.key("alice@example.com") == "alice@example.com"
    assert DEFAULT_VALIDATOR.value("Anything.Safe") == "Anything.Safe"
    assert DEFAULT_VALIDATOR.hex_width is None
    with pytest.raises(UnsafeRuntimeArgument):
        ENTRY_VALIDATOR.value("Anything.Safe")
    with pytest.raises(UnsafeRuntimeArgument):
        ENTRY_VALIDATOR.key("alice@example.com")


def test_the_identities_grammar_comes_from_policy() -> None:
    assert ENTRY_VALIDATOR.key_re is IDENTITY_KEY_RE and ENTRY_VALIDATOR.value_re is MAP_VALUE_RE
    assert ENTRY_VALIDATOR.hex_width == 64
    for good in (",", ",eng,", ",a-b,c_d,", OVERLAY_TOMBSTONE):
        assert ENTRY_VALIDATOR.value(good) == good
    for bad in ("eng", ",eng", ",,", ",Eng,", "--", ",eng,\n", ""):
        with pytest.raises(UnsafeRuntimeArgument):
            ENTRY_VALIDATOR.value(bad)


def test_a_caller_pattern_narrows_but_never_widens() -> None:
    lax = EntryValidator(key_re=re.compile(r".+"), value_re=re.compile(r".*"))
    assert lax.key("alice@example.com")
    for bad in ("a b", "a;b", "a<<", "#0x1", "a\\b", ""):
        with pytest.raises(UnsafeRuntimeArgument):
            lax.key(bad)


@pytest.mark.parametrize(
    "path",
    ["ids.map", "/x/../etc/passwd", "/x/a b.map", "/x/ids.map;show info", "#0", "", "/x/\n"],
)
def test_map_paths_are_absolute_and_plain(path: str) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        DEFAULT_VALIDATOR.map_path(path)


def test_bulk_checks_agree_with_the_per_entry_checks() -> None:
    keys = [hashlib.sha256(str(i).encode()).hexdigest().upper() for i in range(50)]
    assert ENTRY_VALIDATOR.keys_valid(keys)
    assert ENTRY_VALIDATOR.keys_valid([])
    for bad in (keys[0].lower(), keys[0][:63], keys[0] + "0", keys[0][:63] + "é", None):
        assert not ENTRY_VALIDATOR.keys_valid([*keys, bad])
    generic = EntryValidator()
    assert generic.keys_valid(["alice", "bob@x"]) and not generic.keys_valid(["a b"])
    assert not generic.keys_valid(["x" * (MAX_WORD + 1)])
    assert ENTRY_VALIDATOR.values_valid([",", ",eng,", ",eng,"])
    assert not ENTRY_VALIDATOR.values_valid([",", ",Eng,"])
    assert ENTRY_VALIDATOR.entries_valid({KEY: None, keys[1]: ",eng,"})  # None: a delete
    assert not ENTRY_VALIDATOR.entries_valid({KEY: "eng"})


def test_command_lines_are_rechecked_and_versions_are_u32() -> None:
    path, key = Word("/m/ids.map"), Word(KEY)
    assert command("del map", path, key) == f"del map /m/ids.map {KEY}\n".encode()
    with pytest.raises(UnsafeRuntimeArgument):
        command("add map", path, Word("a\nshow info"), Word(","))
    assert version_word(0) == "@0" and version_word(2**32 - 1) == f"@{2**32 - 1}"
    for bad in (-1, 2**32, True, 1.0, "1"):
        with pytest.raises(UnsafeRuntimeArgument):
            version_word(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "raw",
    ["", "  ", "show info;show info", "show info\nshow info", "a\rb", "a\0", "add map m <<",
     "show info <<  ", "show é", "show\x07"],
)  # fmt: skip
def test_raw_commands_are_exactly_one_command(raw: str) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        check_raw_command(raw)


def test_raw_commands_that_pass() -> None:
    assert check_raw_command("show info") == b"show info\n"
    assert check_raw_command(r"set var txn.x str(a\;b)") == b"set var txn.x str(a\\;b)\n"
    with pytest.raises(UnsafeRuntimeArgument):
        check_raw_command(r"show info\\;show info")  # an escaped backslash, then a real ;
