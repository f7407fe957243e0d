"""The tokens file is validated by a strict model: wrong types are errors, never a
grant (``"admin": "false"`` used to make an admin, ``"proposals": "propA"`` the set
{p, r, o, A}); a bad file stops the gateway at start with one line naming the file
and the entry, and never the token."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from panreduce_gateway.auth import StaticTokens, TokensFileError

BIN = Path(sys.executable).parent


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(doc))
    return path


BAD = [
    (
        [{"token": "secret-a", "subject": "alice", "proposals": ["pA"], "admin": "false"}],
        "tokens[0] (subject 'alice'): admin: Input should be a valid boolean",
    ),
    (
        [{"token": "secret-a", "subject": "alice", "proposals": "propA"}],
        "tokens[0] (subject 'alice'): proposals: Input should be a valid list",
    ),
    (
        [
            {"token": "secret-a", "subject": "alice", "proposals": ["pA"]},
            {"token": "secret-b", "subject": "bob", "proposals": ["pB"], "role": "admin"},
        ],
        "tokens[1] (subject 'bob'): role: Extra inputs are not permitted",
    ),
    (
        [{"token": "", "subject": "alice", "proposals": ["pA"]}],
        "tokens[0] (subject 'alice'): token: String should have at least 1 character",
    ),
    (
        [{"token": "secret-a", "subject": "alice", "proposals": [1]}],
        "tokens[0] (subject 'alice'): proposals.0: Input should be a valid string",
    ),
    (
        [{"token": "secret-a", "subject": "alice"}],
        "tokens[0] (subject 'alice'): Value error, give the token's proposals, or admin: true",
    ),
    (
        [{"token": "sha256:abc", "subject": "alice", "proposals": ["pA"]}],
        "tokens[0] (subject 'alice'): token: Value error, sha256: must be followed by 64 hex digits",
    ),
    (
        [
            {"token": "secret-a", "subject": "alice", "proposals": ["pA"]},
            {"token": "sha256:" + hashlib.sha256(b"secret-a").hexdigest(), "subject": "mallory", "proposals": ["pB"]},
        ],
        "tokens[1] (subject 'mallory') repeats the token of tokens[0]; every token must be unique",
    ),
    # a proposal name fills one path component: 'AB/1' would lie inside proposal AB's folder
    # ('/data/{proposal}/' -> /data/AB/1/), '..' above every proposal's
    (
        [{"token": "secret-a", "subject": "alice", "proposals": ["AB/1"]}],
        "tokens[0] (subject 'alice'): proposals: Value error, proposal 'AB/1': a proposal name fills one path",
    ),
    (
        [{"token": "secret-a", "subject": "alice", "proposals": ["pA", ".."]}],
        "tokens[0] (subject 'alice'): proposals: Value error, proposal '..': a proposal name fills one path",
    ),
    (
        [{"token": "secret-a", "subject": "alice", "proposals": ["AB%2f1"]}],
        "proposal 'AB%2f1': a proposal name fills one path",
    ),
    ([{"token": "secret-a", "subject": "alice", "proposals": ["pA\\x"]}], "a proposal name fills one path"),
]


@pytest.mark.parametrize(("entries", "problem"), BAD)
def test_a_bad_entry_is_an_error_naming_the_file_and_the_entry(tmp_path, entries, problem):
    path = write(tmp_path, {"tokens": entries})
    with pytest.raises(TokensFileError) as caught:
        StaticTokens.from_file(path)
    message = caught.value.message
    assert message.startswith(f"tokens file {path}: ")
    assert problem in message
    assert "\n" not in message
    assert "secret-a" not in message  # the token itself is never printed


@pytest.mark.parametrize("doc", [{"tokens": {"token": "x"}}, {"tokens": [], "extra": 1}, "tokens", 3])
def test_a_file_of_the_wrong_shape(tmp_path, doc):
    with pytest.raises(TokensFileError, match="must be"):
        StaticTokens.from_file(write(tmp_path, doc))


def test_unreadable_or_not_json(tmp_path):
    with pytest.raises(TokensFileError, match="cannot be read"):
        StaticTokens.from_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"tokens": [')
    with pytest.raises(TokensFileError, match="not valid JSON"):
        StaticTokens.from_file(bad)


def test_a_good_file_grants_exactly_what_it_says(tmp_path):
    path = write(
        tmp_path,
        {
            "tokens": [
                {"token": "secret-a", "subject": "alice", "proposals": ["propA"], "admin": False},
                {"token": "sha256:" + hashlib.sha256(b"ops").hexdigest().upper(), "subject": "ops", "admin": True},
            ]
        },
    )
    tokens = StaticTokens.from_file(path)
    alice = tokens.identify("secret-a")
    assert alice.proposals == frozenset({"propA"}) and not alice.admin
    assert alice.may_see("propA") and not alice.may_see("p")
    ops = tokens.identify("ops")
    assert ops.admin and ops.proposals is None
    assert tokens.identify("secret-b") is None
    # a bare list is accepted as before
    assert StaticTokens.from_file(write(tmp_path, [{"token": "t", "subject": "s", "proposals": ["x"]}])).identify("t")


def test_the_gateway_does_not_start_with_a_bad_file(tmp_path):
    path = write(
        tmp_path, {"tokens": [{"token": "secret-a", "subject": "alice", "proposals": ["pA"], "admin": "false"}]}
    )
    done = subprocess.run(
        [str(BIN / "panreduce"), "gateway", "--tokens-file", str(path), "--route", "scan=127.0.0.1:1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1] == (
        f"panreduce: error: tokens file {path}: tokens[0] (subject 'alice'): admin: Input should be a valid boolean"
    )
    assert "secret-a" not in done.stderr
