"""Sandbox command lines: what bubblewrap is asked to do, and the launch script's quoting."""

import subprocess

import pytest

from clrk_runtime.sandbox.layouts import bwrap_argv, launch_script, stub_script


def _argv(**overrides: object) -> list[str]:
    fields: dict[str, object] = {
        "stub": "STUB",
        "meta_dir": "/r/s/meta",
        "hide": ["/r"],
        "binds": ["/src:/app"],
        "relay_socket": "/r/egress.sock",
        "uid": 65534,
        "gid": 65534,
        "path": "/usr/bin:/bin",
        "root_entries": [("usr", None), ("bin", "usr/bin"), ("proc", None)],
    }
    fields.update(overrides)
    return bwrap_argv(**fields)  # type: ignore[arg-type]


def test_bwrap_isolates_everything_and_bridges_the_socket() -> None:
    argv = " ".join(_argv())
    assert argv.startswith("bwrap --ro-bind /usr /usr --symlink usr/bin /bin --tmpfs /r ")
    assert "--ro-bind /proc" not in argv
    assert "--remount-ro /" in argv
    for piece in (
        "--unshare-all",
        "--die-with-parent",
        "--clearenv --setenv PATH /usr/bin:/bin",
        "--uid 65534 --gid 65534",
        "--tmpfs /run --dir /run/clrk",
        "--bind /r/egress.sock /run/clrk/px.sock",
        "--ro-bind /src /app",
    ):
        assert piece in argv
    assert argv.endswith("-- sh -c STUB")


def test_without_root_entries_the_hosts_root_is_one_read_only_bind() -> None:
    argv = " ".join(_argv(root_entries=None, binds=["/usr/share:/usr/share"]))
    assert argv.startswith("bwrap --ro-bind / / --tmpfs /r --tmpfs /tmp --proc /proc --dev /dev ")
    assert "--symlink" not in argv


def test_bad_bind_is_refused() -> None:
    with pytest.raises(ValueError, match="SRC:DEST"):
        _argv(binds=["/only-src"])


def test_stub_starts_the_bridge_only_when_asked() -> None:
    assert "socat" not in stub_script(7, proxy_bridge=False)
    assert "UNIX-CONNECT:/run/clrk/px.sock" in stub_script(7, proxy_bridge=True)


def test_launch_script_quotes_anything() -> None:
    nasty = 'it\'s $HOME `id` "x"\nline2'
    script = launch_script({"V": nasty}, ["printf", "%s|%s", "$V", nasty], "/")
    done = subprocess.run(["sh", "-c", script.decode()], capture_output=True, check=True)
    assert done.stdout.decode() == f"$V|{nasty}"


def test_launch_script_leaves_exactly_the_given_environment() -> None:
    for env in ({"PATH": "/usr/bin:/bin", "A": "1"}, {"PATH": "/usr/bin:/bin", "odd-name.x": "2"}):
        script = launch_script(env, ["env"], "/tmp")
        done = subprocess.run(
            ["sh", "-c", script.decode()], capture_output=True, check=True, env={"PATH": "/usr/bin:/bin"}
        )
        assert dict(line.split("=", 1) for line in done.stdout.decode().splitlines()) == env
