"""A short fault soak (about 20 s): see tests/soak.py; scripts/soak runs the long one."""

from pathlib import Path

import pytest

from tests import soak
from tests.conftest import start_server

pytestmark = pytest.mark.timeout(180)


def test_short_fault_soak(tmp_path: Path) -> None:
    srv = start_server(tmp_path, *soak.SERVER_FLAGS)
    try:
        # a healthy step gets 15 s here: the suite may share the machine with other work
        report = soak.run(srv.url, srv.proc.pid, seconds=20, fault_clients=3, healthy_clients=2, healthy_timeout=15)
    finally:
        srv.stop()
    print(report.table())
    assert report.unexpected == [], "\n".join(report.unexpected)
    assert report.leftovers == []
    assert {kind for kind, _, _ in report.counts} >= set(soak.KINDS)  # every fault kind ran
    assert report.fds[1] <= report.fds[0] + soak.FD_SLACK
    assert report.rss_mb[1] <= report.rss_mb[0] + 40
