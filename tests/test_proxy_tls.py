"""download.proxy (CONNECT for https, forwarding for http; block_networks on the target),
download.ca_bundle, and TLS failures named by class (code tls, not retried), against
real local TLS servers with certificates made here."""

from __future__ import annotations

import dataclasses
import ipaddress
import ssl
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

from certs import Authority, self_signed  # noqa: E402
from dropfetch.config import ConfigError, DownloadConfig, config_from_mapping  # noqa: E402
from dropfetch.download import Downloader  # noqa: E402
from dropfetch.errors import BlockedAddressError, NetworkError, TlsError  # noqa: E402
from faultserver import FaultServer  # noqa: E402
from proxyserver import Proxy  # noqa: E402

OPEN = DownloadConfig(block_networks=(), timeout_connect=10, timeout_read=10)
PROXY_SECRET = "pr0xy-PW-31d"  # noqa: S105 - the string the test looks for


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path)


def _fetch(config: DownloadConfig, url: str, tmp_path: Path) -> bytes:
    with Downloader(config) as d:
        return d.fetch(url, tmp_path / "f.part").path.read_bytes()


# --- proxy -------------------------------------------------------------------------------


def test_http_and_https_targets_go_through_the_proxy(ca: Authority, tmp_path: Path) -> None:
    leaf = ca.issue("leaf", "127.0.0.1")
    with (
        FaultServer() as plain,
        FaultServer(tls=leaf.server_context()) as secure,
        Proxy() as proxy,
    ):
        plain.add("/a.bin", b"plain body")
        secure.add("/b.bin", b"secure body")
        config = dataclasses.replace(
            OPEN, proxy=proxy.url(f"bob:{PROXY_SECRET}"), ca_bundle=ca.files.cert
        )
        assert _fetch(config, plain.url("/a.bin"), tmp_path) == b"plain body"
        (tmp_path / "f.part").unlink()
        assert _fetch(config, secure.url("/b.bin"), tmp_path) == b"secure body"
        passed = proxy.passed
        assert [(p.method, p.target) for p in passed] == [
            ("GET", plain.url("/a.bin")),
            ("CONNECT", f"127.0.0.1:{secure.port}"),
        ]
        assert all(
            p.proxy_authorization and p.proxy_authorization.startswith("Basic ") for p in passed
        )
        assert len(plain.requests) == len(secure.requests) == 1


def test_a_blocked_target_is_refused_before_the_proxy_is_asked(tmp_path: Path) -> None:
    with FaultServer() as target, Proxy() as proxy:
        target.add("/a.bin", b"x")
        # the proxy itself is on loopback too: its address is allowed, the target's not
        config = dataclasses.replace(
            OPEN, proxy=proxy.url(), block_networks=(ipaddress.ip_network("127.0.0.0/8"),)
        )
        with pytest.raises(BlockedAddressError) as info:
            _fetch(config, target.url("/a.bin"), tmp_path)
        assert info.value.code == "blocked_address"
        assert proxy.passed == [] and target.requests == []


def test_an_unreachable_proxy_is_a_network_error_without_its_password(tmp_path: Path) -> None:
    with Proxy() as proxy:
        url = proxy.url(f"bob:{PROXY_SECRET}")
    config = dataclasses.replace(OPEN, proxy=url, timeout_connect=5)
    with pytest.raises(NetworkError) as info:
        _fetch(config, "http://example.invalid/a.bin", tmp_path)
    assert "download.proxy" in info.value.message and PROXY_SECRET not in info.value.message


def test_proxy_config_key() -> None:
    cfg = config_from_mapping({"download": {"proxy": "http://u:p@proxy:3128"}})
    assert cfg.download.proxy == "http://u:p@proxy:3128"
    for bad in ("https://proxy:3128", "socks5://p:1", "proxy:3128", f"ftp://u:{PROXY_SECRET}@p"):
        with pytest.raises(ConfigError, match=r"key download\.proxy") as info:
            config_from_mapping({"download": {"proxy": bad}}, where="cfg.yaml")
        assert PROXY_SECRET not in str(info.value)


# --- ca_bundle and TLS classes ----------------------------------------------------------


def test_ca_bundle_config_key(tmp_path: Path, ca: Authority) -> None:
    cfg = config_from_mapping({"download": {"ca_bundle": str(ca.files.cert)}})
    assert cfg.download.ca_bundle == ca.files.cert
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    for bad, why in (
        (tmp_path / "missing.pem", "does not exist"),
        (tmp_path / "junk.pem", "no PEM"),
    ):
        with pytest.raises(ConfigError, match=why) as info:
            config_from_mapping({"download": {"ca_bundle": str(bad)}}, where="cfg.yaml")
        assert "cfg.yaml: key download.ca_bundle" in str(info.value) and str(bad) in str(info.value)


def _tls_failure(
    context: ssl.SSLContext, tmp_path: Path, config: DownloadConfig = OPEN
) -> TlsError:
    with FaultServer(tls=context) as srv:
        srv.add("/f.bin", b"x")
        with pytest.raises(TlsError) as info:
            _fetch(config, srv.url("/f.bin"), tmp_path)
    assert info.value.code == "tls" and not info.value.retryable
    return info.value


def test_internal_ca_fails_without_ca_bundle_and_succeeds_with_it(
    ca: Authority, tmp_path: Path
) -> None:
    leaf = ca.issue("leaf", "127.0.0.1")
    err = _tls_failure(leaf.server_context(), tmp_path)
    assert "unknown certificate authority" in err.message and "download.ca_bundle" in err.message
    with FaultServer(tls=leaf.server_context()) as srv:
        srv.add("/f.bin", b"internal")
        config = dataclasses.replace(OPEN, ca_bundle=ca.files.cert)
        assert _fetch(config, srv.url("/f.bin"), tmp_path) == b"internal"


def test_tls_failures_are_named(ca: Authority, tmp_path: Path) -> None:
    trusting = dataclasses.replace(OPEN, ca_bundle=ca.files.cert)
    cases = {
        "self-signed": self_signed(tmp_path, "127.0.0.1"),
        "expired": ca.issue("old", "127.0.0.1", expired=True),
        "name mismatch": ca.issue("other", "files.example.org"),
    }
    for words, issued in cases.items():
        err = _tls_failure(issued.server_context(), tmp_path, trusting)
        assert words in err.message, (words, err.message)


def test_an_old_protocol_is_named(ca: Authority, tmp_path: Path) -> None:
    leaf = ca.issue("leaf", "127.0.0.1")
    try:
        context = leaf.server_context(tls10_only=True)
    except ssl.SSLError as exc:
        pytest.skip(f"the local OpenSSL cannot serve TLS 1.0: {exc}")
    err = _tls_failure(context, tmp_path, dataclasses.replace(OPEN, ca_bundle=ca.files.cert))
    assert "protocol version" in err.message, err.message


def test_check_config_does_not_print_the_proxy_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dropfetch.cli import main

    path = tmp_path / "cfg.yaml"
    path.write_text(f"download:\n  proxy: http://bob:{PROXY_SECRET}@proxy.example:3128\n")
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "proxy.example:3128" in out and PROXY_SECRET not in out
