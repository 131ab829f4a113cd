"""The command line: files, stdin/stdout, -k, -f, xz's manners, several files, refusals, reports.
Each call is a fresh process, except those through `in_process`."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
from conftest import SAMPLE, one_line_error, run_cli

from prequential import api, cli

DATA = SAMPLE[:3000]


@pytest.fixture(scope="module")
def packed_once(tmp_path_factory):
    directory = tmp_path_factory.mktemp("packed")
    (directory / "book.txt").write_bytes(DATA)
    done = run_cli("compress", "-q", "--preset", "tiny", str(directory / "book.txt"))
    assert done.returncode == 0, done.stderr.decode()
    return (directory / "book.txt.pq").read_bytes()


@pytest.fixture
def packed(tmp_path, packed_once):
    """A file compressed by the command, and its original, in a fresh directory."""
    src = tmp_path / "book.txt"
    src.write_bytes(DATA)
    (tmp_path / "book.txt.pq").write_bytes(packed_once)
    return src, tmp_path / "book.txt.pq"


def no_leftovers(directory, *expected):
    assert sorted(p.name for p in directory.iterdir()) == sorted(expected)


def in_process(capsysbinary, *args: str) -> subprocess.CompletedProcess:
    """The command run inside this process: it reuses the process's JAX compilations (seconds, not
    a fresh start each time), and a test may change the library under it."""
    status = cli.main(list(args))
    out, err = capsysbinary.readouterr()
    return subprocess.CompletedProcess(list(args), status, out, err)


def test_compress_decompress_files_like_xz(tmp_path):
    src = tmp_path / "book.txt"
    src.write_bytes(DATA)
    done = run_cli("compress", "--preset", "tiny", "--json", str(tmp_path / "r.json"), str(src))
    assert done.returncode == 0, done.stderr.decode()
    no_leftovers(tmp_path, "book.txt.pq", "r.json")  # the input is removed without -k, as with xz
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["original_bytes"] == len(DATA)
    assert report["file_bytes"] == (tmp_path / "book.txt.pq").stat().st_size
    assert set(report["baselines"]) == {"gzip -9", "bzip2 -9", "xz -9e", "zstd -19"}
    assert "coder overhead" in done.stderr.decode()  # the report
    done = run_cli("decompress", "-q", str(tmp_path / "book.txt.pq"))
    assert done.returncode == 0, done.stderr.decode()
    no_leftovers(tmp_path, "book.txt", "r.json")
    assert src.read_bytes() == DATA


def test_stdin_to_stdout_and_back():
    done = run_cli("compress", "-q", "--preset", "tiny", "-", stdin=DATA)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout[:4] == b"\x89PQZ" and done.stderr == b""
    back = run_cli("decompress", "-q", "-", stdin=done.stdout)
    assert back.returncode == 0 and back.stdout == DATA


def test_keep_force_and_refusal_to_overwrite(packed):
    src, pq = packed
    before = pq.read_bytes()
    message = one_line_error(run_cli("compress", "-q", "--preset", "tiny", str(src)))
    assert "already exists" in message and "-f" in message
    assert pq.read_bytes() == before and src.exists()
    message = one_line_error(run_cli("decompress", "-q", "-k", str(pq)))  # book.txt exists
    assert "already exists" in message
    done = run_cli("decompress", "-q", "-k", "-f", str(pq))
    assert done.returncode == 0 and src.read_bytes() == DATA and pq.exists()


def test_output_option_and_test_flag(packed, tmp_path):
    _, pq = packed
    out = tmp_path / "other.bin"
    done = run_cli("decompress", "-q", "-k", str(pq), "-o", str(out))
    assert done.returncode == 0 and out.read_bytes() == DATA
    done = run_cli("-t", str(pq))  # xz's -t: verify
    assert done.returncode == 0 and b"OK" in done.stderr


def test_no_command_compresses_several_files_and_reports_each(tmp_path):
    (tmp_path / "a").write_bytes(DATA)
    (tmp_path / "b").write_bytes(DATA[::-1])
    done = run_cli("-k", "--preset", "tiny", "a", "missing", "b", cwd=tmp_path)
    assert done.returncode == 1  # one file failed; the others were still done
    err = done.stderr.decode()
    lines = err.splitlines()  # also at the carriage returns of progress bars
    assert "Traceback" not in err
    errors = [line for line in lines if line.startswith("prequential: ")]
    assert len(errors) == 1 and errors[0].startswith("prequential: missing: cannot read 'missing'")
    assert err.count("coder overhead") == 2 and "a:" in lines and "b:" in lines  # a report for each, under its name
    no_leftovers(tmp_path, "a", "a.pq", "b", "b.pq")


def test_decompress_several_files_with_d_and_c(packed, capsysbinary):
    src, pq = packed
    other = pq.with_name("other.txt.pq")
    other.write_bytes(pq.read_bytes())
    done = in_process(capsysbinary, "-dc", str(pq), str(other))  # to standard output, one after the other, as xz -dc
    assert done.returncode == 0 and done.stdout == DATA + DATA, done.stderr.decode()
    missing = str(pq.with_name("missing.pq"))
    done = in_process(capsysbinary, "-dfq", str(pq), missing, str(other))
    assert f"{missing}: cannot read" in one_line_error(done) and done.returncode == 1
    no_leftovers(pq.parent, "book.txt", "other.txt")
    assert src.read_bytes() == DATA and pq.with_name("other.txt").read_bytes() == DATA


def test_c_compresses_a_file_to_standard_output(tmp_path, capsysbinary):
    (tmp_path / "a").write_bytes(DATA)
    done = in_process(capsysbinary, "-qc", "--preset", "tiny", str(tmp_path / "a"))
    assert done.returncode == 0 and done.stdout[:4] == b"\x89PQZ", done.stderr.decode()
    no_leftovers(tmp_path, "a")  # kept: nothing was written beside it


def test_compress_verify_checks_in_a_fresh_process(tmp_path):
    src = tmp_path / "a"
    src.write_bytes(DATA)
    done = run_cli("compress", "-q", "-k", "--verify", "--preset", "tiny", str(src), "-o", str(tmp_path / "a.pq"))
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "a.pq").exists()


def test_compress_verify_refuses_a_file_that_does_not_decode(tmp_path, monkeypatch, capsysbinary):
    """The encoder is made to write a damaged file: the verifying process must then fail, and
    nothing may be left at the destination."""
    real_encode = api.encode

    def damaging_encode(source, out, *args, **kwargs):
        report = real_encode(source, out, *args, **kwargs)
        end = out.tell()
        out.seek(end // 2)
        byte = out.read(1)[0]
        out.seek(end // 2)
        out.write(bytes([byte ^ 0x10]))
        out.seek(end)
        return report

    monkeypatch.setattr(api, "encode", damaging_encode)
    src = tmp_path / "a"
    src.write_bytes(DATA)
    done = in_process(capsysbinary, "compress", "-q", "--verify", "--preset", "tiny", str(src))  # no -k: the input stays anyway
    assert "verification failed, nothing written" in one_line_error(done) and done.returncode == 1
    no_leftovers(tmp_path, "a")  # no a.pq, no temporary file beside it
    assert src.read_bytes() == DATA


def test_list_prints_header_and_breakdown(packed, tmp_path):
    _, pq = packed
    done = run_cli("-l", str(pq), "--json", str(tmp_path / "info.json"))  # xz's -l: info
    text = done.stdout.decode()
    assert done.returncode == 0
    for needle in ("prequential 0.1.0", "sha256", "numerics: cpu", "config:", "coder overhead", "model code", "d_model=32"):
        assert needle in text
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["original_bytes"] == len(DATA) and info["config"]["d_model"] == 32


def test_info_on_a_stored_file(tmp_path):
    (tmp_path / "noise").write_bytes(hashlib.shake_256(b"noise").digest(512))  # incompressible, and the same every run
    assert run_cli("compress", "-q", "-k", "--preset", "tiny", "noise", cwd=tmp_path).returncode == 0
    done = run_cli("info", "noise.pq", "--json", "i.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert "512 bytes stored as they are" in done.stdout.decode()
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["stored"] and info["report"]["header_bytes"] == 16


def test_corrupt_file_leaves_no_output(packed):
    src, pq = packed
    src.unlink()
    damaged = bytearray(pq.read_bytes())
    damaged[len(damaged) // 2] ^= 0x10
    pq.write_bytes(bytes(damaged))
    message = one_line_error(run_cli("decompress", "-q", "-k", str(pq)))
    assert "corrupt" in message
    no_leftovers(pq.parent, "book.txt.pq")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["decompress", "missing.pq"], "cannot read"),
        (["decompress", "notes.txt"], "does not end in .pq"),
        (["compress", "--preset", "tiny", "--config", "c.toml", "x"], "--config: not allowed with argument --preset"),
        (["compress", "--config", "bad.toml", "x"], "learning_rate"),
        (["compress", "--threads", "64", "x"], "64 CPU thread(s) asked for"),
        (["-T", "64", "x"], "64 CPU thread(s) asked for"),
        (["compress", "--bogus", "x"], "unrecognized arguments: --bogus"),
        ([], "required: COMMAND"),
        (["compare", "x", "--estimators", "bogus"], "unknown estimator 'bogus'"),
        (["-dt", "x.pq"], "give one of -z, -d, -t, -l, not -d and -t"),
        (["-o", "out.pq", "x", "notes.txt"], "-o/-c: for one FILE only, not 2"),
        (["-c", "x", "notes.txt"], "-o/-c: for one FILE only, not 2"),  # a .pq holds one file
        (["info", "--json", "i.json", "x.pq", "y.pq"], "--json: for one FILE only, not 2"),
    ],
)
def test_usage_errors_are_one_line_and_exit_1(tmp_path, args, needle):
    (tmp_path / "notes.txt").write_bytes(b"hello")
    (tmp_path / "x").write_bytes(b"hello")
    (tmp_path / "bad.toml").write_text('learning_rate = "fast"\n')
    done = run_cli(*args, cwd=tmp_path)
    assert needle in one_line_error(done) and done.returncode == 1  # argparse alone would exit 2


def test_refuses_to_write_compressed_data_to_a_terminal(tmp_path):
    # `script` gives the child a terminal as stdout; skip where it is missing.
    import shutil
    import subprocess
    import sys

    if shutil.which("script") is None:
        pytest.skip("no script(1) to provide a terminal")
    (tmp_path / "x").write_bytes(b"hi")
    cmd = f"{sys.executable} -m prequential compress -q -o - x"
    done = subprocess.run(["script", "-qec", cmd, "/dev/null"], cwd=tmp_path, capture_output=True, timeout=120)
    assert done.returncode != 0 and b"terminal" in done.stdout


LAZY = """
import gc, sys
import prequential
assert "jax" not in sys.modules, "import prequential imported JAX"
import prequential.cli  # imports the submodule prequential.measure
threshold = gc.get_threshold()
assert prequential.measure.__name__ == "measure" and callable(prequential.measure), prequential.measure
assert prequential.decompress(prequential.compress(b"lazy lazy", "tiny")) == b"lazy lazy"
assert set(prequential.__all__) <= set(dir(prequential))
try:
    prequential.no_such_name
except AttributeError:
    pass
else:
    raise AssertionError("an unknown name resolved")
print(threshold)
"""


def test_package_imports_lazily_and_only_the_command_changes_the_collector():
    # The command sets the collector's thresholds before it imports JAX (__main__.py), which needs
    # `import prequential` to import nothing heavy; a library import leaves the process as it was.
    import gc
    import sys

    done = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(gc.get_threshold())
    # The command's entry with the CLI itself replaced by a probe of the collector.
    probe = "import gc, prequential.cli as c; c.entry = lambda: print(gc.get_threshold()[0]); import prequential.__main__ as m; m.entry()"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 10 * gc.get_threshold()[0]
