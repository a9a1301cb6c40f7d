"""Reply parsing (haproxy/replies.py) and the master CLI's pure parts (haproxy/master.py),
on replies as HAProxy 2.6.12 writes them."""

from __future__ import annotations

import pytest

from scimgate.haproxy import (
    RuntimeAddress,
    RuntimeCommandError,
    UnsafeRuntimeArgument,
    WorkerChange,
    parse_version,
    worker_change,
    worker_command,
)
from scimgate.haproxy.master import parse_show_proc
from scimgate.haproxy.replies import (
    UNREADABLE,
    del_outcome,
    get_map_value,
    message,
    parse_info,
    parse_map_entries,
    parse_map_list,
    prepared_version,
    set_outcome,
    take_replies,
)

# --------------------------------------------------------------------------- prompt stream


def test_take_replies_splits_a_prompt_stream_in_order() -> None:
    buf = bytearray(b"\n> [3]: entry not found.\n\n> Pid: 42\nName: HAProxy\n\n> ")
    replies: list[str] = []
    scan = take_replies(buf, 0, [False, False, False], replies)
    # A reply's text ends before the prompt's LF, less one trailing LF of its own.
    assert replies == ["", "[3]: entry not found.", "Pid: 42\nName: HAProxy"]
    assert buf == bytearray() and scan == 0


def test_take_replies_waits_for_a_whole_prompt() -> None:
    replies: list[str] = []
    buf = bytearray(b"Pid: 42\n\n")  # the prompt's "> " has not arrived
    scan = take_replies(buf, 0, [False], replies)
    assert replies == [] and buf == bytearray(b"Pid: 42\n\n") and scan > 0
    buf += b"> "
    take_replies(buf, scan, [False], replies)
    assert replies == ["Pid: 42"] and not buf


def test_take_replies_skips_the_plus_prompts_of_a_payload() -> None:
    replies: list[str] = []
    buf = bytearray(b"+ + + \n> \n> ")
    take_replies(buf, 0, [True, False], replies)
    assert replies == ["", ""]
    # Prompts split across reads.
    replies = []
    buf = bytearray(b"+ + ")
    scan = take_replies(buf, 0, [True], replies)
    assert replies == []
    buf += b"+ \n> "
    take_replies(buf, scan, [True], replies)
    assert replies == [""]


def test_take_replies_leaves_what_belongs_to_no_request() -> None:
    replies: list[str] = []
    buf = bytearray(b"\n> stray")
    take_replies(buf, 0, [False], replies)
    assert replies == [""] and buf == bytearray(b"stray")  # the caller fails on leftovers


# --------------------------------------------------------------------------- outcomes


def test_severity_prefix() -> None:
    assert message("[3]: entry not found.\n") == (3, "entry not found.")
    assert message("Unknown command.\n") == (None, "Unknown command.")


def test_set_and_del_outcomes() -> None:
    assert set_outcome("set map m k v", "") is True
    assert set_outcome("set map m k v", "[3]: entry not found.\n") is False
    assert del_outcome("del map m k", "\n") is True
    assert del_outcome("del map m k", "[3]: Key not found.") is False
    with pytest.raises(RuntimeCommandError):
        set_outcome("set map m k v", "[3]: Key not found.")  # del's message, not set's
    with pytest.raises(RuntimeCommandError):
        del_outcome("del map m k", "[3]: Unknown map identifier.")


def test_get_map_value_fails_closed() -> None:
    found = 'type=str, case=sensitive, found=yes, idx=tree, key="K", value=",eng,", type="str"'
    assert get_map_value(found) == ",eng,"
    assert get_map_value("type=str, case=sensitive, found=no") is None
    assert get_map_value("[3]: Unknown map identifier.") == UNREADABLE
    assert get_map_value("found=yes, but no value") == UNREADABLE


def test_prepared_version() -> None:
    assert prepared_version("New version created: 7\n") == 7
    assert prepared_version("[3]: New version created: 7") == 7
    assert prepared_version("[3]: Unknown map identifier.") is None
    assert prepared_version("New version created: 7 and more") is None


# --------------------------------------------------------------------------- listings

SHOW_MAP = """\
# id (file) description
-1 (/etc/haproxy/maps/identities-0.map) pattern loaded from file '/etc/haproxy/maps/identities-0.map' used by map at file '/etc/haproxy/haproxy.cfg' line 40. curr_ver=3 next_ver=4 entry_cnt=62412
5 (/etc/haproxy/maps/identities-recent.map) pattern loaded from file '/etc/haproxy/maps/identities-recent.map' used by map at file '/etc/haproxy/haproxy.cfg' line 39. curr_ver=0 next_ver=0 entry_cnt=12
"""


def test_parse_map_list() -> None:
    maps = parse_map_list(SHOW_MAP)
    assert [(m.map_id, m.path, m.curr_ver, m.next_ver, m.entry_cnt) for m in maps] == [
        (-1, "/etc/haproxy/maps/identities-0.map", 3, 4, 62412),
        (5, "/etc/haproxy/maps/identities-recent.map", 0, 0, 12),
    ]
    assert parse_map_list("") == []


