"""Peer list: validation, atomic persistence, and C-ECHO against a real pynetdicom SCP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from appliance.config import Config
from appliance.dicom.peers import DicomError, Peer, echo, load_peers, peers_file, save_peers
from appliance.errors import ConfigError


@pytest.fixture
def scp() -> Iterator[int]:
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_ECHO, lambda _e: 0)]
    )
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def test_round_trip(tmp_path: Path) -> None:
    config = Config(state_dir=tmp_path)
    assert load_peers(config) == []
    peers = [Peer("PACS", "10.0.0.5", 104, "main PACS"), Peer("CT1", "ct-1.clinic.lan", 11112)]
    save_peers(config, peers)
    assert load_peers(config) == peers
    assert peers_file(config).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("ae", "host", "port"),
    [
        ("", "h", 104),
        ("A" * 17, "h", 104),
        ("BAD\\AE", "h", 104),
        ("OK", "bad host", 104),
        ("OK", "h", 0),
        ("OK", "h", 70000),
    ],
)
def test_invalid_peer_refused(ae: str, host: str, port: int) -> None:
    with pytest.raises(ConfigError, match="Give an AE title"):
        Peer(ae, host, port)


def test_duplicate_titles_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="more than once"):
        save_peers(Config(state_dir=tmp_path), [Peer("A", "h", 1), Peer("A", "g", 2)])


def test_malformed_file_says_what_to_do(tmp_path: Path) -> None:
    config = Config(state_dir=tmp_path)
    peers_file(config).parent.mkdir(parents=True)
    peers_file(config).write_text("{not json")
    with pytest.raises(ConfigError, match="Enter the peers again"):
        load_peers(config)


def test_echo_real_scp(scp: int) -> None:
    echo(Peer("PACS", "127.0.0.1", scp))


def test_echo_wrong_port_explains(scp: int) -> None:
    closed = scp + 1 if scp < 65535 else scp - 1
    with pytest.raises(DicomError, match="did not answer|rejected"):
        echo(Peer("PACS", "127.0.0.1", closed), timeout=1.0)
