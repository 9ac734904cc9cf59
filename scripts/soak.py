"""scripts/soak: the long fault soak against a server of its own; prints one table."""

import argparse
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import soak  # noqa: E402
from tests.conftest import start_server  # noqa: E402


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that `finally` stops the server
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--fault-clients", type=int, default=6)
    ap.add_argument("--healthy-clients", type=int, default=4)
    args = ap.parse_args()
    srv = start_server(Path(tempfile.mkdtemp(prefix="gym-supervisor-soak-")), *soak.SERVER_FLAGS)
    try:
        report = soak.run(srv.url, srv.proc.pid, args.seconds, args.fault_clients, args.healthy_clients)
    finally:
        srv.stop()
    print(report.table())
    for line in report.unexpected:
        print("unexpected:", line)
    return 1 if report.unexpected or report.leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
