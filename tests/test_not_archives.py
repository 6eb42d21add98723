"""What is not an archive, end to end (issue 14): documents and packages made by the
real tools are delivered as they are, ``extract: true`` extracts them, and a login page,
a JSON error or a text under an archive's name fails with ``corrupt_archive`` saying
what the server sent. There is no LibreOffice or Office here: the .docx and .odt are
zips laid out as their specs say (ECMA-376 part 2, ODF 1.3 part 3: ``mimetype`` first
and stored), made with Info-ZIP's ``zip``, as is the EPUB (OCF 3)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from archives import tar_bytes

LOGIN = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in \xe2\x80\x93 Example</title></head>"
    b"<body><form method=post>user <input name=u></form></body></html>\n"
)
BIG_LOGIN = LOGIN.replace(b"</body>", b"<p>" + b"lorem ipsum " * 10_000 + b"</p></body>")
TITLE = "an HTML page (title: 'Sign in \u2013 Example')"


def _need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")


def _run(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=120)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _jar(tmp: Path) -> Path:
    _need("jar")
    src = _tree(tmp / "jar-src", {"app/config.properties": "greeting=hello\n"})
    _run(["jar", "cf", str(tmp / "app.jar"), "-C", str(src), "."], tmp)
    return tmp / "app.jar"


def _bdist_wheel_in_setuptools() -> bool:
    try:
        return importlib.util.find_spec("setuptools.command.bdist_wheel") is not None
    except ImportError:  # no setuptools at all
        return False


def _wheel(tmp: Path) -> Path:
    if importlib.util.find_spec("wheel") is None and not _bdist_wheel_in_setuptools():
        pytest.skip("the wheel package is not installed (pyproject's test extra has it)")
    src = _tree(
        tmp / "tiny",
        {
            "tiny/__init__.py": "VALUE = 1\n",
            "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\n'
            'build-backend = "setuptools.build_meta"\n'
            '[project]\nname = "tiny"\nversion = "0.1"\n',
        },
    )
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps"]
    _run([*cmd, "--no-index", "-w", str(tmp / "dist"), "."], src)
    (wheel_file,) = (tmp / "dist").glob("tiny-0.1-*.whl")
    return wheel_file


def _ocf(tmp: Path, name: str, mimetype: str, files: dict[str, str]) -> Path:
    """A zip whose first member is ``mimetype``, stored: EPUB's and ODF's container."""
    _need("zip")
    src = _tree(tmp / f"{name}-src", {"mimetype": mimetype, **files})
    out = tmp / name
    _run(["zip", "-q", "-X", "-0", str(out), "mimetype"], src)
    _run(["zip", "-q", "-X", "-r", str(out), *sorted({f.split("/")[0] for f in files})], src)
    return out


def _epub(tmp: Path) -> Path:
    container = (
        '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:'
        'opendocument:xmlns:container"><rootfiles><rootfile full-path="OEBPS/book.opf" '
        'media-type="application/oebps-package+xml"/></rootfiles></container>\n'
    )
    return _ocf(
        tmp,
        "book.epub",
        "application/epub+zip",
        {
            "META-INF/container.xml": container,
            "OEBPS/book.opf": '<?xml version="1.0"?><package version="3.0"/>\n',
            "OEBPS/ch1.xhtml": "<html><body><p>Chapter one</p></body></html>\n",
        },
    )


def _odt(tmp: Path) -> Path:
    return _ocf(
        tmp,
        "letter.odt",
        "application/vnd.oasis.opendocument.text",
        {
            "META-INF/manifest.xml": '<?xml version="1.0"?><manifest:manifest/>\n',
            "content.xml": '<?xml version="1.0"?><office:document-content/>\n',
        },
    )


def _docx(tmp: Path) -> Path:
    _need("zip")
    src = _tree(
        tmp / "docx-src",
        {
            "[Content_Types].xml": '<?xml version="1.0"?><Types/>\n',
            "_rels/.rels": '<?xml version="1.0"?><Relationships/>\n',
            "word/document.xml": '<?xml version="1.0"?><w:document/>\n',
        },
    )
    _run(
        ["zip", "-q", "-X", "-r", str(tmp / "Report.DOCX"), "[Content_Types].xml", "_rels", "word"],
        src,
    )
    return tmp / "Report.DOCX"


def _apk(tmp: Path) -> Path:
    _need("zip")
    src = _tree(tmp / "apk-src", {"AndroidManifest.xml": "<manifest/>\n", "classes.dex": "dex\n"})
    _run(["zip", "-q", "-r", str(tmp / "app.apk"), "AndroidManifest.xml", "classes.dex"], src)
    return tmp / "app.apk"


def _documents(tmp: Path) -> list[Path]:
    tmp.mkdir()
    return [make(tmp) for make in (_jar, _wheel, _epub, _odt, _docx, _apk)]


def _job(url: str, **options: Any) -> str:
    return json.dumps({"url": url, **options})  # JSON is YAML


def _ok(sc: dict[str, Any]) -> dict[str, Any]:
    assert sc["status"] == "ok", sc
    return sc


def _failed(d: Any, name: str) -> str:
    sc = d.wait_status(name)
    assert sc["status"] == "failed" and sc["error"]["code"] == "corrupt_archive", sc
    assert not (d.outbox / name).exists()
    message: str = sc["error"]["message"]
    return message


def test_documents_and_packages_are_delivered_as_they_are(fault_server, make_daemon, tmp_path):
    docs = _documents(tmp_path / "docs")
    d = make_daemon()
    for i, doc in enumerate(docs):
        assert zipfile.is_zipfile(doc), doc
        fault_server.add(f"/files/{doc.name}", doc.read_bytes())
        d.drop(f"doc{i}", fault_server.url(f"/files/{doc.name}"))
    # the server's name counts, and so does the filename option
    fault_server.add(
        "/get",
        docs[2].read_bytes(),
        headers={"Content-Disposition": 'attachment; filename="Novel.EPUB"'},
    )
    d.drop("disposed", fault_server.url("/get"))
    fault_server.add("/bundle.zip", docs[0].read_bytes())
    d.drop("renamed", _job(fault_server.url("/bundle.zip"), filename="tool.war"))
    expected = {f"doc{i}": (doc.name, doc) for i, doc in enumerate(docs)}
    expected |= {"disposed": ("Novel.EPUB", docs[2]), "renamed": ("tool.war", docs[0])}
    for job, (name, doc) in expected.items():
        sc = _ok(d.wait_status(job))
        assert sc["files"] == [name] and sc["archive"]["format"] == "file", sc
        assert (d.outbox / job / name).read_bytes() == doc.read_bytes()


def test_extract_true_extracts_documents(fault_server, make_daemon, tmp_path):
    docs = _documents(tmp_path / "docs")
    d = make_daemon()
    for i, doc in enumerate(docs):
        fault_server.add(f"/files/{doc.name}", doc.read_bytes())
        d.drop(f"doc{i}", _job(fault_server.url(f"/files/{doc.name}"), extract=True))
    for i, doc in enumerate(docs):
        sc = _ok(d.wait_status(f"doc{i}"))
        with zipfile.ZipFile(doc) as zf:
            members = {m.filename: zf.read(m) for m in zf.infolist() if not m.is_dir()}
        assert sc["archive"]["format"] == "zip" and sc["files"] == sorted(members), sc
        for name, data in members.items():
            assert (d.outbox / f"doc{i}" / name).read_bytes() == data


def test_pages_under_an_archive_name_fail_saying_what_arrived(fault_server, make_daemon):
    d = make_daemon()
    served = {
        "/login/x.tar.gz": LOGIN,
        "/big/x.tar": BIG_LOGIN,  # past the size where streaming extraction looks
        "/big/x.tar.gz": BIG_LOGIN,
        "/api/x.zip": b'{"error": "token expired", "status": 401}\n',
        "/files/x.7z": b"Access denied\n",
        "/gz/x.tar.gz": gzip.compress(LOGIN),  # a page sent gzip-compressed
        "/empty/x.zip": b"",
        "/page/report.html": LOGIN,  # extract: true below
    }
    for path, body in served.items():
        fault_server.add(path, body)
    fault_server.add("/dl", LOGIN, headers={"Content-Disposition": "attachment; filename=data.zip"})
    jobs = {
        "login": fault_server.url("/login/x.tar.gz"),
        "bigtar": fault_server.url("/big/x.tar"),
        "bigtgz": fault_server.url("/big/x.tar.gz"),
        "json": fault_server.url("/api/x.zip"),
        "text": fault_server.url("/files/x.7z"),
        "gzpage": fault_server.url("/gz/x.tar.gz"),
        "empty": fault_server.url("/empty/x.zip"),
        "disposed": fault_server.url("/dl"),
        "forced": _job(fault_server.url("/page/report.html"), extract=True),
        "named": _job(fault_server.url("/page/report.html"), filename="report.tgz"),
    }
    for name, job in jobs.items():
        d.drop(name, job)
    page = f"the server sent {TITLE}, not a"
    login = "archive: usually a login or error page; check the URL"
    assert _failed(d, "login") == f"{page} tar.gz {login}"
    assert _failed(d, "bigtar") == f"{page} tar {login}"
    assert _failed(d, "bigtgz") == f"{page} tar.gz {login}"
    assert _failed(d, "disposed") == f"{page} zip {login}"
    assert _failed(d, "named") == f"{page} tar.gz {login}"
    assert _failed(d, "json") == (
        'the server sent a JSON document (\'{"error": "token expired", "status": 401}\'), '
        "not a zip archive: usually an error message; check the URL"
    )
    assert _failed(d, "text") == (
        "the server sent a text file ('Access denied'), not a 7z archive: "
        "usually an error message; check the URL"
    )
    assert (
        _failed(d, "gzpage")
        == f"the server sent gzip data that decompresses to {TITLE}, not a tar.gz {login}"
    )
    assert _failed(d, "empty") == "the server sent an empty file, not a zip archive; check the URL"
    assert _failed(d, "forced") == f"extract: true, but the download is {TITLE}, not an {login}"
    assert not list((d.work / "staging").iterdir())


def test_what_promises_nothing_is_delivered(fault_server, make_daemon):
    d = make_daemon()
    fault_server.add("/portal/download", LOGIN)  # HTTP 200, a page, no suffix
    fault_server.add("/notes.txt.gz", b"decompressed on the way\n")
    fault_server.add("/empty/x.tar", b"")
    fault_server.add("/zeros/x.tar", bytes(10240))  # GNU tar's empty archive
    fault_server.add("/real/x.zip", tar_bytes({"a.txt": b"a\n"}, compression="gz"))
    d.drop("page", fault_server.url("/portal/download"))
    d.drop("gz", fault_server.url("/notes.txt.gz"))
    d.drop("empty", fault_server.url("/empty/x.tar"))
    d.drop("zeros", fault_server.url("/zeros/x.tar"))
    d.drop("real", fault_server.url("/real/x.zip"))  # a tar.gz under a zip's name: its bytes
    d.drop("off", _job(fault_server.url("/empty/x.tar"), extract=False))
    sc = _ok(d.wait_status("page"))
    assert sc["files"] == ["download"] and sc["archive"]["format"] == "file"
    assert (d.outbox / "page" / "download").read_bytes() == LOGIN
    sc = _ok(d.wait_status("gz"))
    assert sc["files"] == ["notes.txt.gz"] and sc["archive"]["format"] == "file"
    for job in ("empty", "zeros"):
        sc = _ok(d.wait_status(job))
        assert sc["files"] == [] and sc["archive"]["format"] == "tar", sc
        assert (d.outbox / job).is_dir() and not list((d.outbox / job).iterdir())
    sc = _ok(d.wait_status("real"))
    assert sc["files"] == ["a.txt"] and sc["archive"]["format"] == "tar.gz"
    sc = _ok(d.wait_status("off"))
    assert sc["files"] == ["x.tar"] and sc["archive"]["format"] == "file"
