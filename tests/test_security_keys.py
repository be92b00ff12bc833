"""CURVE key files: generate, permissions, refusals, allow-lists, the `evovae keys` CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from evo.cli.keys import main as keys_main
from transport import keyfiles, keys
from transport.keyfiles import KeyFileError
from transport.keys import CurveClient, CurveServer

REPO = Path(__file__).resolve().parents[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---------------------------------------------------------------------- generate


def test_generate_writes_public_0644_and_secret_0600(tmp_path):
    public, secret = keyfiles.generate(tmp_path / "k", "head")
    assert (public, secret) == (tmp_path / "k" / "head.key", tmp_path / "k" / "head.key_secret")
    assert mode(secret) == 0o600
    assert mode(public) == 0o644
    assert mode(tmp_path / "k") == 0o700  # created private
    pub, sec = keys.load_server_secret(secret)
    assert keyfiles.load_public(public) == pub
    assert zmq.curve_public(sec) == pub
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["head.key", "head.key_secret"]  # no scratch left


def test_generate_never_overwrites(tmp_path):
    _public, secret = keyfiles.generate(tmp_path, "w")
    before = secret.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        keyfiles.generate(tmp_path, "w")
    assert secret.read_bytes() == before


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "-x", "x" * 65, "sp ace"])
def test_generate_rejects_bad_names(tmp_path, name):
    with pytest.raises(KeyFileError, match="bad key name"):
        keyfiles.generate(tmp_path, name)


# ---------------------------------------------------------------------- loading


def test_load_server_secret_refuses_a_group_or_world_readable_file(tmp_path):
    _, secret = keyfiles.generate(tmp_path, "head")
    os.chmod(secret, 0o644)
    with pytest.raises(KeyFileError) as err:
        keys.load_server_secret(secret)
    message = str(err.value)
    assert str(secret) in message and f"chmod 600 {secret}" in message and "0644" in message
    os.chmod(secret, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        keys.load_server_secret(secret)
    os.chmod(secret, 0o600)
    keys.load_server_secret(secret)  # fixed: accepted


def test_load_server_secret_refuses_what_is_not_a_secret_certificate(tmp_path):
    public, _secret = keyfiles.generate(tmp_path, "head")
    os.chmod(public, 0o600)  # even private, a public certificate is not a secret one
    with pytest.raises(KeyFileError, match="not a secret key certificate"):
        keys.load_server_secret(public)
    junk = tmp_path / "junk"
    junk.write_text("hello\n")
    junk.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a secret key certificate"):
        keys.load_server_secret(junk)
    with pytest.raises(KeyFileError, match="no such key file"):
        keys.load_server_secret(tmp_path / "missing.key_secret")
    with pytest.raises(KeyFileError, match="not a regular file"):
        keys.load_server_secret(tmp_path)


def test_load_secret_refuses_a_tampered_pair(tmp_path):
    _, secret = keyfiles.generate(tmp_path, "a")
    other_public, _ = keyfiles.generate(tmp_path, "b")
    text = secret.read_text()
    own = keyfiles.load_public(tmp_path / "a.key").decode()
    secret.write_text(text.replace(own, keyfiles.load_public(other_public).decode()))
    with pytest.raises(KeyFileError, match="does not belong"):
        keyfiles.load_secret(secret)
    secret.write_text(text.replace(own, "not-a-key"))
    with pytest.raises(KeyFileError, match="40-character"):
        keyfiles.load_secret(secret)


def test_load_public_refuses_a_secret_file(tmp_path):
    _, secret = keyfiles.generate(tmp_path, "w")
    with pytest.raises(KeyFileError, match="holds a secret key"):
        keyfiles.load_public(secret)


def test_load_allowlist_from_a_directory_or_files(tmp_path):
    allow = tmp_path / "allow"
    names = ["w1", "w2", "w3"]
    publics = [keyfiles.generate(allow, n)[0] for n in names]  # secrets are in there too: only *.key count
    expected = frozenset(keyfiles.load_public(p) for p in publics)
    assert keyfiles.load_allowlist(allow) == expected
    assert keyfiles.load_allowlist(str(allow)) == expected
    assert keyfiles.load_allowlist(publics[:2]) == frozenset(keyfiles.load_public(p) for p in publics[:2])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeyFileError, match="no worker public keys"):
        keyfiles.load_allowlist(empty)
    with pytest.raises(KeyFileError, match="no such allow-list"):
        keyfiles.load_allowlist(tmp_path / "nope")
    with pytest.raises(KeyFileError, match="holds a secret key"):
        keyfiles.load_allowlist([allow / "w1.key_secret"])


def test_curve_settings_validate_and_never_show_the_secret(tmp_path):
    _, head_secret = keyfiles.generate(tmp_path, "head")
    keyfiles.generate(tmp_path / "allow", "w1")
    server = CurveServer.from_files(head_secret, tmp_path / "allow")
    assert len(server.allowed) == 1
    assert server.secret_key.decode() not in repr(server)
    with pytest.raises(KeyFileError, match="empty"):
        CurveServer(server.public_key, server.secret_key, frozenset())
    pub, _sec = zmq.curve_keypair()
    assert len(server.allowing(pub).allowed) == 2
    with pytest.raises(KeyFileError, match="does not belong"):
        CurveServer(pub, server.secret_key, frozenset([pub]))
    client = CurveClient.from_files(tmp_path / "allow" / "w1.key_secret", tmp_path / "head.key")
    assert client.server_key == server.public_key
    assert client.secret_key.decode() not in repr(client)
    with pytest.raises(KeyFileError, match="holds a secret key"):  # the head's secret is not for workers
        CurveClient.from_files(tmp_path / "allow" / "w1.key_secret", head_secret)


def test_write_public_round_trips(tmp_path):
    pub, _ = zmq.curve_keypair()
    path = keyfiles.write_public(tmp_path / "server.key", pub)
    assert keyfiles.load_public(path) == pub
    assert mode(path) & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@pytest.mark.parametrize(
    "endpoint, loopback",
    [
        ("tcp://127.0.0.1:5557", True),
        ("tcp://127.0.0.1:*", True),
        ("tcp://127.1.2.3:5557", True),
        ("tcp://localhost:5557", True),
        ("tcp://[::1]:5557", True),
        ("ipc:///tmp/evovae.sock", True),
        ("inproc://x", True),
        ("tcp://*:5557", False),
        ("tcp://0.0.0.0:5557", False),
        ("tcp://[::]:5557", False),
        ("tcp://10.0.5.1:5557", False),
        ("tcp://eth0:5557", False),
        ("tcp://head-node:5557", False),
        ("tcp://127.0.0.1;10.0.0.1:5557", False),
        ("garbage", False),
    ],
)
def test_is_loopback_endpoint(endpoint, loopback):
    assert keys.is_loopback_endpoint(endpoint) is loopback


# ---------------------------------------------------------------------- CLI


def test_cli_generate_and_show(tmp_path, capsys):
    assert keys_main(["generate", "--dir", str(tmp_path / "keys"), "head", "worker-gpu0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith(f"wrote {tmp_path / 'keys' / 'head.key'} (public key ")
    assert "head.key_secret (secret, mode 0600)" in out[0]
    for name in ("head", "worker-gpu0"):
        assert mode(tmp_path / "keys" / f"{name}.key_secret") == 0o600
        assert mode(tmp_path / "keys" / f"{name}.key") == 0o644
    public = keyfiles.load_public(tmp_path / "keys" / "head.key").decode()
    assert public in out[0]
    for file in ("head.key", "head.key_secret"):  # show prints the public key, never the secret
        assert keys_main(["show", str(tmp_path / "keys" / file)]) == 0
        assert capsys.readouterr().out == public + "\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--dir", "{d}", "bad/name"], "bad key name"),
        (["generate", "--dir", "{d}", "same", "same"], "given twice"),
        (["show", "{d}/missing.key"], "no such key file"),
        (["show", "{d}/junk"], "not a key certificate"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "junk").write_text("nothing\n")
    assert keys_main([a.format(d=tmp_path) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("evovae keys: error: ") and message in lines[0]


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["generate"], ["show"]])
def test_cli_usage_errors_exit_2_with_one_line(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        keys_main(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "error:" in lines[0]


def test_cli_as_a_process(tmp_path):
    """``evovae keys`` in a process of its own, through the entry point's DELEGATED table."""
    from evo.cli import app as cli

    assert cli.DELEGATED["keys"][0] == "evo.cli.keys:main"
    commands = [[sys.executable, "-m", "evo.cli", "keys"]]
    for i, command in enumerate(commands):
        d = tmp_path / str(i)
        done = subprocess.run([*command, "generate", "--dir", str(d), "head"], capture_output=True, text=True,
                              cwd=REPO, timeout=30)
        assert done.returncode == 0, done.stderr
        assert "head.key_secret (secret, mode 0600)" in done.stdout
        assert mode(d / "head.key_secret") == 0o600
        again = subprocess.run([*command, "generate", "--dir", str(d), "head"], capture_output=True, text=True,
                               cwd=REPO, timeout=30)
        assert again.returncode == 2 and len(again.stderr.splitlines()) == 1 and "already exists" in again.stderr