def test_parse_map_entries_keeps_duplicates_and_refuses_errors() -> None:
    reply = "0x55d0a1 K1 ,eng,\n0x55d0a2 K2 ,\n0x55d0a3 K1 ,old,\n0x55d0a4 K3\n"
    assert parse_map_entries(reply) == [("K1", ",eng,"), ("K2", ","), ("K1", ",old,"), ("K3", "")]
    with pytest.raises(RuntimeCommandError):
        parse_map_entries("[3]: Unknown map identifier.")
    with pytest.raises(RuntimeCommandError):
        parse_map_entries("K1 ,eng,\n")


def test_parse_info_and_version() -> None:
    info = parse_info("Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nPid: 4242\nnot a pair\n")
    assert info == {"Name": "HAProxy", "Version": "2.6.12-1+deb12u4", "Pid": "4242"}
    assert parse_version(info["Version"]) == (2, 6, 12)
    assert parse_version("3.0-dev1") == (3, 0, 0)
    assert parse_version("HAProxy version 2.9.7 2024/05/01") == (2, 9, 7)
    with pytest.raises(ValueError):
        parse_version("unknown")


# --------------------------------------------------------------------------- master CLI

SHOW_PROC = """\
#<PID>          <type>          <reloads>       <uptime>        <version>
3101            master          2 [failed: 1]   0d00h05m12s     2.6.12-1+deb12u4
# workers
3377            worker          0               0d00h00m10s     2.6.12-1+deb12u4
# old workers
3240            worker          1               0d00h02m01s     2.6.12-1+deb12u4
3110            worker          2               0d00h05m12s     2.6.12-1+deb12u4
# programs

"""


def test_parse_show_proc() -> None:
    procs = parse_show_proc(SHOW_PROC)
    assert procs.master.pid == 3101 and procs.reloads == 2 and procs.failed_reloads == 1
    assert procs.worker_pids == [3377]
    assert [w.pid for w in procs.old_workers] == [3240, 3110]
    assert procs.workers[0].version == "2.6.12-1+deb12u4"
    fresh = parse_show_proc(SHOW_PROC.replace("2 [failed: 1]", "0"))
    assert fresh.reloads == 0 and fresh.failed_reloads == 0
    with pytest.raises(RuntimeCommandError):
        parse_show_proc("# workers\n3377 worker 0 0d00h00m10s\n")


def change(**kw: int | None) -> WorkerChange | None:
    args: dict[str, int | None] = {
        "resynced_pid": 10, "fresh_pid": 10, "connected_pid": 10,
        "reloads_before": 0, "reloads_now": 0,
    }  # fmt: skip
    args.update(kw)
    return worker_change(**args)  # type: ignore[arg-type]


def test_worker_change_tells_a_reload_from_a_restart() -> None:
    assert change() is None
    assert change(reloads_now=1) is WorkerChange.RELOAD
    assert change(reloads_now=1, fresh_pid=11) is WorkerChange.RELOAD
    assert change(fresh_pid=11) is WorkerChange.RESTART  # same reload counter: a restart
    assert change(connected_pid=11) is WorkerChange.RESTART  # our connection moved
    assert change(resynced_pid=None) is WorkerChange.RESTART  # never resynced
    # Without a master CLI (or while it re-executes) only the PIDs can tell.
    assert change(reloads_before=None, reloads_now=None, fresh_pid=11) is WorkerChange.RESTART
    assert change(reloads_before=None, reloads_now=None) is None


def test_worker_command() -> None:
    assert worker_command(3240, "del map /m K") == "@!3240 del map /m K"
    for bad in (0, -1, True):
        with pytest.raises(UnsafeRuntimeArgument):
            worker_command(bad, "show info")


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("unix:/run/admin.sock", RuntimeAddress("unix", path="/run/admin.sock")),
        ("unix@/run/admin.sock", RuntimeAddress("unix", path="/run/admin.sock")),
        ("/run/admin.sock", RuntimeAddress("unix", path="/run/admin.sock")),
        ("tcp:127.0.0.1:9999", RuntimeAddress("tcp", host="127.0.0.1", port=9999)),
        ("ipv4@127.0.0.1:9999", RuntimeAddress("tcp", host="127.0.0.1", port=9999)),
        ("tcp:[::1]:9999", RuntimeAddress("tcp", host="::1", port=9999)),
    ],
)
def test_runtime_addresses(text: str, address: RuntimeAddress) -> None:
    assert RuntimeAddress.parse(text) == address
    assert RuntimeAddress.parse(str(address)) == address


@pytest.mark.parametrize("bad", ["relative.sock", "tcp:127.0.0.1", "tcp:host:0", "tcp::99"])
def test_bad_runtime_addresses(bad: str) -> None:
    with pytest.raises(ValueError):
        RuntimeAddress.parse(bad)
