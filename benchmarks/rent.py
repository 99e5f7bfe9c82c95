"""How long ``rent_nodes`` takes for N nodes against the loopback fake Vast.ai API.

    python benchmarks/rent.py [--nodes 10] [--rounds 5] [--min-interval 0.2] [--taken 3]

Three runs, each on a fresh fake server with 3N offers (``--taken`` of the cheapest vanish between
search and create, so they are skipped):

* ``no 429``          the API answers every request at once;
* ``rate limited``    like the real API, a request to an endpoint sooner than ``--min-interval``
                      after the previous one is refused with 429 *without* ``Retry-After``; the
                      client's urllib3 back-off (``VAST_RETRY_BACKOFF``, default 0.5) does the wait;
* ``Retry-After``     three creates are refused with 429 and ``Retry-After: 1``.

The median wall time of ``--rounds`` rounds is printed per run, with the requests the server saw.
The loopback server costs next to nothing, so the figures are the client's own overhead plus the
waits the 429s impose; the sibling project slept 5 s per offer (50 s for 10 nodes).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.vastserver import FakeVast, make_offer  # noqa: E402

from distribute import settings, vast  # noqa: E402

KEY = "benchmark-key-0000"


def one_round(nodes: int, taken: int, min_interval: float, retry_after: bool) -> tuple[float, dict]:
    offers = [make_offer(i, round(0.05 + i / 100, 4)) for i in range(1, 3 * nodes + 1)]
    with FakeVast(api_key=KEY, offers=offers, min_interval_s=min_interval) as fake:
        os.environ.update(VAST_API_URL=fake.url, VAST_API_KEY=KEY)
        fake.take_meanwhile(*range(1, taken + 1))
        if retry_after:
            fake.fail("PUT", "/asks/", 429, times=3, retry_after=1)
        env = vast.node_env("git@example.com:me/jobs.git", "myjobs:run", self_destruct=True)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", vast.VastWarning)
            got = vast.rent_nodes(10.0, nodes, "me/distribute-worker:1", env=env)
        took = time.perf_counter() - start
        assert len(got) == nodes, f"rented {len(got)} of {nodes}"
        calls = fake.requests()
        return took, {"requests": len(calls), "creates": len(fake.requests("PUT")),
                      "429s": sum(c.status == 429 for c in calls)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--nodes", type=int, default=10, help="nodes to rent (10)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per run; median shown (5)")
    parser.add_argument("--min-interval", type=float, default=0.2, metavar="S",
                        help="rate limit of the 'rate limited' run, seconds per endpoint (0.2)")
    parser.add_argument("--taken", type=int, default=3,
                        help="cheapest offers that vanish between search and create (3)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # no stray .env with a real key
        settings.use_env_file(None)
        print(f"rent_nodes for {args.nodes} nodes ({args.taken} offers taken meanwhile), "
              f"median of {args.rounds} rounds, VAST_RETRY_BACKOFF="
              f"{os.environ.get('VAST_RETRY_BACKOFF', '0.5 (default)')}")
        print(f"{'run':<14} {'seconds':>8} {'requests':>9} {'creates':>8} {'429s':>5}")
        for name, interval, retry_after in (("no 429", 0.0, False),
                                            ("rate limited", args.min_interval, False),
                                            ("Retry-After", 0.0, True)):
            results = [one_round(args.nodes, args.taken, interval, retry_after)
                       for _ in range(args.rounds)]
            median = statistics.median(t for t, _ in results)
            stats = results[len(results) // 2][1]
            print(f"{name:<14} {median:>8.3f} {stats['requests']:>9} {stats['creates']:>8} "
                  f"{stats['429s']:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