# ---------------------------------------------------------------------- the head's policy


def _head(tmp_path):
    _, secret = keyfiles.generate(tmp_path, "head")
    keyfiles.generate(tmp_path / "allow", "w1")
    return secret, tmp_path / "allow"


@pytest.mark.parametrize("bind", ["tcp://127.0.0.1:5557", "tcp://localhost:5557", "ipc:///tmp/x"])
def test_head_stays_plain_on_loopback_by_default(bind):
    assert keys.head_curve(bind, "tcp://127.0.0.1:5558", server_key_secret=None, allow=None, insecure=False) is None


@pytest.mark.parametrize("bind, sink", [("tcp://*:5557", "tcp://*:5558"), ("tcp://0.0.0.0:5557", "tcp://0.0.0.0:5558"),
                                        ("tcp://127.0.0.1:5557", "tcp://10.1.2.3:5558")])
def test_head_refuses_a_plain_non_loopback_bind_unless_insecure(bind, sink):
    with pytest.raises(KeyFileError, match=r"refusing to bind .* without encryption.*--insecure"):
        keys.head_curve(bind, sink, server_key_secret=None, allow=None, insecure=False)
    assert keys.head_curve(bind, sink, server_key_secret=None, allow=None, insecure=True) is None


def test_head_curve_from_files_and_conflicts(tmp_path):
    secret, allow = _head(tmp_path)
    curve = keys.head_curve("tcp://*:5557", "tcp://*:5558", server_key_secret=secret, allow=allow, insecure=False)
    assert isinstance(curve, CurveServer) and len(curve.allowed) == 1
    with pytest.raises(KeyFileError, match="excludes"):
        keys.head_curve("tcp://*:5557", "tcp://*:5558", server_key_secret=secret, allow=allow, insecure=True)
    for half in ({"server_key_secret": secret, "allow": None}, {"server_key_secret": None, "allow": allow}):
        with pytest.raises(KeyFileError, match="needs both"):
            keys.head_curve("tcp://*:5557", "tcp://*:5558", insecure=False, **half)
    os.chmod(secret, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        keys.head_curve("tcp://*:5557", "tcp://*:5558", server_key_secret=secret, allow=allow, insecure=False)


def test_local_worker_keys(tmp_path):
    secret, allow = _head(tmp_path)
    curve = CurveServer.from_files(secret, allow)
    extended, argv = keys.local_worker_keys(curve, tmp_path / "local")
    assert argv[0] == "--server-key" and argv[2] == "--key"
    client = CurveClient.from_files(argv[3], argv[1])
    assert client.server_key == curve.public_key
    assert extended.allowed == curve.allowed | {client.public_key}
    assert mode(Path(argv[3])) == 0o600


# ---------------------------------------------------------------------- what others could have changed


@pytest.mark.parametrize("dir_mode", [0o777, 0o775, 0o1777])
def test_an_allow_directory_others_can_write_is_refused(tmp_path, dir_mode):
    allow = tmp_path / "allow"
    keyfiles.generate(allow, "w1")
    allow.chmod(dir_mode)
    with pytest.raises(KeyFileError) as err:
        keyfiles.load_allowlist(allow)
    message = str(err.value)
    assert "allow-list directory" in message and "writable by group/others" in message
    assert f"chmod go-w {allow}" in message
    allow.chmod(0o755)
    assert len(keyfiles.load_allowlist(allow)) == 1


def test_a_public_key_file_others_can_write_is_refused(tmp_path):
    public, _ = keyfiles.generate(tmp_path / "allow", "w1")
    public.chmod(0o666)
    for load in (keyfiles.load_public, keyfiles.load_allowlist):
        with pytest.raises(KeyFileError, match=r"public key file .* is writable by group/others \(mode 0666\)"):
            load(public if load is keyfiles.load_public else tmp_path / "allow")


def test_a_public_key_given_as_the_secret_gets_a_precise_message(tmp_path):
    public, _ = keyfiles.generate(tmp_path, "head")
    assert mode(public) == 0o644  # readable by others, as a public key may be: not the problem here
    with pytest.raises(KeyFileError) as err:
        keys.load_server_secret(public)
    message = str(err.value)
    assert "is a public key file" in message and ".key_secret file" in message
    assert "chmod" not in message


def test_generate_many_is_all_or_nothing(tmp_path, capsys):
    keyfiles.generate(tmp_path, "b")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(KeyFileError, match=r"b\.key already exists.*nothing was written"):
        keyfiles.generate_many(tmp_path, ["a", "b", "c"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no a.*, no c.*, no scratch directory
    assert keys_main(["generate", "--dir", str(tmp_path), "a", "b", "c"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    made = keyfiles.generate_many(tmp_path, ["a", "c"])
    assert [p.name for pair in made for p in pair] == ["a.key", "a.key_secret", "c.key", "c.key_secret"]


def test_reloaded_reads_the_allow_list_again_and_keeps_the_extra_keys(tmp_path):
    _, head_secret = keyfiles.generate(tmp_path, "head")
    allow = tmp_path / "allow"
    w1 = keyfiles.load_public(keyfiles.generate(allow, "w1")[0])
    extra, _ = zmq.curve_keypair()
    server = CurveServer.from_files(head_secret, allow).allowing(extra)
    w2 = keyfiles.load_public(keyfiles.generate(allow, "w2")[0])
    (allow / "w1.key").unlink()
    again = server.reloaded()
    assert again.allowed == {w2, extra} and w1 not in again.allowed
    assert again.public_key == server.public_key and again.allow_from == (str(allow),)
    with pytest.raises(KeyFileError, match="nothing to reload"):
        CurveServer(server.public_key, server.secret_key, frozenset([w1])).reloaded()
